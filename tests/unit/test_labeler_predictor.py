"""labeler.predictor with a fake inner predictor and a fake client pool (no
model server, no TensorFlow): what CoalescingPredictor merges and what it
keeps apart, that a lone call is never held, how a failed batch fails each of
its callers, and that one caller giving up leaves the others their answer;
DirectPredictor's use of the client."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from labeler.config import LabelSpec
from labeler.domain import Binding, LabelState, LoadedVersion, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.predictor import CoalescingPredictor, DirectPredictor
from modelspec.features import FeaturePipeline, FeatureSettings

# The whole of each test: a predictor that holds a call would hang, not fail.
TEST_TIMEOUT_S = 30.0
# "Never" for a coalescing delay: no test may pass by waiting for this timer.
FOREVER_S = 3600.0

PIPELINE = FeaturePipeline(["a", "b"], {}, FeatureSettings(cutlen=2, ngram_range=1, maxlen=2))


def binding(model: str = "movie", version: int = 1, target: str = "127.0.0.1:8500") -> Binding:
    spec = LabelSpec(
        label=f"label-{model}",
        model=model,
        target=target,
        signature_name="serving_default",
        input_name="input",
        output_name="probability",
        threshold=0.5,
        version=None,
        version_label=None,
        timeout_s=1.0,
    )
    return Binding(spec, LoadedVersion(version, PIPELINE, {}), LabelState.AVAILABLE)


def rows(*values: int) -> np.ndarray:
    """Feature rows whose first column names the row, so answers can be traced back."""
    return np.array([[v, 0] for v in values], dtype=np.int32)


@dataclasses.dataclass
class Call:
    model: str
    version: int
    features: np.ndarray
    deadline: float


class FakeInner:
    """The predictor underneath: records each batch, answers each row with its
    first column / 100, and, while ``gate`` is set, waits for it to open."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.started = asyncio.Event()

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        assert binding.loaded is not None
        self.calls.append(Call(binding.spec.model, binding.loaded.version, features.copy(), deadline))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return Prediction(features[:, 0].astype(np.float64) / 100, binding.loaded.version)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def later(seconds: float = 60.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def settle() -> None:
    """Let every ready callback and task run (a few loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_lone_call_goes_out_at_once():
    async def main():
        inner = FakeInner()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        result = await predictor.predict(binding(), rows(7, 8), later())
        assert [c.features[:, 0].tolist() for c in inner.calls] == [[7, 8]]
        assert result.probabilities.tolist() == [0.07, 0.08]
        assert result.version == 1

    run(main())


def test_concurrent_calls_for_one_model_become_one_predict_and_each_gets_its_rows():
    async def main():
        inner = FakeInner()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        b = binding()
        deadlines = [later(10), later(30), later(20)]
        results = await asyncio.gather(
            predictor.predict(b, rows(1, 2, 3), deadlines[0]),
            predictor.predict(b, rows(4), deadlines[1]),
            predictor.predict(b, rows(5, 6), deadlines[2]),
        )
        assert len(inner.calls) == 1
        assert inner.calls[0].features[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
        # The batch runs until the latest deadline of its members.
        assert inner.calls[0].deadline == max(deadlines)
        assert [r.probabilities.tolist() for r in results] == [[0.01, 0.02, 0.03], [0.04], [0.05, 0.06]]

    run(main())


def test_calls_for_other_models_versions_or_targets_are_never_merged():
    async def main():
        inner = FakeInner()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        bindings = [
            binding("movie", 1),
            binding("movie", 2),
            binding("beauty", 1),
            binding("movie", 1, target="127.0.0.1:8501"),
        ]
        results = await asyncio.gather(
            *(predictor.predict(b, rows(i), later()) for i, b in enumerate(bindings))
        )
        assert sorted((c.model, c.version, c.features[:, 0].tolist()[0]) for c in inner.calls) == [
            ("beauty", 1, 2),
            ("movie", 1, 0),
            ("movie", 1, 3),
            ("movie", 2, 1),
        ]
        assert [r.version for r in results] == [1, 2, 1, 1]
        assert [r.probabilities.tolist() for r in results] == [[0.0], [0.01], [0.02], [0.03]]

    run(main())


def test_callers_that_arrive_while_a_predict_is_in_flight_go_out_together_when_it_returns():
    async def main():
        inner = FakeInner()
        inner.gate = asyncio.Event()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        b = binding()
        first = asyncio.ensure_future(predictor.predict(b, rows(1), later()))
        await inner.started.wait()
        waiting = [asyncio.ensure_future(predictor.predict(b, rows(v), later())) for v in (2, 3, 4)]
        await settle()
        assert len(inner.calls) == 1  # the others gather behind the one in flight
        inner.gate.set()
        assert (await first).probabilities.tolist() == [0.01]
        answers = [(await w).probabilities.tolist() for w in waiting]
        assert answers == [[0.02], [0.03], [0.04]]
        assert [c.features[:, 0].tolist() for c in inner.calls] == [[1], [2, 3, 4]]

    run(main())


def test_max_documents_bounds_a_batch():
    async def main():
        inner = FakeInner()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=4)
        b = binding()
        results = await asyncio.gather(
            predictor.predict(b, rows(1, 2, 3), later()),
            predictor.predict(b, rows(4, 5, 6), later()),  # would make 6 > 4: a batch of its own
            predictor.predict(b, rows(7, 8, 9, 10), later()),  # a full batch by itself: straight through
        )
        sent = sorted(c.features[:, 0].tolist() for c in inner.calls)
        assert sent == [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10]]
        assert all(len(c.features) <= 4 for c in inner.calls)
        assert [r.probabilities.tolist() for r in results] == [
            [0.01, 0.02, 0.03],
            [0.04, 0.05, 0.06],
            [0.07, 0.08, 0.09, 0.1],
        ]

    run(main())


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (
            ModelCallError("UNAVAILABLE", "model server 127.0.0.1:8500: connection refused"),
            "UNAVAILABLE",
            "refused",
        ),
        (ModelCallError("INVALID_ARGUMENT", "input has the wrong shape"), "INVALID_ARGUMENT", "wrong shape"),
        (RuntimeError("the fake broke"), "INTERNAL", "the fake broke"),
    ],
)
def test_a_failed_batch_fails_every_caller_with_its_error(error, code, text):
    async def main():
        inner = FakeInner()
        inner.error = error
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        b = binding()
        outcomes = await asyncio.gather(
            *(predictor.predict(b, rows(v), later()) for v in (1, 2, 3)), return_exceptions=True
        )
        assert len(inner.calls) == 1
        assert all(isinstance(o, ModelCallError) for o in outcomes), outcomes
        assert [o.code_name for o in outcomes] == [code] * 3
        assert all(text in o.message for o in outcomes)
        # The predictor is not stuck: the next call is sent and answered.
        inner.error = None
        assert (await predictor.predict(b, rows(9), later())).probabilities.tolist() == [0.09]

    run(main())


def test_a_cancelled_caller_leaves_the_others_their_answer():
    async def main():
        inner = FakeInner()
        inner.gate = asyncio.Event()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        b = binding()
        callers = [asyncio.ensure_future(predictor.predict(b, rows(v), later())) for v in (1, 2, 3)]
        await inner.started.wait()
        assert [c.features[:, 0].tolist() for c in inner.calls] == [[1, 2, 3]]
        callers[1].cancel()
        await settle()
        inner.gate.set()
        assert (await callers[0]).probabilities.tolist() == [0.01]
        assert (await callers[2]).probabilities.tolist() == [0.03]
        with pytest.raises(asyncio.CancelledError):
            await callers[1]
        assert len(inner.calls) == 1
        assert (await predictor.predict(b, rows(4), later())).probabilities.tolist() == [0.04]

    run(main())


def test_a_caller_past_its_deadline_gets_deadline_exceeded_while_the_batch_goes_on():
    async def main():
        inner = FakeInner()
        inner.gate = asyncio.Event()
        predictor = CoalescingPredictor(inner, max_delay_s=FOREVER_S, max_documents=64)
        b = binding()
        hasty = asyncio.ensure_future(predictor.predict(b, rows(1), later(0.05)))
        patient = asyncio.ensure_future(predictor.predict(b, rows(2), later(60)))
        with pytest.raises(ModelCallError) as caught:
            await hasty  # its own deadline passes while the Predict is held
        assert caught.value.code_name == "DEADLINE_EXCEEDED"
        assert "movie" in caught.value.message
        inner.gate.set()
        assert (await patient).probabilities.tolist() == [0.02]

    run(main())


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.error: ModelCallError | None = None

    async def predict(
        self, model, version, signature_name, input_name, output_name, features, deadline, **kw
    ):
        self.calls.append(
            {
                "model": model,
                "version": version,
                "names": (signature_name, input_name, output_name),
                "rows": features.shape[0],
                "deadline": deadline,
                **kw,
            }
        )
        if self.error is not None:
            raise self.error
        return Prediction(np.full(features.shape[0], 0.5), version)


class FakeClientPool:
    def __init__(self) -> None:
        self.clients: dict[str, FakeClient] = {}

    def get(self, target: str) -> FakeClient:
        return self.clients.setdefault(target, FakeClient())


def test_direct_predictor_pins_the_loaded_version_and_fails_fast_while_the_label_is_unavailable():
    async def main():
        pool = FakeClientPool()
        metrics = LabelerMetrics()
        predictor = DirectPredictor(pool, metrics)
        available = binding(version=7)
        down = dataclasses.replace(available, state=LabelState.UNAVAILABLE)
        deadline = later()
        result = await predictor.predict(available, rows(1, 2), deadline)
        assert result.probabilities.tolist() == [0.5, 0.5] and result.version == 7
        await predictor.predict(down, rows(3), deadline)
        client = pool.clients["127.0.0.1:8500"]
        assert [(c["model"], c["version"], c["rows"], c["deadline"]) for c in client.calls] == [
            ("movie", 7, 2, deadline),
            ("movie", 7, 1, deadline),
        ]
        assert client.calls[0]["names"] == ("serving_default", "input", "probability")
        # While the poller finds the server down, no retrying for the whole timeout.
        assert [c["retry_unavailable"] for c in client.calls] == [True, False]

        client.error = ModelCallError("UNAVAILABLE", "down")
        with pytest.raises(ModelCallError, match="UNAVAILABLE"):
            await predictor.predict(available, rows(4), deadline)
        errors = metrics.registry.get_sample_value(
            "labeler_predict_errors_total", {"model": "movie", "code": "UNAVAILABLE"}
        )
        assert errors == 1.0

    run(main())
