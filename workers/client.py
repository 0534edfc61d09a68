"""Connecting to Temporal with the project's data converter (pydantic JSON, AES-GCM encrypted payloads)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from westworld.errors import NotConfigured, StackDown
from workers.codec import build_data_converter, load_keyring
from workers.settings import Settings


def stack_down(component: str, address: str) -> StackDown:
    """The one wording of "it does not answer", for every command (the CLI's error handler uses it too)."""
    return StackDown(f"cannot reach {component} at {address}: is the stack up? run `westworld up`")


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client whose payloads are encrypted with the key ring in the data directory."""
    key_file = settings.resolved_codec_key_file
    if not key_file.exists():
        raise NotConfigured(f"no payload keys at {key_file}; run `westworld up` first (it creates them)")
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=build_data_converter(load_keyring(key_file), key_file=key_file),
            runtime=runtime,
        )
    except RuntimeError as err:
        raise stack_down("Temporal", settings.temporal_address) from err
