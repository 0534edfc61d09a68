"""What every `westworld` sub-command shares: the data-dir option, settings, and the error exit.

Exit codes (README, "CLI"): 0 done; 1 refused or failed (bad file, refused vote, stack down, no data dir), with
``error: ...`` on stderr; 2 a usage error (unknown option, missing argument: typer's own), or a check that found
something wrong (`westworld audit verify`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import typer
from temporalio.service import RPCError, RPCStatusCode
from typer.core import TyperGroup

from westworld.errors import NotConfigured, SettingsError, WestworldError
from workers.client import stack_down
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


class WestworldGroup(TyperGroup):
    """The root command. A stack that does not answer is, from any sub-command, one clear error and exit 1 (never
    a traceback): "cannot reach Temporal at ADDR: is the stack up? run `westworld up`" (or the chain, ...); so is
    any typed refusal (bad settings, a bad input file) that a command did not report itself."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except NotConfigured as err:
            raise fail(str(err)) from err
        except WestworldError as err:  # typed refusals a command did not catch itself (bad settings, bad input)
            raise fail(err.message) from err
        except RPCError as err:
            if err.status != RPCStatusCode.UNAVAILABLE:
                raise
            raise fail(str(stack_down("Temporal", _configured("temporal_address")))) from err
        except aiohttp.ClientConnectorError as err:
            address = f"{err.host}:{err.port}"
            chain = urlsplit(_configured("chain_rpc_url"))
            name = "the chain" if address == f"{chain.hostname}:{chain.port}" else "a component of the stack"
            raise fail(str(stack_down(name, address))) from err


def _configured(field: str) -> str:
    try:
        return str(getattr(load_settings(), field))
    except SettingsError:  # the settings themselves are wrong: the address is whatever the command was given
        return "the configured address"
