"""`westworld shelter keygen | store | request | emergency | pending | submit-share | open | rotate`."""

from __future__ import annotations

import typer

shelter_app = typer.Typer(help="The shelter: encrypted replicated documents and guardian key shares.",
                          no_args_is_help=True)
