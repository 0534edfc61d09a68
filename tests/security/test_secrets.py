"""Hostile tests: the codec server hands out no secrets, and an undecryptable payload fails clearly.

The codec server runs as its own process (``python -m workers.codec_server``, what ``westworld up`` starts) on a
loopback port, over the data directory of a real worker on a real Temporal server, so the payloads it is asked
to decode are payloads of real histories. One class per rule:

- a codec server serves no payload without its token, and does not start without one;
- ``/encode`` needs the token too;
- only its own loopback Host and the Temporal UI's Origin are answered (DNS rebinding, other sites);
- a payload that cannot be decrypted fails the workflow (or the update, or is dropped as a signal) with a typed
  error naming its key id, never a workflow task retried forever; plaintext from the UI's start form still works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec
from temporalio.exceptions import ApplicationError

from tests.workflows.conftest import Harness, eventually
from tests.workflows.test_dao_vote import proposal, sign, start, vote
from westworld.errors import PAYLOAD_UNDECRYPTABLE
from westworld.keys import vote_id
from westworld.vote import DaoVoteInput, DaoVoteResult, VoteState
from workers.codec import KEY_ID_METADATA, EncryptionCodec, KeyRing, build_data_converter, create_keyring, load_keyring
from workers.codec_server import ensure_token, token_path, ui_endpoint
from workers.settings import Settings
from workers.stack import processes
from workers.stack.supervisor import codec_ui_hint, components
from workflows.dao_vote import DaoVoteWorkflow

UI_ORIGIN = "http://127.0.0.1:8233"


@dataclasses.dataclass
class CodecServer:
    url: str
    port: int
    token: str


def codec_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, codec_server_port=processes.free_port(), codec_cors_origin=UI_ORIGIN)


def spawn(s: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = {"WESTWORLD_DATA_DIR": str(s.data_dir), "WESTWORLD_CODEC_SERVER_PORT": str(s.codec_server_port),
           "WESTWORLD_CODEC_CORS_ORIGIN": s.codec_cors_origin}
    return processes.spawn([sys.executable, "-m", "workers.codec_server", *args], s.logs_dir / "codec.log", env)


@contextlib.contextmanager
def running(s: Settings, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(s, *args)
    try:
        processes.wait_for_port(proc, s.codec_server_port, "codec server", s.logs_dir / "codec.log")
        yield proc
    finally:
        processes.stop(proc)


@contextlib.contextmanager
def codec_server_over(data_dir: Path) -> Iterator[CodecServer]:
    """The codec server process `up` starts: the token created as `up` does, then the server over that dir."""
    s = codec_settings(data_dir)
    if not s.resolved_codec_key_file.exists():
        create_keyring(s.resolved_codec_key_file)
    token, _ = ensure_token(s)
    with running(s):
        yield CodecServer(f"http://127.0.0.1:{s.codec_server_port}", s.codec_server_port, token)


@pytest.fixture
def server(harness: Harness) -> Iterator[CodecServer]:
    """A codec server over the harness worker's data dir: it holds the keys of the histories under test."""
    with codec_server_over(harness.settings.data_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def lone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodecServer]:
    """A codec server with its own key ring (for the property tests, which need a module-wide server)."""
    with codec_server_over(tmp_path_factory.mktemp("codec")) as srv:
        yield srv


