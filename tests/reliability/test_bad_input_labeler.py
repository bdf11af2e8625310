"""Malformed and hostile requests to a real ``labeler serve`` process (TLS,
bearer token, 8 MiB message limit, default request limits) in front of a real
model server: each gets a clear status whose message names the problem, and
the very next normal request is answered with every label."""

from __future__ import annotations

import math

import grpc
import pytest

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from tests.reliability.conftest import LABELER_MAX_MESSAGE_BYTES
from tests.support.labeler_support import EXAMPLE

pytestmark = pytest.mark.timeout(180)

CODE = grpc.StatusCode
ALL_LABELS = {"影视", "美妆", "明星", "时尚"}
MB = 1024 * 1024


def doc(words) -> labeler_pb2.Document:
    return labeler_pb2.Document(words=words)


def classify(**fields):
    return ("Classify", labeler_pb2.ClassifyRequest(**fields))


def batch(documents, **fields):
    return ("ClassifyBatch", labeler_pb2.ClassifyBatchRequest(documents=documents, **fields))


# name -> ((method, request), status code, what the message must say)
REJECTED = {
    "empty word list": (classify(words=[]), CODE.INVALID_ARGUMENT, "words is empty"),
    "10,001 words": (
        classify(words=["电影"] * 10_001),
        CODE.INVALID_ARGUMENT,
        "words has 10001 words; at most 10000 are allowed",
    ),
    "a million words": (
        classify(words=["的"] * 1_000_000),
        CODE.INVALID_ARGUMENT,
        "words has 1000000 words; at most 10000",
    ),
    "a word of 1 MB": (
        classify(words=["电影", "x" * MB]),
        CODE.INVALID_ARGUMENT,
        f"words[1] is {MB} bytes long; a word may have at most 1024 UTF-8 bytes",
    ),
    "a word of 1025 bytes": (
        classify(words=["é" * 512 + "x"]),
        CODE.INVALID_ARGUMENT,
        "words[0] is 1025 bytes",
    ),
    "unknown label": (
        classify(words=EXAMPLE, labels=["体育"]),
        CODE.INVALID_ARGUMENT,
        "unknown label '体育'; known labels: 影视, 美妆, 明星, 时尚",
    ),
    "label with a NUL": (
        classify(words=EXAMPLE, labels=["影视\x00"]),
        CODE.INVALID_ARGUMENT,
        "unknown label '影视\\x00'",
    ),
    "label of 10 KB": (classify(words=EXAMPLE, labels=["影" * 3400]), CODE.INVALID_ARGUMENT, "unknown label"),
    "known and unknown labels": (
        classify(words=EXAMPLE, labels=["影视", "x", "y"]),
        CODE.INVALID_ARGUMENT,
        "unknown labels 'x', 'y'",
    ),
    "threshold NaN": (
        classify(words=EXAMPLE, threshold=math.nan),
        CODE.INVALID_ARGUMENT,
        "threshold must be within [0, 1], got nan",
    ),
    "threshold +inf": (classify(words=EXAMPLE, threshold=math.inf), CODE.INVALID_ARGUMENT, "got inf"),
    "threshold -inf": (classify(words=EXAMPLE, threshold=-math.inf), CODE.INVALID_ARGUMENT, "got -inf"),
    "threshold negative": (classify(words=EXAMPLE, threshold=-0.25), CODE.INVALID_ARGUMENT, "got -0.25"),
    "threshold above 1": (classify(words=EXAMPLE, threshold=1.5), CODE.INVALID_ARGUMENT, "got 1.5"),
    "request over the message limit": (
        classify(words=["x" * (3 * MB)] * 3),
        CODE.RESOURCE_EXHAUSTED,
        f"Received message larger than max (9437199 vs. {LABELER_MAX_MESSAGE_BYTES})",
    ),
    "batch without documents": (batch([]), CODE.INVALID_ARGUMENT, "documents is empty"),
    "batch of 100,000 documents": (
        batch([doc(["电影"])] * 100_000),
        CODE.INVALID_ARGUMENT,
        "documents has 100000 documents; at most 1024 are allowed",
    ),
    "batch of 1,025 documents": (batch([doc(["电影"])] * 1025), CODE.INVALID_ARGUMENT, "at most 1024"),
    "batch with an empty document": (
        batch([doc(EXAMPLE), doc([])]),
        CODE.INVALID_ARGUMENT,
        "documents[1].words is empty",
    ),
    "batch with a 1 MB word": (
        batch([doc(EXAMPLE), doc(EXAMPLE), doc(["y" * MB])]),
        CODE.INVALID_ARGUMENT,
        "documents[2].words[0] is 1048576 bytes long",
    ),
    "batch with 10,001 words": (
        batch([doc(["的"] * 10_001)]),
        CODE.INVALID_ARGUMENT,
        "documents[0].words has 10001 words",
    ),
    "batch threshold NaN": (batch([doc(EXAMPLE)], threshold=math.nan), CODE.INVALID_ARGUMENT, "got nan"),
    "batch unknown label": (
        batch([doc(EXAMPLE)], labels=["../../etc"]),
        CODE.INVALID_ARGUMENT,
        "unknown label '../../etc'",
    ),
}

