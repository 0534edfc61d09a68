"""What every `westworld` sub-command shares: the data-dir option, settings, and the error exit.

Exit codes (README, "CLI"): 0 done; 1 refused or failed (bad file, refused vote, stack down, no data dir), with
``error: ...`` on stderr; 2 a usage error (unknown option, missing argument: typer's own), or a check that found
something wrong (`westworld audit verify`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.settings import Settings, load_settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override WESTWORLD_DATA_DIR.")]


def settings_for(data_dir: Path | None = None, *, create: bool = False) -> Settings:
    """The settings of a command, with ``--data-dir`` on top.

    Only `westworld up` makes a data dir (``create=True``). Every other command reads state that `up` made (the
    database, the payload keys, the deployed contracts), so a data dir that does not exist is refused here rather
    than silently replaced by a new, empty database or a new key.
    """
    s = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    return s if create else require_data_dir(s)


def require_data_dir(s: Settings) -> Settings:
    """``s`` if its data dir exists; otherwise the error exit (code 1) saying how to get one."""
    if not s.data_dir.is_dir():
        raise fail(f"no Westworld data dir at {s.data_dir}: run `westworld up` or pass --data-dir")
    return s


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in red on stderr; raise the returned exit (code 1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