def body(payloads: Sequence[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def started_input(client: Client, workflow_id: str) -> list[Payload]:
    """The start input of a workflow as stored in history (encrypted)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(history.events[0].workflow_execution_started_event_attributes.input.payloads)


PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"vote": "yes"}')


class TestCodecServerNeedsItsToken:
    """Whoever reaches the port but lacks the token decodes nothing; the server does not start without one."""

    async def test_a_history_payload_is_decoded_only_with_the_token(
        self, harness: Harness, server: CodecServer, temporal_client: Client,
    ) -> None:
        secret = f"capability-token-{uuid.uuid4().hex}"
        handle = await start(harness, DaoVoteInput(proposal=proposal(title=secret), quorum=0.5))
        payloads = await started_input(temporal_client, handle.id)  # what anyone reaching Temporal reads
        assert secret.encode() not in b"".join(p.data for p in payloads)
        async with httpx.AsyncClient(base_url=server.url) as http:
            anonymous = await http.post("/decode", content=body(payloads))
            wrong = await http.post("/decode", content=body(payloads), headers={"Authorization": "Bearer guess"})
            wrong_path = await http.post(f"/{server.token[:-1]}x/decode", content=body(payloads))
            bearer = await http.post("/decode", content=body(payloads),
                                     headers={"Authorization": f"Bearer {server.token}"})
            capability = await http.post(f"/{server.token}/decode", content=body(payloads))
        for refused in (anonymous, wrong, wrong_path):
            assert refused.status_code == 401, refused.text
            assert secret not in refused.text
            assert "codec token" in refused.json()["message"]
        for allowed in (bearer, capability):
            assert allowed.status_code == 200
            decoded = json_format.Parse(allowed.text, Payloads())
            assert secret.encode() in decoded.payloads[0].data
        await handle.terminate("test done")

    def test_no_token_no_server(self, tmp_path: Path) -> None:
        s = codec_settings(tmp_path)
        create_keyring(s.resolved_codec_key_file)
        proc = spawn(s)
        assert proc.wait(timeout=30) != 0
        log = (s.logs_dir / "codec.log").read_text()
        assert "no codec token" in log and str(token_path(s)) in log
        assert not processes.port_open(s.codec_server_port)
        with running(s, "--open-for-tests"):  # the explicit, tests-only way to run open
            assert httpx.get(f"http://127.0.0.1:{s.codec_server_port}/healthz").status_code == 200

    def test_a_token_others_can_read_is_refused(self, tmp_path: Path) -> None:
        s = codec_settings(tmp_path)
        create_keyring(s.resolved_codec_key_file)
        ensure_token(s)
        token_path(s).chmod(0o640)
        proc = spawn(s)
        assert proc.wait(timeout=30) != 0
        assert "chmod 600" in (s.logs_dir / "codec.log").read_text()

    def test_up_creates_a_private_token_and_hands_it_to_the_browser_not_to_the_ui_server(
        self, tmp_path: Path,
    ) -> None:
        s = codec_settings(tmp_path)
        token, created = ensure_token(s)
        assert created and len(token) >= 40
        assert stat.S_IMODE(token_path(s).stat().st_mode) == 0o600
        assert ensure_token(s) == (token, False)  # never rotated behind a browser's back
        hint = codec_ui_hint(s, token)
        assert ui_endpoint(s, token) in hint and "Use my browser setting" in hint
        # The Temporal UI serves its --ui-codec-endpoint to anyone at /api/v1/settings: the token is not put there.
        temporal = next(c for c in components(s) if c.name == "temporal")
        args = temporal.command(s)
        assert "--ui-codec-endpoint" not in args and not any(token in a for a in args)


class TestEncodeNeedsTheToken:
    """`/encode` (what the UI's start form calls once it knows the endpoint) is not offered without the token."""

    def test_encode_without_the_token_is_refused(self, lone_server: CodecServer) -> None:
        with httpx.Client(base_url=lone_server.url) as http:
            anonymous = http.post("/encode", content=body([PLAIN]))
            wrong = http.post("/wrong-token/encode", content=body([PLAIN]))
            by_path = http.post(f"/{lone_server.token}/encode", content=body([PLAIN]),
                                headers={"Origin": UI_ORIGIN})
        assert (anonymous.status_code, wrong.status_code) == (401, 401)
        assert "json/plain" not in anonymous.text
        assert by_path.status_code == 200
        [sealed] = json_format.Parse(by_path.text, Payloads()).payloads
        assert sealed.metadata["encoding"] == b"binary/encrypted" and b"yes" not in sealed.data
        assert by_path.headers["access-control-allow-origin"] == UI_ORIGIN

    @settings(max_examples=40, deadline=None)
    @given(guess=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
                         min_size=1, max_size=60))
    def test_no_guessed_token_encodes(self, lone_server: CodecServer, guess: str) -> None:
        if guess == lone_server.token:
            return
        with httpx.Client(base_url=lone_server.url) as http:
            by_path = http.post(f"/{guess}/encode", content=body([PLAIN]))
            by_bearer = http.post("/encode", content=body([PLAIN]), headers={"Authorization": f"Bearer {guess}"})
        assert by_path.status_code in {401, 404}  # 404: not even a token-shaped path segment (e.g. "{")
        assert by_bearer.status_code == 401
        assert "payloads" not in by_path.text + by_bearer.text


class TestOnlyItsOwnHostAndTheUiOrigin:
    """A DNS-rebound page (its own name in Host) or another site (its own Origin) is refused, token or not."""

    def test_loopback_host_and_ui_origin_are_answered(self, lone_server: CodecServer) -> None:
        auth = {"Authorization": f"Bearer {lone_server.token}"}
        for host in (f"127.0.0.1:{lone_server.port}", f"localhost:{lone_server.port}"):
            for origin in (UI_ORIGIN, "http://localhost:8233"):
                answer = httpx.post(f"{lone_server.url}/decode", content=body([PLAIN]),
                                    headers={**auth, "Host": host, "Origin": origin})
                assert answer.status_code == 200, (host, origin, answer.text)
                assert answer.headers["access-control-allow-origin"] == origin

    @settings(max_examples=40, deadline=None)
    @given(host=st.one_of(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){0,2}(:[0-9]{1,5})?", fullmatch=True),
        st.sampled_from(["127.0.0.1", "localhost", "127.0.0.1:8234", "0.0.0.0:{port}", "[::1]:{port}",
                         "127.0.0.2:{port}", "rebind.attacker.example:{port}", "localhost.:{port}"]),
    ))
    def test_any_other_host_is_misdirected(self, lone_server: CodecServer, host: str) -> None:
        host = host.format(port=lone_server.port)
        if host in {f"127.0.0.1:{lone_server.port}", f"localhost:{lone_server.port}"}:
            return
        auth = {"Authorization": f"Bearer {lone_server.token}"}
        with httpx.Client(base_url=lone_server.url, headers={"Host": host}) as http:
            decode = http.post("/decode", content=body([PLAIN]), headers=auth)
            by_path = http.post(f"/{lone_server.token}/decode", content=body([PLAIN]))
            preflight = http.options("/decode", headers={"Origin": UI_ORIGIN,
                                                         "Access-Control-Request-Method": "POST"})
            health = http.get("/healthz")
        for answer in (decode, by_path, preflight, health):
            assert answer.status_code == 421, (host, answer.status_code)
            assert "DNS-rebinding" in answer.json()["message"]
            assert "access-control-allow-origin" not in answer.headers

    @settings(max_examples=40, deadline=None)
    @given(origin=st.one_of(
        st.from_regex(r"https?://[a-z][a-z0-9.-]{0,30}(:[0-9]{1,5})?", fullmatch=True),
        st.sampled_from(["null", "http://127.0.0.1:9999", "http://localhost", "https://127.0.0.1:8233",
                         "http://127.0.0.1:8233.evil.example", "file://"]),
    ))
    def test_any_other_origin_is_forbidden(self, lone_server: CodecServer, origin: str) -> None:
        if origin in {UI_ORIGIN, "http://localhost:8233"}:
            return
        with httpx.Client(base_url=lone_server.url, headers={"Origin": origin}) as http:
            decode = http.post(f"/{lone_server.token}/decode", content=body([PLAIN]))
            preflight = http.options(f"/{lone_server.token}/decode",
                                     headers={"Access-Control-Request-Method": "POST"})
        for answer in (decode, preflight):
            assert answer.status_code == 403, (origin, answer.status_code)
            assert "may not call the codec server" in answer.json()["message"]
            assert "access-control-allow-origin" not in answer.headers


class Tampering(PayloadCodec):
    """Encrypts with the right key, then flips one byte of the ciphertext (a tampered history payload)."""

    def __init__(self, ring: KeyRing) -> None:
        self._codec = EncryptionCodec(ring)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        sealed = await self._codec.encode(payloads)
        for p in sealed:
            p.data = p.data[:-1] + bytes([p.data[-1] ^ 0x01])
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self._codec.decode(payloads)


async def workflow_task_failures(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)


class TestUndecryptablePayloadsFailClearly:
    """An unknown key id or a tampered payload fails what carries it, naming the key id; nothing spins forever."""

    async def start_with(self, harness: Harness, client: Client) -> WorkflowHandle[DaoVoteWorkflow, DaoVoteResult]:
        inp = DaoVoteInput(proposal=proposal(), quorum=0.5)
        return await client.start_workflow(DaoVoteWorkflow.run, inp, id=vote_id(inp.proposal.id),
                                           task_queue=harness.task_queue)

    async def failure_of(self, harness: Harness, handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult],
                         ) -> ApplicationError:
        with pytest.raises(WorkflowFailureError) as info:
            await harness.client.get_workflow_handle(handle.id, result_type=DaoVoteResult).result()
        cause = info.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == PAYLOAD_UNDECRYPTABLE and cause.non_retryable
        assert await workflow_task_failures(harness.client, handle.id) == 0  # failed at once, never retried
        return cause

    async def test_a_start_under_an_unknown_key_fails_the_workflow_naming_the_key(
        self, harness: Harness, temporal_address: str,
    ) -> None:
        foreign = KeyRing.generate()
        client = await Client.connect(temporal_address,
                                      data_converter=build_data_converter(foreign))
        cause = await self.failure_of(harness, await self.start_with(harness, client))
        assert foreign.active in cause.message and "not in the key ring" in cause.message

    async def test_a_tampered_start_fails_the_workflow_naming_the_key(
        self, harness: Harness, temporal_address: str,
    ) -> None:
        ring = load_keyring(harness.settings.resolved_codec_key_file)
        client = await Client.connect(
            temporal_address,
            data_converter=dataclasses.replace(pydantic_data_converter, payload_codec=Tampering(ring)))
        cause = await self.failure_of(harness, await self.start_with(harness, client))
        assert ring.active in cause.message and "failed authentication" in cause.message

    async def test_a_forged_update_is_rejected_and_the_vote_goes_on(
        self, harness: Harness, temporal_address: str,
    ) -> None:
        handle = await start(harness, DaoVoteInput(proposal=proposal(), quorum=0.5))
        foreign = await Client.connect(temporal_address,
                                       data_converter=build_data_converter(KeyRing.generate()))
        forged = foreign.get_workflow_handle(handle.id)
        ballot = await sign(handle, harness.voters[7], "for")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await forged.execute_update(DaoVoteWorkflow.cast_vote, ballot)
        cause = info.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == PAYLOAD_UNDECRYPTABLE
        assert "not in the key ring" in cause.message
        receipt = await vote(handle, harness.voters[7], "for")  # the same ballot, readable, is counted
        assert receipt.weight > 0
        assert await workflow_task_failures(harness.client, handle.id) == 0
        await handle.terminate("test done")

    async def test_a_forged_signal_cannot_wedge_a_running_workflow(
        self, harness: Harness, temporal_address: str,
    ) -> None:
        handle = await start(harness, DaoVoteInput(proposal=proposal(), quorum=0.5))
        foreign = await Client.connect(temporal_address,
                                       data_converter=build_data_converter(KeyRing.generate()))
        await foreign.get_workflow_handle(handle.id).signal("anything", {"junk": True})
        receipt = await vote(handle, harness.voters[8], "for")  # the workflow still takes work
        assert receipt.weight > 0
        assert await workflow_task_failures(harness.client, handle.id) == 0
        await handle.terminate("test done")

    async def test_plaintext_from_the_ui_start_form_still_works(
        self, harness: Harness, temporal_client: Client,
    ) -> None:
        inp = DaoVoteInput(proposal=proposal(), quorum=0.5)
        await temporal_client.start_workflow(  # a client without the codec: plain JSON, as the UI's form sends
            "DaoVoteWorkflow", inp, id=vote_id(inp.proposal.id), task_queue=harness.task_queue)
        [payload] = await started_input(temporal_client, vote_id(inp.proposal.id))
        assert payload.metadata["encoding"] == b"json/plain" and KEY_ID_METADATA not in payload.metadata
        handle = harness.client.get_workflow_handle(vote_id(inp.proposal.id))
        await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
        assert (await vote(handle, harness.voters[9], "for")).weight > 0
        await handle.terminate("test done")
