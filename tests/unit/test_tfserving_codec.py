"""tfserving.codec: TensorFlow's rules for TensorProto <-> numpy, without
TensorFlow (tests/conformance/test_tensors.py checks the same rules against
TensorFlow's own make_ndarray / make_tensor_proto)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rpc import errors
from tfserving import codec
from tfserving.protos import tensor_pb2, types_pb2

LIMIT = 1 << 20


def typed(dtype: int, field: str, values: list, shape: list[int]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    getattr(proto, field).extend(values)
    return proto


# -- the fill rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,shape,expected",
    [
        ([7], [2, 3], [[7, 7, 7], [7, 7, 7]]),  # one value fills the shape
        ([1, 2], [5], [1, 2, 2, 2, 2]),  # fewer values: the last one repeats
        ([1, 2, 3, 4], [2], [1, 2]),  # extra values are ignored
        ([], [2, 2], [[0, 0], [0, 0]]),  # none: zeros
        ([5], [], 5),  # a scalar
        ([], [0, 3], np.empty((0, 3), np.int32)),  # no elements
    ],
)
def test_typed_values_fill_the_shape_with_the_last_value(values, shape, expected):
    array = codec.to_ndarray(typed(types_pb2.DT_INT32, "int_val", values, shape), LIMIT)
    assert array.dtype == np.int32 and array.shape == tuple(shape)
    np.testing.assert_array_equal(array, expected)


def test_fill_rule_holds_for_halves_strings_and_complex_numbers():
    halves = typed(types_pb2.DT_HALF, "half_val", np.array([0.5, 1.5], "<f2").view("<u2").tolist(), [4])
    np.testing.assert_array_equal(codec.to_ndarray(halves, LIMIT), np.array([0.5, 1.5, 1.5, 1.5], "<f2"))
    strings = typed(types_pb2.DT_STRING, "string_val", [b"a", b"b"], [3])
    assert codec.to_ndarray(strings, LIMIT).tolist() == [b"a", b"b", b"b"]
    assert codec.to_ndarray(typed(types_pb2.DT_STRING, "string_val", [], [2]), LIMIT).tolist() == [b"", b""]
    # complex values are (re, im) pairs; the last pair repeats
    pairs = typed(types_pb2.DT_COMPLEX64, "scomplex_val", [1.0, 2.0, 3.0, 4.0], [3])
    assert codec.to_ndarray(pairs, LIMIT).tolist() == [1 + 2j, 3 + 4j, 3 + 4j]


def test_tensor_content_is_raw_little_endian_and_must_be_exact():
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_INT32, tensor_content=np.array([1, 258], "<i4").tobytes()
    )
    proto.tensor_shape.dim.add(size=2)
    assert codec.to_ndarray(proto, LIMIT).tolist() == [1, 258]
    proto.tensor_shape.dim[0].size = 3  # no fill rule for raw bytes
    with pytest.raises(
        codec.TensorParseError, match="tensor_content has 8 bytes but shape \\[3\\] of DT_INT32 needs 12"
    ):
        codec.to_ndarray(proto, LIMIT)


# -- encoding -----------------------------------------------------------------------


@given(
    hnp.arrays(
        st.sampled_from(
            [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint16, np.bool_]
        ),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_encoding_round_trips_in_both_forms(array, raw):
    proto = codec.from_ndarray(array, raw=raw)
    assert bool(proto.tensor_content) == (raw and array.size > 0)
    decoded = codec.to_ndarray(proto, LIMIT)
    assert decoded.shape == array.shape and decoded.dtype == array.dtype.newbyteorder("<")
    np.testing.assert_array_equal(decoded, array)


def test_raw_encoding_is_little_endian_whatever_the_arrays_byte_order():
    big = np.array([1, 2], dtype=">i4")
    proto = codec.from_ndarray(big, raw=True)
    assert proto.dtype == types_pb2.DT_INT32 and proto.tensor_content == np.array([1, 2], "<i4").tobytes()


def test_encoding_fills_a_given_proto_and_strings_use_string_val():
    request = tensor_pb2.TensorProto()
    assert codec.from_ndarray(np.array([["a", "历"]]), request) is request
    assert request.dtype == types_pb2.DT_STRING and list(request.string_val) == [b"a", "历".encode()]
    assert [d.size for d in request.tensor_shape.dim] == [1, 2]


# -- errors: rpc.errors classes -------------------------------------------------------


@pytest.mark.parametrize(
    "proto,message",
    [
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_BFLOAT16),
            r"dtype DT_BFLOAT16 is not supported \(supported: DT_BOOL, ",
        ),
        (tensor_pb2.TensorProto(dtype=77), "dtype 77 is not supported"),
        (typed(types_pb2.DT_FLOAT, "float_val", [1.0], [-1]), "has a negative dimension"),
        (
            typed(types_pb2.DT_FLOAT, "float_val", [1.0], [1 << 20]),
            "over this server's limit of 1048576 bytes",
        ),
        (typed(types_pb2.DT_FLOAT, "float_val", [], [1 << 30, 1 << 30]), "has too many elements"),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"ab"), "must use string_val"),
    ],
)
def test_malformed_tensors_raise_invalid_argument(proto, message):
    with pytest.raises(codec.TensorParseError, match=message) as info:
        codec.to_ndarray(proto, LIMIT)
    assert isinstance(info.value, errors.InvalidArgument) and info.value.code == "INVALID_ARGUMENT"


def test_unknown_rank_does_not_parse():
    proto = typed(types_pb2.DT_FLOAT, "float_val", [1.0], [1])
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(codec.TensorParseError, match="unknown rank"):
        codec.to_ndarray(proto, LIMIT)


def test_arrays_without_an_encoding_raise_internal():
    with pytest.raises(codec.TensorEncodeError, match="numpy dtype datetime64") as info:
        codec.from_ndarray(np.array(["2026-01-01"], dtype="datetime64[D]"))
    assert isinstance(info.value, errors.Internal)
    untouched = tensor_pb2.TensorProto()
    with pytest.raises(codec.TensorEncodeError, match="no tensor_content encoding"):
        codec.from_ndarray(np.array(["a"]), untouched, raw=True)
    assert untouched == tensor_pb2.TensorProto(), "a failed encoding leaves the proto as it was"
