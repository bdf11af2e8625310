"""The Labeler under overload (issue 27), through real gRPC servers on
127.0.0.1:0 with the production interceptors, in front of the slow stand-in
model server (tests/support/slow_modelserver.py). Floods have a bounded
count of calls; nothing here asserts a duration.

- Transport hold (EXCESS_CALLS_HOLD): a flood on one connection
  is held by HTTP/2; Python never sees more calls than it can hold, none is
  refused or answered UNAVAILABLE.
- Cheapest refusal: with no slot and no room to wait, a call is refused
  before its request is parsed (garbage bytes get RESOURCE_EXHAUSTED then,
  INVALID_ARGUMENT otherwise), with the pushback trailer and counted.
- Deadline: a call whose deadline passes while it is worked on is stopped
  and counted.
- Clients: one with docs/clients.md's retry policy and one that retries at
  once share an overloaded Labeler.
"""

from __future__ import annotations

import asyncio
import collections
import json

import grpc
import pytest

from labeler import retry_policy
from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from tests.integration import test_labeler_pressure as pressure
from tests.integration.test_labeler_pressure import (
    LABEL,
    _flood,
    _pushback,
    _service_config_from_docs,
    _words,
)
from tests.support.labeler_support import wait_until

pytestmark = pytest.mark.timeout(300)

# The pressure tests' fixtures: a background event loop, and a slow model
# server with a Labeler in front of it.
loop = pressure.loop
make_stack = pressure.make_stack

NO_CACHE = config_pb2.PredictionCacheConfig(disabled=True)
REFUSE = config_pb2.OverloadConfig.EXCESS_CALLS_REFUSE


def test_one_connection_flood_is_held_by_the_transport(make_stack):
    stack = make_stack(
        delay_s=0.02,
        overload=config_pb2.OverloadConfig(
            max_classify_in_flight=2,
            max_classify_queued=2,
            max_predicts_per_target=4,
            excess_calls=config_pb2.OverloadConfig.EXCESS_CALLS_HOLD,
        ),
        prediction_cache=NO_CACHE,
    )
    outcomes = asyncio.run(_flood(stack.target, callers=120, timeout=60.0))
    codes = collections.Counter(code.name for code, _, _ in outcomes)
    # All held in the caller's transport until a stream freed, then served:
    # no refusal, no REFUSED_STREAM (UNAVAILABLE), no queue beyond the bounds.
    assert codes == {"OK": 120}, codes
    slots = stack.app.admission.slots
    assert slots.peak_running <= 2 and slots.peak_queued <= 2
    assert stack.app.admission.refused == 0
    for _, _, reply in outcomes:
        assert [s.label for s in reply.labels] == [LABEL]


async def _raw_calls(target: str, payloads: list[bytes], timeout: float) -> list[tuple]:
    """Classify with raw request bytes (a client that sends garbage)."""
    async with grpc.aio.insecure_channel(target) as channel:
        classify = channel.unary_unary(
            "/labeler.v1.Labeler/Classify",
            request_serializer=None,
            response_deserializer=labeler_pb2.ClassifyResponse.FromString,
        )

        async def one(payload: bytes) -> tuple:
            try:
                await classify(payload, timeout=timeout)
                return grpc.StatusCode.OK, ()
            except grpc.aio.AioRpcError as exc:
                return exc.code(), tuple(exc.trailing_metadata() or ())

        return await asyncio.gather(*(one(p) for p in payloads))


async def _hold_slots(target: str, n: int):
    """``n`` calls that occupy the Labeler (the model server is slow)."""
    channel = grpc.aio.insecure_channel(target)
    labeler = labeler_pb2_grpc.LabelerStub(channel)
    calls = [labeler.Classify(labeler_pb2.ClassifyRequest(words=_words(i)), timeout=60) for i in range(n)]
    return channel, calls


