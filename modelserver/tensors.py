"""TensorProto <-> numpy, the way TensorFlow's ``Tensor::FromProto`` and
``Tensor::AsProtoField`` do it (no TensorFlow runtime needed).

Decoding follows TensorFlow, so a request means here what it means to TF
Serving:

- ``tensor_content`` (raw little-endian bytes) must hold exactly
  ``num_elements * itemsize`` bytes;
- otherwise the typed field (``float_val``, ``int_val`` ...) is read: fewer
  values than elements repeats the *last* value (one value broadcasts to the
  whole shape), no value at all gives zeros, extra values are ignored;
- a shape with unknown rank or a negative dimension does not parse.

Encoding writes the typed field (what TF Serving's Predict answers with);
``tf.make_ndarray`` and the Labeler's client read both forms.
"""

from __future__ import annotations

import math

import numpy as np

from tfserving.protos import tensor_pb2, types_pb2

# dtype -> (numpy dtype, typed field). int8/16 and uint8/16 travel in int_val,
# half in half_val as raw bit patterns, complex numbers as (re, im) pairs.
_CODECS: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
    types_pb2.DT_COMPLEX64: (np.dtype("<c8"), "scomplex_val"),
    types_pb2.DT_COMPLEX128: (np.dtype("<c16"), "dcomplex_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_DTYPE_OF_NUMPY = {
    np_dtype.newbyteorder("="): dt for dt, (np_dtype, _) in _CODECS.items() if dt != types_pb2.DT_STRING
}
_COMPONENT: dict[int, np.dtype] = {
    types_pb2.DT_COMPLEX64: np.dtype("<f4"),
    types_pb2.DT_COMPLEX128: np.dtype("<f8"),
}

_MAX_ELEMENTS = 2**48  # far beyond any real tensor, and within what numpy can describe
SUPPORTED_DTYPES = sorted(types_pb2.DataType.Name(dt) for dt in _CODECS)


class TensorParseError(ValueError):
    """A TensorProto that does not describe a tensor (TF Serving: "tensor parsing error")."""


def dtype_name(dtype: int) -> str:
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype a TF dtype decodes to; TensorParseError if unsupported."""
    codec = _CODECS.get(dtype)
    if codec is None:
        raise TensorParseError(
            f"dtype {dtype_name(dtype)} is not supported by labeler-modelserver "
            f"(supported: {', '.join(SUPPORTED_DTYPES)})"
        )
    return codec[0]


def _shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise TensorParseError("tensor_shape has unknown rank")
    dims = tuple(d.size for d in shape.dim)
    if any(d < 0 for d in dims):
        raise TensorParseError(f"tensor_shape {list(dims)} has a negative dimension")
    # Even an empty tensor ([0, 2**31, 2**31]) must have a shape numpy can hold.
    if math.prod(d for d in dims if d) > _MAX_ELEMENTS:
        raise TensorParseError(f"tensor_shape {list(dims)} has too many elements")
    return dims


def to_ndarray(proto: tensor_pb2.TensorProto, max_bytes: int) -> np.ndarray:
    """Decode one request tensor. ``max_bytes`` bounds what a few typed values
    with a huge shape may expand to (a request cannot make us allocate more)."""
    np_dtype = numpy_dtype(proto.dtype)
    shape = _shape(proto)
    n = math.prod(shape)
    if n * np_dtype.itemsize > max_bytes:
        raise TensorParseError(
            f"shape {list(shape)} of {dtype_name(proto.dtype)} is {n * np_dtype.itemsize} bytes, "
            f"over this server's limit of {max_bytes} bytes per tensor"
        )
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise TensorParseError("DT_STRING tensors must use string_val, not tensor_content")
        content = proto.tensor_content
        if len(content) != n * np_dtype.itemsize:
            raise TensorParseError(
                f"tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"{dtype_name(proto.dtype)} needs {n * np_dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    values = _typed_values(proto, np_dtype)
    if n == 0:
        return np.empty(shape, dtype=np_dtype)
    if values.size == 0:
        return np.full(shape, b"" if proto.dtype == types_pb2.DT_STRING else 0, dtype=np_dtype)
    if values.size >= n:
        return values[:n].reshape(shape)
    # TensorFlow's FromProtoField: the last value fills the remaining elements.
    out = np.empty(n, dtype=np_dtype)
    out[: values.size] = values
    out[values.size :] = values[-1]
    return out.reshape(shape)


def _typed_values(proto: tensor_pb2.TensorProto, np_dtype: np.dtype) -> np.ndarray:
    field = getattr(proto, _CODECS[proto.dtype][1])
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(field), dtype=object)
        values[:] = list(field)
        return values
    if proto.dtype == types_pb2.DT_HALF:
        return np.array(field, dtype="<u2").view(np_dtype)
    component = _COMPONENT.get(proto.dtype)
    if component is not None:
        return np.array(field[: len(field) // 2 * 2], dtype=component).view(np_dtype)
    return np.array(field, dtype=np_dtype)


def dtype_of(array: np.ndarray) -> int:
    """The TF dtype of a numpy array TensorFlow returned."""
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    dtype = _DTYPE_OF_NUMPY.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise TensorParseError(f"numpy dtype {array.dtype} has no TensorProto encoding here")
    return dtype


def from_ndarray(array: np.ndarray, proto: tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
    """Encode ``array`` into ``proto`` with the typed field (TF's AsProtoField)."""
    array = np.asarray(array)
    dtype = dtype_of(array)
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    field = getattr(proto, _CODECS[dtype][1])
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_STRING:
        field.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype == types_pb2.DT_HALF:
        field.extend(flat.astype("<f2").view("<u2").tolist())
    elif dtype in _COMPONENT:
        field.extend(flat.view(_COMPONENT[dtype]).tolist())
    else:
        field.extend(flat.tolist())
    return proto
