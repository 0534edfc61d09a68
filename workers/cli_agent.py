"""`westworld agent mint | attenuate | inspect | act` and `westworld halt status`."""

from __future__ import annotations

import typer

agent_app = typer.Typer(help="Capability tokens (macaroons) for automated agents, and their actions.",
                        no_args_is_help=True)
halt_app = typer.Typer(help="The network halt: status, and guardians' resume.", no_args_is_help=True)
