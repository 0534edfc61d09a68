"""Output for scripts and people: the ``--json`` option of every read command, and token amounts in tokens.

``--json`` prints one JSON document on stdout and nothing else there (errors still go to stderr with the exit
codes of workers/cli/common.py). Models print in their JSON form, so amounts in wei are decimal strings (exact
in any JSON reader; westworld/amounts.py) and times are ISO 8601.

For people, amounts print in whole tokens with the token's symbol, exactly (``40,000 of 1,000,000 WEST``). The
symbol and decimals are the deployment's (``westworld up`` records the token it deployed), else the
WestworldToken's own (WEST, 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic_core import to_json

from westworld.amounts import DEFAULT_DECIMALS, format_tokens
from westworld.chain import TOKEN_SYMBOL
from westworld.errors import WestworldError
from workers.settings import Settings

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts).")]


def emit_json(value: Any) -> None:
    """Print ``value`` (models, lists and dicts of them, plain values) as one JSON document on stdout."""
    typer.echo(to_json(value, indent=2).decode())


@dataclass(frozen=True)
class TokenUnits:
    symbol: str = TOKEN_SYMBOL
    decimals: int = DEFAULT_DECIMALS

    def __call__(self, wei: int) -> str:
        return format_tokens(wei, self.symbol, self.decimals)

    def plain(self, wei: int) -> str:
        """Without the symbol (``40,000``), for ``40,000 of 1,000,000 WEST``."""
        return format_tokens(wei, "", self.decimals)


def token_units(s: Settings) -> TokenUnits:
    """The deployed token's symbol and decimals; the WestworldToken's defaults without a readable deployment."""
    from activities.chain import load_deployment

    try:
        dep = load_deployment(s.contracts_file, s.chain_rpc_url)
    except (WestworldError, OSError, ValueError):
        return TokenUnits()
    return TokenUnits(dep.token_symbol, dep.token_decimals)
