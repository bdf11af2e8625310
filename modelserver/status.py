"""Domain errors for every status code TF Serving answers with.

rpc.errors covers the usual codes; TF Serving also uses UNKNOWN (a reload
whose models did not become available) and UNIMPLEMENTED, and TensorFlow's own
errors carry any code. ``error(code, message)`` builds the matching
ServiceError so the shared ErrorMappingInterceptor maps it unchanged.
"""

from __future__ import annotations

from rpc import errors


class Unknown(errors.ServiceError):
    code = "UNKNOWN"


class Unimplemented(errors.ServiceError):
    code = "UNIMPLEMENTED"


class Cancelled(errors.ServiceError):
    code = "CANCELLED"


class PermissionDenied(errors.ServiceError):
    code = "PERMISSION_DENIED"


class Aborted(errors.ServiceError):
    code = "ABORTED"


class OutOfRange(errors.ServiceError):
    code = "OUT_OF_RANGE"


class DataLoss(errors.ServiceError):
    code = "DATA_LOSS"


_BY_CODE: dict[str, type[errors.ServiceError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.DeadlineExceeded,
        errors.Unauthenticated,
        errors.Internal,
        Unknown,
        Unimplemented,
        Cancelled,
        PermissionDenied,
        Aborted,
        OutOfRange,
        DataLoss,
    )
}

# tensorflow.error.Code numbers (the same as gRPC's) by name, for StatusProto.
CODE_NUMBERS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_NAMES = {number: name for name, number in CODE_NUMBERS.items()}


SHOWN_CHARS = 256


def shown(text: str) -> str:
    """Request text as echoed in an error message: long names are cut, so a
    hostile 10 KB name is not sent back whole (normal names are unchanged)."""
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}...({len(text)} characters)"


def error(code: str | int, message: str) -> errors.ServiceError:
    """A ServiceError for a status code given by name or number."""
    name = _NAMES.get(code, "UNKNOWN") if isinstance(code, int) else code
    return _BY_CODE.get(name, Unknown)(message)
