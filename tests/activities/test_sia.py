"""The renterd adapter. No renterd runs on these machines (nothing installable ships it; Debian's `sia` 1.3 is the
2017 daemon with a different API), so the round trip runs only when WESTWORLD_TEST_SIA_URL names a real renterd
(and WESTWORLD_TEST_SIA_PASSWORD its API password). What is checked here without one: a configured but absent
renterd is a transient failure, and a worker without `sia_url` records Sia as not configured (test_shelter_docs)."""

from __future__ import annotations

import os
import secrets

import pytest

from activities.storage.sia import SiaClient
from westworld.errors import SiaUnavailable
from workers.stack.processes import free_port

SIA_URL = os.environ.get("WESTWORLD_TEST_SIA_URL", "")
NO_RENTERD = ("no renterd runs here: nothing installable ships Sia's renterd on these machines (Debian's `sia` 1.3 is "
              "the 2017 siad); set WESTWORLD_TEST_SIA_URL to a real renterd to run this")


@pytest.mark.skipif(not SIA_URL, reason=NO_RENTERD)
async def test_put_get_delete_against_a_real_renterd() -> None:
    client = SiaClient(SIA_URL, os.environ.get("WESTWORLD_TEST_SIA_PASSWORD", ""))
    try:
        data = secrets.token_bytes(4096)
        key = await client.put(f"westworld/test/{secrets.token_hex(8)}", data)
        assert await client.get(key) == data
        await client.delete(key)
        assert await client.get(key) is None
    finally:
        await client.aclose()


async def test_an_absent_renterd_is_transient_and_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = SiaClient(url, "pw")
    try:
        with pytest.raises(SiaUnavailable, match=f"renterd at {url} did not answer PUT westworld/x"):
            await client.put("westworld/x", b"data")
        with pytest.raises(SiaUnavailable, match="did not answer GET"):
            await client.get("westworld/x")
    finally:
        await client.aclose()
