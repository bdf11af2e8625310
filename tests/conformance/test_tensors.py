"""Tensor decoding/encoding against TensorFlow's own implementation
(tf.make_tensor_proto / tf.make_ndarray), for every dtype the server reads."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfserving import codec

LIMIT = 1 << 20

VALUES = {
    types_pb2.DT_FLOAT: np.array([1.5, -2.25, 3.0], np.float32),
    types_pb2.DT_DOUBLE: np.array([1.5, -2.25, 1e300], np.float64),
    types_pb2.DT_HALF: np.array([1.5, -2.25, 3.0], np.float16),
    types_pb2.DT_INT8: np.array([1, -2, 127], np.int8),
    types_pb2.DT_INT16: np.array([1, -2, 32767], np.int16),
    types_pb2.DT_INT32: np.array([1, -2, 2**31 - 1], np.int32),
    types_pb2.DT_INT64: np.array([1, -2, 2**62], np.int64),
    types_pb2.DT_UINT8: np.array([1, 2, 255], np.uint8),
    types_pb2.DT_UINT16: np.array([1, 2, 65535], np.uint16),
    types_pb2.DT_UINT32: np.array([1, 2, 2**32 - 1], np.uint32),
    types_pb2.DT_UINT64: np.array([1, 2, 2**64 - 1], np.uint64),
    types_pb2.DT_BOOL: np.array([True, False, True]),
    types_pb2.DT_COMPLEX64: np.array([1 + 2j, -3j, 4], np.complex64),
    types_pb2.DT_COMPLEX128: np.array([1 + 2j, -3j, 4], np.complex128),
    types_pb2.DT_STRING: np.array([b"a", "历史".encode(), b""], object),
}
FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}
IDS = [types_pb2.DataType.Name(d) for d in VALUES]


def typed(dtype: int, values, shape) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    if dtype == types_pb2.DT_HALF:
        proto.half_val.extend(np.asarray(values, np.float16).view(np.uint16).tolist())
    elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        field = proto.scomplex_val if dtype == types_pb2.DT_COMPLEX64 else proto.dcomplex_val
        field.extend(
            np.asarray(values).view(np.float32 if dtype == types_pb2.DT_COMPLEX64 else np.float64).tolist()
        )
    else:
        values = list(values) if dtype == types_pb2.DT_STRING else np.asarray(values).tolist()
        getattr(proto, FIELD[dtype]).extend(values)
    return proto


def assert_same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype or (ours.dtype == object and theirs.dtype == object)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("dtype", VALUES, ids=IDS)
def test_make_tensor_proto_decodes_as_tensorflow_does(dtype):
    values = VALUES[dtype].reshape(3, 1)
    proto = tf.make_tensor_proto(values)
    assert_same(codec.to_ndarray(proto, LIMIT), tf.make_ndarray(proto))


@pytest.mark.parametrize("dtype", VALUES, ids=IDS)
@pytest.mark.parametrize(
    "count,shape", [(3, [3]), (3, [1, 3]), (1, [2, 3]), (2, [5]), (0, [2, 2]), (0, [0, 4])]
)
def test_typed_fields_fill_like_tensorflow(dtype, count, shape):
    """Fewer values than elements repeat the last one; none gives zeros."""
    proto = typed(dtype, VALUES[dtype][:count], shape)
    expected = tf.make_ndarray(proto)
    if dtype == types_pb2.DT_STRING and count == 0:
        # TensorFlow (C++) fills empty strings; Python's make_ndarray gives ''.
        expected = np.full(shape, b"", dtype=object)
    assert_same(codec.to_ndarray(proto, LIMIT), expected)


@pytest.mark.parametrize("dtype", VALUES, ids=IDS)
def test_encoding_round_trips_through_tensorflow(dtype):
    array = VALUES[dtype].reshape(1, 3)
    proto = codec.from_ndarray(array, tensor_pb2.TensorProto())
    assert proto.dtype == dtype and not proto.tensor_content  # typed field, as TF Serving answers
    assert_same(tf.make_ndarray(proto), array)


def test_extra_typed_values_are_ignored_as_in_tensorflow_cpp():
    proto = typed(types_pb2.DT_FLOAT, [1.0, 2.0, 3.0], [2])
    assert codec.to_ndarray(proto, LIMIT).tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda p: setattr(p, "tensor_content", b"\0" * 5), "tensor_content has 5 bytes"),
        (lambda p: p.tensor_shape.dim.add(size=-1), "negative dimension"),
        (lambda p: setattr(p.tensor_shape, "unknown_rank", True), "unknown rank"),
        (lambda p: setattr(p, "dtype", types_pb2.DT_BFLOAT16), "DT_BFLOAT16 is not supported"),
        (lambda p: p.tensor_shape.dim.add(size=1 << 40), "over this server's limit"),
    ],
)
def test_malformed_tensors_do_not_parse(mutate, reason):
    proto = typed(types_pb2.DT_FLOAT, [1.0], [1])
    mutate(proto)
    with pytest.raises(codec.TensorParseError, match=reason):
        codec.to_ndarray(proto, LIMIT)
