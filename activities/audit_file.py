"""Reading a copy of the audit log from an SQLite file, read-only, for an independent (offline) verifier.

The file is opened with ``mode=ro``: verifying never writes, never creates a database where there was none, and
every refusal names the file and why (missing, a directory, not a database, no audit log in it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from activities.sql.audit_log import stored_entry
from westworld.audit import StoredEntry
from westworld.errors import InvalidInput

QUERY = "SELECT seq, kind, subject, payload, leaf_hash, root_after, created_at FROM audit_entries ORDER BY seq"


def _rows(uri: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(QUERY))
    finally:
        conn.close()


def read_log_file(path: Path) -> list[StoredEntry]:
    """Every row of the log in ``path`` as stored text.

    Raises:
        InvalidInput: there is no file, it is not an SQLite database, or it holds no audit log.
    """
    if not path.exists():
        raise InvalidInput(f"no audit log at {path}: no such file")
    if not path.is_file():
        raise InvalidInput(f"no audit log at {path}: not a file (pass the database file, e.g. westworld.db)")
    uri = path.resolve().as_uri()
    try:
        rows = _rows(uri + "?mode=ro")
    except sqlite3.OperationalError as err:
        if "no such table" in str(err) or "no such column" in str(err):
            raise InvalidInput(f"no audit log at {path}: the database has no audit_entries table ({err})") from err
        try:
            rows = _rows(uri + "?immutable=1")  # a WAL copy whose -shm file cannot be created here
        except sqlite3.DatabaseError as again:
            raise InvalidInput(f"no audit log at {path}: cannot be read as an SQLite database ({again})") from again
    except sqlite3.DatabaseError as err:
        raise InvalidInput(f"no audit log at {path}: not an SQLite database ({err})") from err
    return [stored_entry(r) for r in rows]
