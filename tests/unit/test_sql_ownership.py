"""Each table is written by its one owner: the store ``activities/sql/schema.py`` names above it.

Another module may read a table (an export gathers what several stores hold) but never insert into, update or
delete from it; it calls the owner's method instead. Checked on the source: every ``insert``/``update``/``delete``
of a table imported from the schema, anywhere under ``activities/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sqlalchemy as sa

from activities.sql import schema

ROOT = Path(__file__).parents[2]
WRITES = {"insert", "update", "delete"}
OWNER = re.compile(r"^# --- owner: (activities/sql/\w+\.py)")
TABLE = re.compile(r"^(\w+) = sa\.Table\(")


def owners() -> dict[str, str]:
    """Table variable in the schema -> the owner module's path, from the schema's own notes."""
    found, owner = {}, ""
    for line in (ROOT / "activities" / "sql" / "schema.py").read_text().splitlines():
        if m := OWNER.match(line):
            owner = m.group(1)
        elif (m := TABLE.match(line)) and owner:
            found[m.group(1)] = owner
    return found


def tables_imported(tree: ast.Module, seen: frozenset[str] = frozenset()) -> dict[str, str]:
    """Local name -> schema table variable, for tables imported from the schema or re-imported from a store."""
    local: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("activities.sql.") \
                or node.module in seen:  # modules that import each other (database <-> migrate)
            continue
        if node.module == "activities.sql.schema":
            names = {alias.name: alias.name for alias in node.names}
        else:  # a table a store module imported, taken from that module
            store = ROOT / Path(*str(node.module).split(".")).with_suffix(".py")
            names = tables_imported(ast.parse(store.read_text()), seen | {str(node.module)}) if store.exists() else {}
            names = {alias.name: names[alias.name] for alias in node.names if alias.name in names}
        local.update({alias.asname or alias.name: names[alias.name] for alias in node.names if alias.name in names})
    return local


def writes(path: Path) -> list[tuple[str, int]]:
    """(schema table variable, line) of every write of a schema table in the module at ``path``."""
    tree = ast.parse(path.read_text())
    local = tables_imported(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in WRITES and isinstance(func.value, ast.Name) \
                and func.value.id in local:  # table.insert()
            found.append((local[func.value.id], node.lineno))
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in WRITES and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in local:
            found.append((local[node.args[0].id], node.lineno))  # sa.insert(table)
    return found


def test_every_table_of_the_metadata_names_its_owner() -> None:
    tables = {name for name, value in vars(schema).items() if isinstance(value, sa.Table)}
    assert set(owners()) == tables
    assert all((ROOT / path).exists() for path in owners().values())


def test_only_the_owner_writes_a_table() -> None:
    own = owners()
    wrong = [f"{path.relative_to(ROOT)}:{line} writes {table} (owner: {own[table]})"
             for path in sorted((ROOT / "activities").rglob("*.py")) if "migrations" not in path.parts
             for table, line in writes(path) if str(path.relative_to(ROOT)) != own.get(table)]
    assert wrong == []


def test_the_check_sees_a_write_by_another_module(tmp_path: Path) -> None:
    """The check can fail: a module that updates another store's table is caught, in either spelling."""
    module = tmp_path / "intruder.py"
    module.write_text("from activities.sql.schema import votes as v\nimport sqlalchemy as sa\n"
                      "async def f(conn):\n    await conn.execute(sa.update(v))\n    await conn.execute(v.delete())\n")
    assert writes(module) == [("votes", 4), ("votes", 5)]
    module.write_text("from activities.sql.capability_store import nodes\n"
                      "async def f(conn):\n    await conn.execute(nodes.insert())\n")
    assert writes(module) == [("cap_nodes", 3)]  # taken through the owner's module: still a write of its table
