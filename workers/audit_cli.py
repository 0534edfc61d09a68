"""`westworld audit verify | show`."""

from __future__ import annotations

from collections.abc import Callable

from activities.store import AuditLog, Database
from workers.settings import Settings

Echo = Callable[[str], None]


async def verify(s: Settings, echo: Echo) -> bool:
    db = Database(s.resolved_database_url)
    await db.init()
    try:
        report = await AuditLog(db).verify()
    finally:
        await db.close()
    if report.ok:
        echo(f"audit log OK: {report.tree_size} entries, root {report.root}")
        return True
    echo(f"audit log FAILED verification: {len(report.problems)} problem(s)")
    for p in report.problems:
        echo(f"  entry {p.seq}: {p.kind}: {p.message}")
    return False


async def show(s: Settings, last: int, echo: Echo) -> None:
    db = Database(s.resolved_database_url)
    await db.init()
    try:
        log = AuditLog(db)
        entries = await log.latest(last)
        for e in entries:
            echo(f"#{e.seq} {e.created_at:%Y-%m-%d %H:%M:%S} {e.kind:18} {e.subject}  leaf {e.leaf_hash[:16]}…")
        echo(f"root {await log.root()}")
    finally:
        await db.close()
