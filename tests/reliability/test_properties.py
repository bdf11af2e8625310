"""Property and fuzz tests: whatever a caller sends, the answer is either a
result or a clear INVALID_ARGUMENT (NOT_FOUND, ALREADY_EXISTS where they
apply), never INTERNAL or UNKNOWN, and the validity is exactly what the
documented limits say.

- the Labeler's core (labeler.service) directly, many examples: a request is
  rejected with InvalidArgument exactly when it breaks a documented rule;
- the same requests through the real ``labeler serve`` process, fewer;
- TensorProto decoding (tfserving.codec) on arbitrary protos, and
  arbitrary Predict inputs through the real model server process;
- arbitrary StartRequests through a real Trainer: accepted ones are queued
  with every request string a whole argv item, the others refused.

The feature pipeline's own properties (never raises, fixed shape and dtype)
live in tests/unit/test_modelspec_features.py.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeler.config import validate
from labeler.model_client import ClientPool
from labeler.predictor import DirectPredictor
from labeler.registry import ModelRegistry
from labeler.service import LabelerService
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc import errors
from tests.support.labeler_support import EXAMPLE, labeler_config
from tests.support.trainer_support import FAKE, ScriptedLoad, make_config, running_trainer
from tfserving.protos import predict_pb2, prediction_service_pb2_grpc, tensor_pb2, types_pb2
from trainer.gate import GatePolicy
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(300)

KNOWN_LABELS = ["影视", "美妆", "明星", "时尚"]
FAST = settings(max_examples=300, deadline=None, database=None)
THROUGH_SERVER = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- what a Classify may carry ---------------------------------------------------

words_st = st.lists(
    st.one_of(
        st.text(max_size=8),
        st.sampled_from([*EXAMPLE, "", "\x00", "\u200b", "🎬", "e\u0301"]),
        st.text(alphabet="影视x", min_size=4, max_size=12),  # around a 16-byte word limit
    ),
    max_size=24,
)
labels_st = st.lists(
    st.sampled_from([*KNOWN_LABELS, "体育", "", "影视\x00", "../x"]) | st.text(max_size=4), max_size=5
)
threshold_st = (
    st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 0.5, -0.0])
)


def broken_rule(documents, labels, threshold, max_words, max_word_bytes, max_batch_documents) -> bool:
    """The documented request rules (labeler.proto, RequestLimits), as an oracle."""
    if not documents or len(documents) > max_batch_documents:
        return True
    for words in documents:
        if not words or len(words) > max_words or any(len(w.encode("utf-8")) > max_word_bytes for w in words):
            return True
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        return True
    return any(label not in KNOWN_LABELS for label in labels)


# -- the core, directly ---------------------------------------------------------------

CORE_LIMITS = {"max_words": 20, "max_word_bytes": 16, "max_batch_documents": 6}


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The Labeler's core with no model server behind it (no version is
    loaded): a valid request can only end UNAVAILABLE, an invalid one must
    end INVALID_ARGUMENT, before any model is asked."""
    dead = "127.0.0.1:1"
    config = labeler_config(
        tmp_path_factory.mktemp("models"),
        dict.fromkeys(["movie", "beauty", "star", "fashion"], dead),
        limits=CORE_LIMITS,
    )
    settings_ = validate(config)
    clients = ClientPool()
    return LabelerService(ModelRegistry(settings_, clients), DirectPredictor(clients))


async def _core_outcome(core: LabelerService, documents, labels, threshold, single: bool) -> str:
    try:
        if single:
            await core.classify(documents[0] if documents else [], labels, threshold, time_remaining=5.0)
        else:
            await core.classify_batch(documents, labels, threshold, time_remaining=5.0)
    except errors.ServiceError as exc:
        return exc.code
    return "OK"


@FAST
@given(documents=st.lists(words_st, max_size=8), labels=labels_st, threshold=threshold_st)
def test_core_rejects_a_batch_exactly_when_it_breaks_a_rule(core, documents, labels, threshold):
    outcome = asyncio.run(_core_outcome(core, documents, labels, threshold, single=False))
    expected = (
        "INVALID_ARGUMENT" if broken_rule(documents, labels, threshold, **CORE_LIMITS) else "UNAVAILABLE"
    )
    assert outcome == expected


@FAST
@given(words=words_st, labels=labels_st, threshold=threshold_st)
def test_core_rejects_a_document_exactly_when_it_breaks_a_rule(core, words, labels, threshold):
    outcome = asyncio.run(_core_outcome(core, [words], labels, threshold, single=True))
    expected = "INVALID_ARGUMENT" if broken_rule([words], labels, threshold, **CORE_LIMITS) else "UNAVAILABLE"
    assert outcome == expected


