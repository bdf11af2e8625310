"""Domain errors and the one status table. The core raises these; one
interceptor maps them to gRPC status codes (rpc.server.ErrorMappingInterceptor),
so the core knows nothing of gRPC.

``STATUS_NUMBERS`` is the only place a status name becomes a code: gRPC's
codes (rpc.server), TensorFlow's ``error.Code`` in TF Serving's StatusProto
(the same numbers), and a code name carried in a reply (the Labeler's
failures) all read it. Messages say what is wrong and how to fix it: they
reach the caller verbatim.
"""

from __future__ import annotations

from typing import ClassVar

# gRPC status code numbers by name (tensorflow.error.Code uses the same numbers).
STATUS_NUMBERS: dict[str, int] = {
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
STATUS_NAMES: dict[int, str] = {number: name for name, number in STATUS_NUMBERS.items()}


def status_number(name: str) -> int:
    """The code number of a status name; an unknown name is UNKNOWN (2)."""
    return STATUS_NUMBERS.get(name, STATUS_NUMBERS["UNKNOWN"])


class ServiceError(Exception):
    """Base of the errors a caller may see; ``code`` names a status code."""

    code: ClassVar[str] = "INTERNAL"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code not in STATUS_NUMBERS or cls.code == "OK":
            raise TypeError(f"{cls.__name__}.code must name an error status, got {cls.code!r}")


class Cancelled(ServiceError):
    code = "CANCELLED"


class Unknown(ServiceError):
    code = "UNKNOWN"


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(ServiceError):
    """Too much work: ``retry_pushback_ms`` (if set) tells a client with a
    retry policy when to try again (gRFC A6's ``grpc-retry-pushback-ms``
    trailer; a negative value: do not retry)."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_pushback_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_pushback_ms = retry_pushback_ms


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    code = "ABORTED"


class OutOfRange(ServiceError):
    code = "OUT_OF_RANGE"


class Unimplemented(ServiceError):
    code = "UNIMPLEMENTED"


class Internal(ServiceError):
    code = "INTERNAL"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DataLoss(ServiceError):
    code = "DATA_LOSS"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


_BY_NAME: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error(code: str | int, message: str) -> ServiceError:
    """The ServiceError for a status code given by name or number (a
    TensorFlow error's code, say); anything unknown (or OK) is UNKNOWN."""
    name = STATUS_NAMES.get(code, "UNKNOWN") if isinstance(code, int) else code
    return _BY_NAME.get(name, Unknown)(message)


# Text from a request echoed in a message is cut to this many characters: a
# caller's 10 KB name must not push the explanation out of the status message.
SHOWN_CHARS = 128


def shown(text: str, *, quoted: bool = True) -> str:
    """Request text as echoed in an error message: ``repr`` (so control
    characters show), or as is with ``quoted=False`` (for TF Serving's exact
    wording); cut to SHOWN_CHARS with a note of the full length."""
    cut = text[:SHOWN_CHARS]
    body = repr(cut) if quoted else cut
    return body if len(text) <= SHOWN_CHARS else f"{body}...({len(text)} characters)"