# Raw bytes no client library would send.
RAW_REJECTED = {
    "corrupt wire format": (
        "/labeler.v1.Labeler/Classify",
        b"\x0a\x05ab",
        CODE.INVALID_ARGUMENT,
        "could not be parsed (Error parsing message with type 'labeler.v1.ClassifyRequest'",
    ),
    "bad UTF-8 in a word": (
        "/labeler.v1.Labeler/Classify",
        b"\x0a\x02\xff\xfe",
        CODE.INVALID_ARGUMENT,
        "could not be parsed",
    ),
    "garbage to ListLabels": (
        "/labeler.v1.Labeler/ListLabels",
        b"\xff\xff\xff",
        CODE.INVALID_ARGUMENT,
        "could not be parsed",
    ),
    "garbage to ClassifyBatch": (
        "/labeler.v1.Labeler/ClassifyBatch",
        b"\x0a\xff\xff\xff\xff\x0f",
        CODE.INVALID_ARGUMENT,
        "could not be parsed",
    ),
    "unknown method": ("/labeler.v1.Labeler/Train", b"", CODE.UNIMPLEMENTED, "Method not found"),
}


@pytest.fixture(scope="module")
def channel(secure_stack):
    with secure_stack.labeler_channel() as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel) -> labeler_pb2_grpc.LabelerStub:
    return labeler_pb2_grpc.LabelerStub(channel)


def assert_still_serving(stub: labeler_pb2_grpc.LabelerStub) -> None:
    reply = stub.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=30)
    assert {s.label for s in reply.labels} == ALL_LABELS and not reply.failures
    assert max(reply.labels, key=lambda s: s.probability).label == "影视"


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_with_a_clear_status_and_the_server_keeps_serving(stub, case):
    (method, request), code, says = REJECTED[case]
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    assert says in err.value.details()
    assert_still_serving(stub)


@pytest.mark.parametrize("case", list(RAW_REJECTED))
def test_undecodable_requests_are_invalid_argument_not_unknown(channel, stub, case):
    method, payload, code, says = RAW_REJECTED[case]
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(method)(payload, timeout=30)
    assert err.value.code() == code, err.value.details()
    assert says in err.value.details()
    assert_still_serving(stub)


def test_unknown_fields_are_ignored(channel, stub):
    # Field 1 of ListLabelsRequest does not exist (yet): proto3 skips it.
    reply = labeler_pb2.ListLabelsResponse.FromString(
        channel.unary_unary("/labeler.v1.Labeler/ListLabels")(b"\x0a\x03abc\x10\x07", timeout=30)
    )
    assert [i.label for i in reply.labels] == ["影视", "美妆", "明星", "时尚"]


@pytest.mark.parametrize("call", ["Classify", "ClassifyBatch"])
def test_a_1_ms_deadline_is_deadline_exceeded(stub, call):
    if call == "Classify":
        request = labeler_pb2.ClassifyRequest(words=EXAMPLE)
    else:
        request = labeler_pb2.ClassifyBatchRequest(documents=[doc(EXAMPLE * 20)] * 1024)
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, call)(request, timeout=0.001)
        # The client's timer or the server's answer: either way it is the
        # caller's deadline, never UNAVAILABLE (which clients retry).
        assert err.value.code() == CODE.DEADLINE_EXCEEDED, err.value.details()
    assert_still_serving(stub)


def scores(reply) -> dict[str, float]:
    assert not reply.failures
    for s in reply.labels:
        assert 0.0 <= s.probability <= 1.0 and s.model_version > 0
    return {s.label: s.probability for s in reply.labels}


ANSWERED = {
    "non-printing words": ["\x00", "\u200b", "\x1b[31m", "\ufeff", "\r\n", "\t", "\x7f"],
    "mixed-script words": ["霸王别姬", "movie", "фильм", "فيلم", "🎬", "e\u0301", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"],
    "empty-string words": [""] * 50,
    "only unknown words": ["zzz"] * 10_000,  # the largest document allowed
    "words of exactly 1024 bytes": ["电" * 341 + "x"] * 3,
}


@pytest.mark.parametrize("case", list(ANSWERED))
def test_odd_but_valid_words_are_answered_with_every_label(stub, case):
    reply = stub.Classify(labeler_pb2.ClassifyRequest(words=ANSWERED[case], threshold=0), timeout=30)
    assert set(scores(reply)) == ALL_LABELS
    assert_still_serving(stub)


def test_duplicate_labels_are_scored_once(stub):
    reply = stub.Classify(
        labeler_pb2.ClassifyRequest(words=EXAMPLE, labels=["影视", "美妆", "影视", "影视"], threshold=0),
        timeout=30,
    )
    assert sorted(s.label for s in reply.labels) == ["影视", "美妆"]


def test_threshold_edges_and_the_largest_batch_are_answered(stub):
    everything = scores(stub.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0.0), timeout=30))
    assert set(everything) == ALL_LABELS
    assert scores(stub.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=1.0), timeout=30)) == {}
    reply = stub.ClassifyBatch(
        labeler_pb2.ClassifyBatchRequest(documents=[doc(EXAMPLE)] * 1024, threshold=0), timeout=60
    )
    assert len(reply.results) == 1024 and not reply.failures
    assert {s.label for s in reply.results[-1].labels} == ALL_LABELS