# -- the same through the real Labeler process ------------------------------------------

# The stack runs the default limits; these reach past them.
big_words_st = words_st | st.sampled_from([["x" * 1025], ["的"] * 10_001, ["电" * 341 + "x"]])


@pytest.fixture(scope="module")
def labeler(secure_stack):
    with secure_stack.labeler_channel() as channel:
        yield labeler_pb2_grpc.LabelerStub(channel)


def _set_threshold(request, threshold) -> float | None:
    if threshold is None:
        return None
    request.threshold = threshold
    return request.threshold  # as float32, which the server sees


def _check_answer(scores, cut) -> None:
    probabilities = [s.probability for s in scores]
    assert probabilities == sorted(probabilities, reverse=True)
    for s in scores:
        assert s.label in KNOWN_LABELS and 0.0 <= s.probability <= 1.0 and s.model_version > 0
        assert cut is None or s.probability >= cut


@THROUGH_SERVER
@given(words=big_words_st, labels=labels_st, threshold=threshold_st)
def test_any_classify_is_answered_or_invalid_argument(labeler, words, labels, threshold):
    request = labeler_pb2.ClassifyRequest(words=words, labels=labels)
    threshold = _set_threshold(request, threshold)
    invalid = broken_rule([words], labels, threshold, 10_000, 1024, 1024)
    try:
        reply = labeler.Classify(request, timeout=30)
    except grpc.RpcError as err:
        assert (err.code(), invalid) == (grpc.StatusCode.INVALID_ARGUMENT, True), err.details()
        return
    assert not invalid and not reply.failures
    _check_answer(reply.labels, threshold)
    if threshold == 0.0:
        assert {s.label for s in reply.labels} == set(labels or KNOWN_LABELS)


@THROUGH_SERVER
@given(documents=st.lists(big_words_st, max_size=6), labels=labels_st, threshold=threshold_st)
def test_any_classify_batch_is_answered_or_invalid_argument(labeler, documents, labels, threshold):
    request = labeler_pb2.ClassifyBatchRequest(
        documents=[labeler_pb2.Document(words=w) for w in documents], labels=labels
    )
    threshold = _set_threshold(request, threshold)
    invalid = broken_rule(documents, labels, threshold, 10_000, 1024, 1024)
    try:
        reply = labeler.ClassifyBatch(request, timeout=30)
    except grpc.RpcError as err:
        assert (err.code(), invalid) == (grpc.StatusCode.INVALID_ARGUMENT, True), err.details()
        return
    assert not invalid and not reply.failures and len(reply.results) == len(documents)
    for result in reply.results:
        _check_answer(result.labels, threshold)


# -- tensors ----------------------------------------------------------------------------

DTYPES = [v for v in types_pb2.DataType.values() if v < 100]  # not the _REF twins
TYPED_FIELDS = [
    "float_val",
    "double_val",
    "int_val",
    "int64_val",
    "half_val",
    "bool_val",
    "string_val",
    "uint32_val",
    "uint64_val",
    "scomplex_val",
    "dcomplex_val",
]


@st.composite
def tensor_protos(draw, max_dims: int = 4) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(DTYPES)))
    for size in draw(
        st.lists(st.integers(-2, 6) | st.sampled_from([0, 119, 2**31, 2**40]), max_size=max_dims)
    ):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=64))
    else:
        field = draw(st.sampled_from(TYPED_FIELDS))
        if field == "string_val":
            getattr(proto, field).extend(draw(st.lists(st.binary(max_size=4), max_size=4)))
        elif field in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
            getattr(proto, field).extend(draw(st.lists(st.floats(width=32), max_size=6)))
        elif field == "bool_val":
            getattr(proto, field).extend(draw(st.lists(st.booleans(), max_size=6)))
        elif field in ("uint32_val", "half_val"):
            getattr(proto, field).extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=6)))
        elif field == "uint64_val":
            getattr(proto, field).extend(draw(st.lists(st.integers(0, 2**63), max_size=6)))
        else:
            getattr(proto, field).extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6)))
    return proto


@FAST
@given(proto=tensor_protos())
def test_decoding_any_tensor_proto_gives_its_shape_or_a_parse_error(proto):
    from tfserving import codec

    try:
        array = codec.to_ndarray(proto, max_bytes=1 << 20)
    except codec.TensorParseError:
        return
    assert array.shape == tuple(d.size for d in proto.tensor_shape.dim)
    assert array.nbytes <= 1 << 20 or array.dtype == object


@pytest.fixture(scope="module")
def prediction(secure_stack):
    with secure_stack.modelserver_channel() as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@THROUGH_SERVER
