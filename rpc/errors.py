"""Domain errors. The core raises these; one interceptor maps them to gRPC status
codes (rpc.server.ErrorMappingInterceptor), so the core knows nothing of gRPC.

Messages say what is wrong and how to fix it: they reach the caller verbatim.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors a caller may see; ``code`` names a gRPC status code."""

    code = "INTERNAL"


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """Too much work: ``retry_pushback_ms`` (if set) tells a client with a
    retry policy when to try again (gRFC A6's ``grpc-retry-pushback-ms``
    trailer; a negative value: do not retry)."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_pushback_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_pushback_ms = retry_pushback_ms


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class Internal(ServiceError):
    code = "INTERNAL"


def shown(value: str, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a caller's
    10 KB name must not push the explanation out of the status message."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"
