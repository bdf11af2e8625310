"""TensorProto <-> numpy with TensorFlow's rules (``Tensor::FromProto``,
``tensor_util.MakeNdarray``, ``Tensor::AsProtoField``), without the TensorFlow
runtime. The one codec: the Labeler's client and the model server both use it,
so a tensor means the same on either side of the wire and at TF Serving.

Decoding (``to_ndarray``):

- ``tensor_content`` (raw little-endian bytes) must hold exactly
  ``num_elements * itemsize`` bytes;
- otherwise the typed field (``float_val``, ``int_val`` ...) is read: fewer
  values than elements repeats the *last* value (so one value fills the
  whole shape), no value at all gives zeros (empty strings), extra values are
  ignored;
- a shape with unknown rank or a negative dimension does not parse.

Encoding (``from_ndarray``) writes the typed field, as TF Serving's Predict
answers, or with ``raw=True`` dtype, shape and ``tensor_content`` only (the
cheap form for large requests: no per-value protobuf work on either side).

Errors are ``rpc.errors`` classes: ``TensorParseError`` (INVALID_ARGUMENT: the
proto describes no tensor) and ``TensorEncodeError`` (INTERNAL: an array this
codec cannot put in a TensorProto).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from rpc import errors
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
_DTYPE_OF_NUMPY: dict[np.dtype, int] = {
    np_dtype.newbyteorder("="): dt for dt, (np_dtype, _) in _CODECS.items() if dt != types_pb2.DT_STRING
}
_COMPONENT: dict[int, np.dtype] = {
    types_pb2.DT_COMPLEX64: np.dtype("<f4"),
    types_pb2.DT_COMPLEX128: np.dtype("<f8"),
}

_MAX_ELEMENTS = 2**48  # far beyond any real tensor, and within what numpy can describe
SUPPORTED_DTYPES = sorted(types_pb2.DataType.Name(dt) for dt in _CODECS)


class TensorParseError(errors.InvalidArgument):
    """A TensorProto that does not describe a tensor (TF Serving: "tensor parsing error")."""


class TensorEncodeError(errors.Internal):
    """A numpy array that has no TensorProto encoding here."""


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` for 1; the number itself for a value the enum lacks."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype a TF dtype decodes to; TensorParseError if unsupported."""
    codec = _CODECS.get(dtype)
    if codec is None:
        raise TensorParseError(
            f"dtype {dtype_name(dtype)} is not supported (supported: {', '.join(SUPPORTED_DTYPES)})"
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
    """Decode one tensor. ``max_bytes`` bounds what a few typed values with a
    huge shape may expand to (a message cannot make us allocate more)."""
    np_dtype = numpy_dtype(proto.dtype)
    shape = _shape(proto)
    n = math.prod(shape)  # 1 for a scalar; np.prod costs ~5 µs a call
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
    # fromiter reads the repeated field directly: np.array(field) first probes
    # it for the array and buffer protocols, several times the cost for the
    # one-value answers a label model sends back on every call.
    return np.fromiter(field, dtype=np_dtype, count=len(field))


def dtype_of(array: np.ndarray) -> int:
    """The TF dtype of a numpy array; TensorEncodeError if it has none."""
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    dtype = _DTYPE_OF_NUMPY.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise TensorEncodeError(f"numpy dtype {array.dtype} has no TensorProto encoding here")
    return dtype


def from_ndarray(
    array: np.ndarray, proto: tensor_pb2.TensorProto | None = None, *, raw: bool = False
) -> tensor_pb2.TensorProto:
    """Encode ``array`` into ``proto`` (a new one if None) and return it: the
    typed field (TF's AsProtoField), or with ``raw`` little-endian
    ``tensor_content`` (not for strings, which have no raw form)."""
    array = np.asarray(array)
    dtype = dtype_of(array)
    if raw and dtype == types_pb2.DT_STRING:
        raise TensorEncodeError(f"numpy dtype {array.dtype} (DT_STRING) has no tensor_content encoding")
    if proto is None:
        proto = tensor_pb2.TensorProto()
    proto.dtype = cast("types_pb2.DataType", dtype)  # an int in _CODECS; the stub wants the enum
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if raw:
        proto.tensor_content = np.ascontiguousarray(array, dtype=_CODECS[dtype][0]).tobytes()
        return proto
    field = getattr(proto, _CODECS[dtype][1])
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_STRING:
        field.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype == types_pb2.DT_HALF:
        field.extend(flat.astype("<f2").view("<u2").tolist())
    elif dtype in _COMPONENT:
        field.extend(flat.astype(_CODECS[dtype][0]).view(_COMPONENT[dtype]).tolist())
    else:
        field.extend(flat.tolist())
    return proto