@given(proto=tensor_protos(max_dims=3))
def test_any_predict_input_is_answered_or_invalid_argument(prediction, proto):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "movie"
    request.inputs["input"].CopyFrom(proto)
    try:
        reply = prediction.Predict(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        return
    assert "probability" in reply.outputs


# -- Trainer Start ------------------------------------------------------------------------


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Valid three times in four, so that many whole requests are valid too."""
    return st.integers(0, 3).flatmap(lambda i: hostile if i == 3 else valid)


model_st = mostly(
    st.sampled_from(["movie", "star", "m" * 63]),
    st.sampled_from(["a/b", "..", "-rf", "Movie", "m" * 64, "movie\x00"]) | st.text(max_size=6),
)
label_st = mostly(
    st.sampled_from(["影视", "$(id)", "a;b", "'\"`"])
    | st.text(min_size=1, max_size=6)
    .map(str.strip)
    .filter(lambda t: t and t.isprintable() and not t.startswith("-")),
    st.sampled_from(["", "-x", " 影视", "a\nb", "x" * 65]) | st.text(max_size=6),
)
corpus_st = mostly(
    st.sampled_from(["", "fake.json", "./fake.json"]),
    st.sampled_from(["../fake.json", "/etc/passwd", "nope.json", ".", "a\x00"]) | st.text(max_size=8),
)
recipe_st = mostly(
    st.sampled_from(["", "fake"]), st.sampled_from(["fasttext", "fake ", "../fake"]) | st.text(max_size=5)
)
hp_value = mostly(st.none() | st.integers(1, 64), st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def closed_trainer(tmp_path_factory):
    """A Trainer whose gate never admits (load between normal and danger):
    accepted jobs stay queued, so the store can be compared with the answers."""
    gate = GatePolicy(
        cpu_normal=50, cpu_danger=101, memory_normal=101, memory_danger=101, warmup_s=0, window_s=0.2
    )
    config = make_config(tmp_path_factory.mktemp("trainer"), gate=gate)
    with running_trainer(config, ScriptedLoad(cpu=80, memory=10)) as trainer:
        trainer.accepted = set()
        trainer.keys = {}  # idempotency key -> the job it made
        yield trainer


@settings(max_examples=150, deadline=None, database=None)
@given(
    model=model_st,
    label=label_st,
    corpus=corpus_st,
    recipe=recipe_st,
    epochs=hp_value,
    threads=hp_value,
    batch_size=mostly(st.none(), st.integers(1, 9)),
    key=mostly(st.just(""), st.sampled_from(["k1", "k2"]) | st.text(max_size=3)),
)
def test_any_start_is_queued_with_whole_argv_items_or_refused(
    closed_trainer, model, label, corpus, recipe, epochs, threads, batch_size, key
):
    hp = {
        k: v
        for k, v in {"epochs": epochs, "threads": threads, "batch_size": batch_size}.items()
        if v is not None
    }
    request = trainer_pb2.StartRequest(
        model=model,
        label=label,
        corpus=corpus,
        recipe=recipe,
        hyperparameters=trainer_pb2.Hyperparameters(**hp),
        idempotency_key=key,
    )
    try:
        job = closed_trainer.stub.Start(request, timeout=10).job
    except grpc.RpcError as err:
        allowed = {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.ALREADY_EXISTS,
        }
        assert err.code() in allowed, err.details()
        return
    assert job.state == trainer_pb2.JOB_STATE_QUEUED
    if key in closed_trainer.keys:  # a retried key returns the job it made
        assert job.job_id == closed_trainer.keys[key]
        return
    closed_trainer.accepted.add(job.job_id)
    if key:
        closed_trainer.keys[key] = job.job_id
    assert (job.model, job.label) == (model, label)
    # What the job will run: the registry's argv, the request's strings as whole items.
    argv = FAKE.argv(
        model=job.model,
        label=job.label,
        corpus=job.corpus,
        model_root="m",
        params={"epochs": job.hyperparameters.epochs, "threads": job.hyperparameters.threads},
    )
    assert argv[:3] == [argv[0], "-m", FAKE.module]
    assert argv[argv.index("--model") + 1] == model and argv[argv.index("--label") + 1] == label


def test_the_store_holds_exactly_the_accepted_starts(closed_trainer):
    listed = {
        j.job_id for j in closed_trainer.stub.List(trainer_pb2.ListRequest(limit=1000), timeout=10).jobs
    }
    assert listed == closed_trainer.accepted and len(listed) >= 3, len(listed)
    with sqlite3.connect(closed_trainer.service.config.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