def test_refusal_before_parsing_with_pushback(make_stack, loop):
    stack = make_stack(
        delay_s=30.0,
        timeout_ms=60000,
        overload=config_pb2.OverloadConfig(
            max_classify_in_flight=1, max_classify_queued=1, max_queue_wait_ms=60000, excess_calls=REFUSE
        ),
        prediction_cache=NO_CACHE,
    )
    garbage = b"\xff\xff\xff not a ClassifyRequest"
    # Room: garbage is parsed, and refused for what it is.
    [(code, _)] = asyncio.run(_raw_calls(stack.target, [garbage], timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    async def flood_while_full():
        channel, calls = await _hold_slots(stack.target, 2)  # one running, one waiting
        try:
            while stack.app.admission.slots.queued < 1:
                await asyncio.sleep(0.01)
            return await _raw_calls(stack.target, [garbage] * 30, timeout=5)
        finally:
            for call in calls:
                call.cancel()
            await channel.close()

    refused_before = stack.app.admission.refused
    outcomes = loop.run(flood_while_full())
    # Full: refused before the bytes are parsed, with a pushback, counted.
    assert {code for code, _ in outcomes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for _, trailers in outcomes:
        assert (_pushback(trailers) or 0) > 0, trailers
    assert stack.app.admission.refused - refused_before == 30
    metrics = stack.app.metrics
    assert metrics.rpc_requests.labels("Classify", "RESOURCE_EXHAUSTED")._value.get() >= 30
    assert metrics.overload_refused.labels("classify")._value.get() >= 30


def test_work_is_stopped_before_the_deadline(make_stack):
    # The model call's own timeout (60 s) is longer than the caller's
    # deadline: the deadline alone must stop the work.
    stack = make_stack(delay_s=60.0, timeout_ms=60000, prediction_cache=NO_CACHE)
    outcomes = asyncio.run(_flood(stack.target, callers=3, timeout=0.5))
    assert {code for code, _, _ in outcomes} <= {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
    counts = stack.model_server.counts
    wait_until(lambda: counts.running == 0, timeout=20, what="the model server's Predicts to end")
    assert counts.cancelled == counts.started == 3
    assert stack.app.metrics.past_deadline.labels("late")._value.get() == 0
    wait_until(lambda: stack.app.admission.slots.running == 0, timeout=20, what="the slots to be free")


class _Stuck(labeler_pb2_grpc.LabelerServicer):
    """A Labeler servicer whose Classify never ends on its own."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def Classify(self, request, context):
        self.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return labeler_pb2.ClassifyResponse()


def test_admission_stops_work_still_running_at_the_deadline(loop):
    """The backstop: whatever the handler does, admission cancels it at the
    caller's deadline and counts it (labeler_calls_past_deadline)."""
    from labeler.admission import AdmissionInterceptor
    from labeler.config import Overload
    from labeler.metrics import LabelerMetrics
    from labeler.overload import AdmissionGate
    from rpc import server as rpc_server
    from rpc.security import ServerSecurity

    metrics = LabelerMetrics()
    gate = AdmissionGate(Overload(max_classify_in_flight=4), metrics)
    stuck = _Stuck()

    async def start():
        return await rpc_server.start_server(
            stuck,
            host="127.0.0.1",
            port=0,
            security=ServerSecurity(),
            service_names=["labeler.v1.Labeler"],
            add_servicers=lambda server: labeler_pb2_grpc.add_LabelerServicer_to_server(stuck, server),
            close_app=_nothing,
            front=[AdmissionInterceptor(gate, metrics)],
        )

    handle = loop.run(start())
    try:
        outcomes = asyncio.run(_flood(f"127.0.0.1:{handle.port}", callers=3, timeout=0.5))
        assert {code for code, _, _ in outcomes} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        cancelled = metrics.past_deadline.labels("cancelled")
        wait_until(
            lambda: cancelled._value.get() == 3, timeout=20, what="3 calls counted past their deadline"
        )
        assert stuck.started == stuck.cancelled == 3
        assert gate.slots.running == 0
    finally:
        loop.run(handle.stop(None))


async def _nothing() -> None:
    return None


def test_one_retry_policy_in_docs_cli_and_examples():
    """docs/clients.md, the Python CLI (labeler.retry_policy) and the Go and
    Java examples carry the same service config."""
    assert json.loads(_service_config_from_docs()) == retry_policy.SERVICE_CONFIG
    for path, quote in (
        ("examples/go/client/main.go", "`"),
        ("examples/java/src/com/textlabeler/examples/LabelerClient.java", '"""'),
    ):
        text = (pressure.REPO / path).read_text(encoding="utf-8")
        block = text.split("service-config:start", 1)[1].split("service-config:end", 1)[0]
        assert json.loads(block.split(quote)[1]) == retry_policy.SERVICE_CONFIG, path


async def _client_calls(target: str, calls: int, polite: bool) -> list[tuple[str, int]]:
    """(final code, attempts) per call. ``polite``: the docs/clients.md
    policy, gRPC's own retries; else an application loop that retries a
    refused call at once, ignoring the pushback, up to 4 attempts."""
    options = retry_policy.channel_options() if polite else []
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        labeler = labeler_pb2_grpc.LabelerStub(channel)

        async def one(i: int) -> tuple[str, int]:
            request = labeler_pb2.ClassifyRequest(words=_words(i), threshold=0)
            for attempt in range(1, 5):
                try:
                    await labeler.Classify(request, timeout=20)
                    return "OK", attempt
                except grpc.aio.AioRpcError as exc:
                    if polite:
                        previous = dict(exc.trailing_metadata() or ()).get("grpc-previous-rpc-attempts", "0")
                        return exc.code().name, 1 + int(previous)
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == 4:
                        return exc.code().name, attempt
            raise AssertionError("unreachable")

        return await asyncio.gather(*(one(i) for i in range(calls)))


def test_client_with_policy_and_one_without_share_an_overloaded_labeler(make_stack):
    stack = make_stack(
        delay_s=0.05,
        overload=config_pb2.OverloadConfig(
            max_classify_in_flight=2,
            max_classify_queued=2,
            max_predicts_per_target=4,
            max_queue_wait_ms=20,
            excess_calls=REFUSE,
        ),
        prediction_cache=NO_CACHE,
    )

    async def both():
        return await asyncio.gather(
            _client_calls(stack.target, 60, polite=True),
            _client_calls(stack.target, 60, polite=False),
        )

    polite, rude = asyncio.run(both())
    for outcomes in (polite, rude):
        assert {code for code, _ in outcomes} <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
    # (Which client gets the slots is the kernel's and the scheduler's call.)
    assert any(code == "OK" for outcomes in (polite, rude) for code, _ in outcomes)
    # The rude client sends every attempt it may; the polite one is held to
    # the retry budget that retryThrottling leaves (tokens above half of
    # maxTokens: about 50 failures, then no more retries).
    rude_failed = [attempts for code, attempts in rude if code != "OK"]
    assert all(attempts == 4 for attempts in rude_failed)
    polite_attempts = sum(attempts for _, attempts in polite)
    polite_failed = sum(code != "OK" for code, _ in polite)
    assert polite_failed == 0 or polite_attempts < 4 * len(polite)
    assert max(attempts for _, attempts in polite) <= 4
