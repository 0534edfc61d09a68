"""What every `westworld` sub-command shares: the data-dir option, settings, and the error exit.

Exit codes (README, "Exit codes"), the same for every command:

- 0 ``EXIT_OK``: done; for a check, nothing wrong found.
- 1 ``EXIT_FAILED``: refused or failed: a refused vote or request, a bad input file, a workflow that failed, no
  data dir (``error: ...`` on stderr).
- 2 ``EXIT_USAGE``: the command line itself is wrong: unknown option, missing argument, a value of the wrong form
  (typer's own code).
- 3 ``EXIT_UNREACHABLE``: the stack or a service it needs does not answer (Temporal, the chain): run `westworld up`.
- 4 ``EXIT_NO``: a check answered no: `agent act` denied by the capability check or for want of peer signatures;
  `audit verify` / `audit show` found the log changed.

With ``--json`` a read command prints one JSON document on stdout (amounts in wei as decimal strings); errors
still go to stderr with the same codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import typer
from temporalio.service import RPCError, RPCStatusCode
from typer.core import TyperGroup

from westworld.errors import NotConfigured, SettingsError, StackDown, WestworldError
from workers.client import stack_down
from workers.settings import Settings, load_settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Override WESTWORLD_DATA_DIR.")]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO = 4


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


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` in red on stderr; raise the returned exit (``EXIT_FAILED`` unless told)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def fail_for(err: WestworldError) -> typer.Exit:
    """The error exit of a typed refusal: ``EXIT_UNREACHABLE`` for a stack that does not answer, else
    ``EXIT_FAILED``."""
    return fail(err.message, EXIT_UNREACHABLE if isinstance(err, StackDown) else EXIT_FAILED)


class WestworldGroup(TyperGroup):
    """The root command. A stack that does not answer is, from any sub-command, one clear error and exit 3 (never
    a traceback): "cannot reach Temporal at ADDR: is the stack up? run `westworld up`" (or the chain, ...); so is
    any typed refusal (bad settings, a bad input file) that a command did not report itself."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except StackDown as err:
            raise fail(str(err), EXIT_UNREACHABLE) from err
        except NotConfigured as err:
            raise fail(str(err)) from err
        except WestworldError as err:  # typed refusals a command did not catch itself (bad settings, bad input)
            raise fail(err.message) from err
        except RPCError as err:
            if err.status != RPCStatusCode.UNAVAILABLE:
                raise
            raise fail(str(stack_down("Temporal", _configured("temporal_address"))), EXIT_UNREACHABLE) from err
        except aiohttp.ClientConnectorError as err:
            address = f"{err.host}:{err.port}"
            chain = urlsplit(_configured("chain_rpc_url"))
            name = "the chain" if address == f"{chain.hostname}:{chain.port}" else "a component of the stack"
            raise fail(str(stack_down(name, address)), EXIT_UNREACHABLE) from err


def _configured(field: str) -> str:
    try:
        return str(getattr(load_settings(), field))
    except SettingsError:  # the settings themselves are wrong: the address is whatever the command was given
        return "the configured address"
