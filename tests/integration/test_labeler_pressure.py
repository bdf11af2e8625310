"""The Labeler under pressure (issue 17), through real gRPC servers on
127.0.0.1:0: a Labeler with its production interceptors in front of a slow
stand-in model server (tests/support/slow_modelserver.py) that counts the
Predicts it sees.

- Overload: a flood of several times the capacity gets RESOURCE_EXHAUSTED
  with a grpc-retry-pushback-ms trailer for the excess while admitted calls
  succeed; the bounds hold (memory); the next calls succeed at once (the
  docs/clients.md retry policy: tests/integration/test_labeler_overload.py).
- Cancellation: a cancelled Classify (or one whose deadline passed) leaves
  no Predict running on the model server, including one waiting in
  coalescing.
- Cache: hits give the same probabilities as a miss and stop at a version
  change; identical rows in flight share one Predict; the off switch.
- Bad overload/cache settings are refused at start and on reload.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import grpc
import psutil
import pytest

from labeler.config import ConfigError
from labeler.server import create_server
from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from tests.support.labeler_support import EXAMPLE, BackgroundLoop, labeler_config, wait_until
from tests.support.slow_modelserver import SlowModelServer, write_features

pytestmark = pytest.mark.timeout(300)

REPO = pathlib.Path(__file__).resolve().parents[2]
LABEL = "影视"


@pytest.fixture
def loop():
    background = BackgroundLoop()
    yield background
    background.close()


class Stack:
    """A slow model server and a Labeler in front of it."""

    def __init__(self, loop: BackgroundLoop, tmp_path: pathlib.Path, delay_s: float, **config) -> None:
        self.loop = loop
        self.root = tmp_path / "models"
        write_features(self.root, "movie", 1)
        write_features(self.root, "movie", 2)
        self.model_server = loop.run(SlowModelServer({"movie": [1]}, delay_s).start())
        self.config = labeler_config(self.root, {"movie": self.model_server.target}, poll_ms=100, **config)
        self.server = loop.run(create_server(self.config))
        self.port = self.server.port
        self.app = self.server.app
        assert loop.run(self.app.wait_ready(30))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop.run(self.server.stop(None))
        self.loop.run(self.model_server.stop())


@pytest.fixture
def make_stack(loop, tmp_path):
    stacks: list[Stack] = []

    def make(delay_s: float = 0.0, **config) -> Stack:
        stacks.append(Stack(loop, tmp_path, delay_s, **config))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.close()


def _words(i: int) -> list[str]:
    """Distinct documents (distinct feature rows), so the cache does not answer."""
    base = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影", "口红", "明星", "时装", "新款"]
    return [base[(i // 10**k) % 10] for k in range(4)] + ["电影"]


def _service_config_from_docs() -> str:
    """The Python service config that docs/clients.md gives (one JSON block)."""
    text = (REPO / "docs" / "clients.md").read_text(encoding="utf-8")
    start = text.index("<!-- service-config -->")
    block = text[start:].split("```json", 1)[1].split("```", 1)[0]
    json.loads(block)  # it must be valid JSON
    return block


async def _flood(target: str, callers: int, timeout: float, retry_policy: bool = False) -> list[tuple]:
    """``callers`` concurrent Classify calls on ONE channel (as a Go or Java
    client sends them); (code, trailing metadata, reply) of each."""
    options = []
    if retry_policy:
        options = [("grpc.enable_retries", 1), ("grpc.service_config", _service_config_from_docs())]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        labeler = labeler_pb2_grpc.LabelerStub(channel)

        async def one(i: int) -> tuple:
            call = labeler.Classify(
                labeler_pb2.ClassifyRequest(words=_words(i), threshold=0), timeout=timeout
            )
            try:
                reply = await call
                return grpc.StatusCode.OK, (), reply
            except grpc.aio.AioRpcError as exc:
                return exc.code(), tuple(exc.trailing_metadata() or ()), exc.details()

        return await asyncio.gather(*(one(i) for i in range(callers)))


def _pushback(trailers) -> int | None:
    for key, value in trailers:
        if key == "grpc-retry-pushback-ms":
            return int(value)
    return None


def test_flood_gets_resource_exhausted_with_pushback_and_recovers(make_stack):
    # Capacity: 4 calls at a time, each a 100 ms Predict: about 40 calls a
    # second. The flood: 160 callers at once on one connection.
    stack = make_stack(
        delay_s=0.1,
        overload=config_pb2.OverloadConfig(
            max_classify_in_flight=4,
            max_classify_queued=8,
            max_predicts_per_target=4,
            max_queue_wait_ms=150,
            excess_calls=config_pb2.OverloadConfig.EXCESS_CALLS_REFUSE,
        ),
        prediction_cache=config_pb2.PredictionCacheConfig(disabled=True),
    )
    rss_before = psutil.Process().memory_info().rss
    outcomes = asyncio.run(_flood(stack.target, callers=160, timeout=5.0))
    rss_after = psutil.Process().memory_info().rss
    codes = [code for code, _, _ in outcomes]
    ok = codes.count(grpc.StatusCode.OK)
    refused = [
        (trailers, details)
        for code, trailers, details in outcomes
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    # Every call is either answered or refused: none waits out its deadline,
    # none is refused by HTTP/2 (UNAVAILABLE, which clients retry).
    assert ok + len(refused) == len(outcomes), sorted({c.name for c in codes})
    assert ok >= 4, "the admitted calls must succeed"
    # At most 12 admitted at a time out of 160 at once: most are refused (how
    # many exactly depends on how fast this shared machine lets calls finish).
    assert len(refused) >= 40, f"only {len(refused)} of 160 refused"
    for trailers, details in refused:
        pushback = _pushback(trailers)
        assert pushback is not None and pushback > 0, trailers
        assert "overload.max_classify_in_flight" in details
    for code, _, reply in outcomes:
        if code == grpc.StatusCode.OK:
            assert [s.label for s in reply.labels] == [LABEL]
    # The bounds held: never more calls running or waiting than configured,
    # never more Predicts at the model server than max_predicts_per_target.
    slots = stack.app.admission.slots
    assert slots.peak_running <= 4 and slots.peak_queued <= 8
    assert stack.model_server.counts.peak_running <= 4
    assert rss_after - rss_before < 100 * 1024 * 1024
    refused_metric = stack.app.metrics.overload_refused.labels("classify")._value.get()
    assert refused_metric == len(refused)
    # Recovery: the flood is over, the next calls are all answered.
    after = asyncio.run(_flood(stack.target, callers=4, timeout=5.0))
    assert [code for code, _, _ in after] == [grpc.StatusCode.OK] * 4


def test_stream_limit_leaves_room_for_admission(make_stack):
    """EXCESS_CALLS_REFUSE: beyond 256 calls on one connection (the default
    stream limit) the excess is still answered by the Labeler, not refused by
    HTTP/2."""
    stack = make_stack(
        delay_s=0.2,
        overload=config_pb2.OverloadConfig(
            max_classify_in_flight=2,
            max_classify_queued=2,
            excess_calls=config_pb2.OverloadConfig.EXCESS_CALLS_REFUSE,
        ),
        prediction_cache=config_pb2.PredictionCacheConfig(disabled=True),
    )
    outcomes = asyncio.run(_flood(stack.target, callers=400, timeout=10.0))
    codes = {code for code, _, _ in outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes


async def _classify_then_cancel(target: str, stack: Stack, words_list: list[list[str]], wait_started: int):
    async with grpc.aio.insecure_channel(target) as channel:
        labeler = labeler_pb2_grpc.LabelerStub(channel)
        calls = [
            labeler.Classify(labeler_pb2.ClassifyRequest(words=w, threshold=0), timeout=60)
            for w in words_list
        ]
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while stack.model_server.counts.started < wait_started and loop.time() < end:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # let the later calls reach coalescing
        for call in calls:
            call.cancel()
        for call in calls:
            with pytest.raises(asyncio.CancelledError):
                await call


@pytest.mark.parametrize("coalescing", [False, True], ids=["direct", "coalescing"])
def test_cancelled_classify_leaves_no_predict_running(make_stack, coalescing):
    stack = make_stack(
        delay_s=60.0,
        timeout_ms=60000,
        coalescing=config_pb2.CoalescingConfig(enabled=coalescing, max_delay_us=30_000_000),
        prediction_cache=config_pb2.PredictionCacheConfig(disabled=True),
    )
    # With coalescing the first call's Predict goes out at once; the other
    # two wait in coalescing for it to return (up to 30 s).
    asyncio.run(_classify_then_cancel(stack.target, stack, [_words(1), _words(2), _words(3)], 1))
    counts = stack.model_server.counts
    wait_until(lambda: counts.running == 0, timeout=20, what="the model server's Predicts to end")
    assert counts.finished == 0
    assert counts.cancelled == counts.started
    if coalescing:
        assert counts.started == 1, "the calls waiting in coalescing must never be sent"
    else:
        assert counts.started == 3


def test_deadline_passing_cancels_the_predict(make_stack):
    stack = make_stack(delay_s=60.0, prediction_cache=config_pb2.PredictionCacheConfig(disabled=True))
    outcomes = asyncio.run(_flood(stack.target, callers=2, timeout=0.5))
    assert {code for code, _, _ in outcomes} <= {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
    counts = stack.model_server.counts
    wait_until(lambda: counts.running == 0, timeout=20, what="the model server's Predicts to end")
    assert counts.started == 2 and counts.cancelled == 2


async def _classify(target: str, words: list[str]) -> labeler_pb2.ClassifyResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        return await labeler_pb2_grpc.LabelerStub(channel).Classify(
            labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=10
        )


def _probability(reply) -> tuple[float, int]:
    (score,) = reply.labels
    return score.probability, score.model_version


def _lookups(stack: Stack, outcome: str) -> float:
    return stack.app.metrics.cache_lookups.labels("movie", outcome)._value.get()


def test_cache_hit_equals_miss_and_stops_at_a_version_change(make_stack, loop):
    stack = make_stack()
    counts = stack.model_server.counts
    first = asyncio.run(_classify(stack.target, EXAMPLE))
    assert counts.rows == 1 and _lookups(stack, "miss") == 1
    second = asyncio.run(_classify(stack.target, EXAMPLE))
    assert counts.rows == 1, "a hit must not reach the model server"
    assert _lookups(stack, "hit") == 1
    assert _probability(second) == _probability(first)
    # The same probabilities as a miss on a Labeler without the cache.
    stack.app.cache.__init__(stack.app.cache.max_bytes)  # emptied: the next one is a miss
    third = asyncio.run(_classify(stack.target, EXAMPLE))
    assert counts.rows == 2 and _probability(third) == _probability(first)

    # A new version is a new key: version 2 answers differently, and nothing
    # from version 1 is served once the Labeler moved.
    stack.model_server.versions["movie"] = [2]
    wait_until(
        lambda: stack.app.registry.snapshot().bindings[LABEL].loaded.version == 2,
        timeout=20,
        what="the Labeler to move to version 2",
    )
    moved = asyncio.run(_classify(stack.target, EXAMPLE))
    assert counts.rows == 3
    assert _probability(moved)[1] == 2 and _probability(moved)[0] != _probability(first)[0]
    again = asyncio.run(_classify(stack.target, EXAMPLE))
    assert counts.rows == 3 and _probability(again) == _probability(moved)


async def _concurrent(target: str, words: list[str], n: int) -> list:
    async with grpc.aio.insecure_channel(target) as channel:
        labeler = labeler_pb2_grpc.LabelerStub(channel)
        return await asyncio.gather(
            *(
                labeler.Classify(labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=10)
                for _ in range(n)
            )
        )


def test_identical_rows_in_flight_share_one_predict(make_stack):
    stack = make_stack(delay_s=0.5, overload=config_pb2.OverloadConfig(max_classify_in_flight=16))
    replies = asyncio.run(_concurrent(stack.target, EXAMPLE, 10))
    assert len({_probability(r) for r in replies}) == 1
    assert stack.model_server.counts.started == 1 and stack.model_server.counts.rows == 1
    assert _lookups(stack, "shared") + _lookups(stack, "hit") == 9


def test_cache_off_switch(make_stack):
    stack = make_stack(delay_s=0.2, prediction_cache=config_pb2.PredictionCacheConfig(disabled=True))
    asyncio.run(_concurrent(stack.target, EXAMPLE, 5))
    asyncio.run(_classify(stack.target, EXAMPLE))
    assert stack.app.cache is None
    assert stack.model_server.counts.rows == 6


def test_cache_stays_within_its_bytes(make_stack):
    stack = make_stack(prediction_cache=config_pb2.PredictionCacheConfig(max_bytes=4096))
    for i in range(40):
        asyncio.run(_classify(stack.target, _words(i)))
    cache = stack.app.cache
    assert 0 < cache.bytes <= 4096 and cache.evictions > 0
    assert stack.app.metrics.cache_evictions.labels("movie")._value.get() == cache.evictions


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("overload", config_pb2.OverloadConfig(queue_deadline_share_percent=150)),
        ("overload", config_pb2.OverloadConfig(max_classify_in_flight=200_000)),
        ("overload", config_pb2.OverloadConfig(max_queue_wait_ms=600_000)),
        ("prediction_cache", config_pb2.PredictionCacheConfig(max_bytes=100)),
    ],
)
def test_bad_settings_refused_at_start_and_on_reload(loop, tmp_path, make_stack, field, message):
    from google.protobuf import text_format

    name = next(f.name for f, _ in message.ListFields())
    stack = make_stack()
    bad = config_pb2.LabelerConfig()
    bad.CopyFrom(stack.config)
    getattr(bad, field).CopyFrom(message)
    with pytest.raises(ConfigError, match=rf"{field}\.{name} must be within"):
        loop.run(create_server(bad))
    # On reload: the file is refused, the running settings stay.
    path = tmp_path / "labeler.textproto"
    path.write_text(text_format.MessageToString(bad), encoding="utf-8")
    stack.app.config_path = path
    before = stack.app.registry.snapshot().settings
    assert loop.run(stack.app.reload_from_file()) is False
    assert stack.app.registry.snapshot().settings is before


def test_one_classify_fan_out_is_never_cut_into_waves(loop, tmp_path):
    """max_predicts_per_target below the models on the target: one Classify
    still sends all its Predicts at once (the bound is never below one
    fan-out), and a flood still never has more than that at the server."""
    models = ["movie", "beauty", "star", "fashion"]
    root = tmp_path / "models"
    for model in models:
        write_features(root, model, 1)
    model_server = loop.run(SlowModelServer({m: [1] for m in models}, delay_s=0.2).start())
    config = labeler_config(
        root,
        dict.fromkeys(models, model_server.target),
        overload=config_pb2.OverloadConfig(max_classify_in_flight=4, max_predicts_per_target=2),
        prediction_cache=config_pb2.PredictionCacheConfig(disabled=True),
    )
    server = loop.run(create_server(config))
    try:
        assert loop.run(server.app.wait_ready(30))
        outcomes = asyncio.run(_flood(f"127.0.0.1:{server.port}", callers=1, timeout=10.0))
        assert [code for code, _, _ in outcomes] == [grpc.StatusCode.OK]
        assert len(outcomes[0][2].labels) == 4
        # In waves of 2 the peak would be 2 (and the call twice as long).
        assert model_server.counts.peak_running == 4
        outcomes = asyncio.run(_flood(f"127.0.0.1:{server.port}", callers=12, timeout=10.0))
        codes = [code for code, _, _ in outcomes]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes.count(grpc.StatusCode.OK) >= 4
        assert model_server.counts.peak_running == 4
    finally:
        loop.run(server.stop(None))
        loop.run(model_server.stop())
