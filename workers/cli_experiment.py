"""`westworld experiment validate | start | status | abort`."""

from __future__ import annotations

import typer

experiment_app = typer.Typer(help="Experiments: sandbox under chaos, judged, voted on, rolled out.",
                             no_args_is_help=True)
