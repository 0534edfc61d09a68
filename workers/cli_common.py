"""What every `westworld` sub-command shares: the data-dir option, settings, and the error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.settings import Settings, load_settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override WESTWORLD_DATA_DIR.")]


def settings_for(data_dir: Path | None = None) -> Settings:
    return load_settings(**({"data_dir": data_dir} if data_dir else {}))


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in red on stderr; raise the returned exit (code 1)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
