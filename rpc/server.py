"""gRPC plumbing shared by the three servers: error mapping, standard services,
server construction, the started-server handle and graceful shutdown.

Servicers stay thin (proto -> domain -> proto); everything here is the same for
the Labeler, the Trainer and the model server. Each app's ``create_server``
calls ``start_server`` and returns its ``ServerHandle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rpc import errors
from rpc.addresses import host_port
from rpc.security import DEFAULT_MAX_MESSAGE_BYTES, ServerSecurity

log = logging.getLogger(__name__)


def message_size_options(max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Channel/server options raising gRPC's 4 MiB receive limit to ``max_bytes``."""
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
    ]


# Messages echo what the caller sent (a 10 KB label, say). gRPC percent-encodes
# the message into a header (a CJK character takes 9 bytes) and a client drops
# headers over 8 KiB: it would see RESOURCE_EXHAUSTED "Stream removed" instead
# of the error. Keep the encoded message within this many bytes.
MAX_STATUS_MESSAGE_BYTES = 4096


def _encoded_size(char: str) -> int:
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", errors="replace"))


def status_message(error: BaseException) -> str:
    """The error's message, cut to fit in a status header."""
    text = str(error)
    size = 0
    for i, char in enumerate(text):
        size += _encoded_size(char)
        if size > MAX_STATUS_MESSAGE_BYTES - 64:  # room for the note below
            return text[:i] + f" ... ({len(text) - i} more characters cut)"
    return text


_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(error: errors.ServiceError) -> grpc.StatusCode:
    """The gRPC code of a domain error, through rpc.errors' one table."""
    return _GRPC_CODES[errors.status_number(error.code)]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain errors into status codes; anything else into INTERNAL.

    An unexpected exception is logged with a request id, and only that id
    reaches the caller, so internals never leak and the log can be searched.
    A request that does not parse (corrupt bytes, bad UTF-8) is
    INVALID_ARGUMENT, not gRPC's UNKNOWN with a traceback in the log.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                try:
                    _check_parsed(request, method)
                    return await inner(request, context)
                except Exception as exc:  # noqa: BLE001 - mapped below
                    await _abort(context, method, exc)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def unary_stream(request, context):
                try:
                    _check_parsed(request, method)
                    stream = inner_stream(request, context)
                    if inspect.isawaitable(
                        stream
                    ):  # a handler that answers with context.write (health Watch)
                        await stream
                        return
                    async for item in stream:
                        yield item
                except Exception as exc:  # noqa: BLE001 - mapped below
                    await _abort(context, method, exc)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


class _Unparsed:
    """What a request that failed to parse becomes, so the handler can answer it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, bad UTF-8: answered by _check_parsed
            return _Unparsed(exc)

    return deserialize


def _check_parsed(request: object, method: str) -> None:
    if isinstance(request, _Unparsed):
        raise errors.InvalidArgument(
            f"the request to {method} could not be parsed ({request.error}); send a serialized request "
            "message of the method's type"
        )


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    # context.abort raises an AbortError; let it through untouched.
    if isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError":
        raise exc
    if isinstance(exc, errors.ServiceError):
        await context.abort(status_code(exc), status_message(exc), _pushback_trailer(exc))
    request_id = uuid.uuid4().hex[:12]
    log.exception("%s failed unexpectedly (request id %s)", method, request_id)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (request id {request_id}); the server log has the details",
    )


# gRFC A6: a client's retry policy waits this many ms before its next attempt.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def _pushback_trailer(exc: errors.ServiceError) -> tuple[tuple[str, str], ...]:
    pushback = getattr(exc, "retry_pushback_ms", None)
    return () if pushback is None else ((RETRY_PUSHBACK_KEY, str(int(pushback))),)


# A health "service" that is SERVING whenever the process answers at all, for
# liveness probes (Kubernetes `grpc: {port: ..., service: liveness}`): "" and the
# real services go NOT_SERVING while a dependency is down, which must make a pod
# unready, never get it restarted.
LIVENESS_SERVICE = "liveness"


class StandardServices:
    """Health and reflection, registered on a server beside its own services."""

    def __init__(self, server: grpc.aio.Server, service_names: Sequence[str]) -> None:
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )

    async def set_serving(self, serving: bool) -> None:
        """Mark the whole server ("") and each service SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self) -> None:
        await self.health.enter_graceful_shutdown()


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Once ``draining``, answers new calls (health checks excepted) with
    UNAVAILABLE before any handler runs: a retrying client goes to another
    replica, and calls already queued are answered rather than cut off when
    the server stops."""

    def __init__(self) -> None:
        self.draining = False

    async def intercept_service(self, continuation, handler_call_details):
        if self.draining and not handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return _REFUSE_WHILE_DRAINING
        return await continuation(handler_call_details)


async def _refuse(request, context):
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry (another replica)")


_REFUSE_WHILE_DRAINING = grpc.unary_unary_rpc_method_handler(_refuse)
# How long a stopping server refuses new calls before it stops: long enough for
# calls already queued in gRPC to reach it and be answered.
REFUSE_BEFORE_STOP_S = 0.2


# Each port has one server: gRPC turns SO_REUSEPORT on by default, so a second
# server on a taken port would start without error and the kernel would split
# connections between the two.
ONE_SERVER_PER_PORT = ("grpc.so_reuseport", 0)


# A port shared by the worker processes of one server (``labeler serve
# --workers N``): the kernel spreads connections over them. Only for servers
# whose parent process holds the port against others (labeler.workers).
SHARED_PORT = ("grpc.so_reuseport", 1)


def new_server(
    drain: DrainInterceptor,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, object]] = (),
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    front: Sequence[grpc.aio.ServerInterceptor] = (),
    shared_port: bool = False,
) -> grpc.aio.Server:
    """An aio server with the production interceptors (``front`` first: what
    must run before anything else, such as admission; then ``drain``; error
    mapping last, so it sees the servicer's exceptions first), raised message
    limits and a port of its own (shared with its sibling workers when
    ``shared_port``)."""
    return grpc.aio.server(
        interceptors=[*front, drain, *interceptors, ErrorMappingInterceptor()],
        options=[
            *message_size_options(max_message_bytes),
            SHARED_PORT if shared_port else ONE_SERVER_PER_PORT,
            *options,
        ],
    )


class PortInUse(OSError):
    """The address could not be bound: another process (often another copy of
    this server) holds the port, or the host is not an address of this machine."""


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Bind ``host:port`` (port 0 picks a free one); returns the bound port."""
    try:
        port = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError:  # gRPC's "Failed to bind to address ..."
        port = 0
    if port == 0:
        raise PortInUse(
            f"cannot listen on {address}: the port is in use (is another server already running "
            "there?) or the host is not an address of this machine; stop the other server or "
            "choose another --port"
        )
    return port


App = TypeVar("App")


def close_once(close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``close`` run at most once; later calls wait for that one run."""
    task: asyncio.Future[None] | None = None

    async def run() -> None:
        nonlocal task
        if task is None:
            task = asyncio.ensure_future(close())
        await asyncio.shield(task)

    return run


@dataclasses.dataclass(frozen=True)
class ServerHandle(Generic[App]):
    """A started server: what every ``create_server`` returns.

    ``app`` is the app object behind the servicers (the Labeler's LabelerApp,
    the Trainer's TrainerService, the model server's ModelManager);
    ``close_app`` releases it (idempotent) and runs only after the server has
    stopped. ``standard`` (health) and ``drain`` are what a graceful stop uses.
    """

    server: grpc.aio.Server
    port: int
    app: App
    standard: StandardServices
    drain: DrainInterceptor
    close_app: Callable[[], Awaitable[None]]

    async def stop(self, grace: float | None) -> None:
        """Stop the server, giving in-flight calls ``grace`` seconds, then close the app."""
        try:
            await self.server.stop(grace)
        finally:
            await self.close_app()


async def start_server(
    app: App,
    *,
    host: str,
    port: int,
    security: ServerSecurity,
    service_names: Sequence[str],
    add_servicers: Callable[[grpc.aio.Server], None],
    close_app: Callable[[], Awaitable[None]],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    serving: bool = True,
    on_bound: Callable[[], Awaitable[None]] | None = None,
    front: Sequence[grpc.aio.ServerInterceptor] = (),
    shared_port: bool = False,
    options: Sequence[tuple[str, object]] = (),
) -> ServerHandle[App]:
    """Build, bind and start a server for ``app`` with the production
    interceptors, health and reflection; health starts ``serving`` (or
    NOT_SERVING, for an app that reports it later). ``on_bound`` runs once the
    port is ours, before the server answers: start-up work that must not run
    when another server holds the port. If anything fails (unreadable TLS
    files: ValueError; a taken port: PortInUse) the app is closed and the
    error raised. ``front`` interceptors run before all others (and before
    the drain check); ``shared_port`` lets sibling worker processes bind the
    same port (SO_REUSEPORT); ``options`` are more server channel arguments."""
    close = close_once(close_app)
    drain = DrainInterceptor()
    server: grpc.aio.Server | None = None
    bound = 0
    try:
        credentials = security.credentials()
        server = new_server(
            drain,
            [*interceptors, *security.interceptors()],
            options=[*security.server_options(), *options],
            max_message_bytes=security.max_message_bytes,
            front=front,
            shared_port=shared_port,
        )
        add_servicers(server)
        standard = StandardServices(server, service_names)
        await standard.set_serving(serving)
        bound = bind(server, host_port(host, port), credentials)
        if on_bound is not None:
            await on_bound()
        await server.start()
    except BaseException:
        if server is not None and bound:
            # gRPC frees a bound port only by stopping a started server; the
            # drain interceptor refuses every call meanwhile.
            drain.draining = True
            with contextlib.suppress(Exception):  # the first error is the one to report
                await server.start()
                await server.stop(None)
        await close()
        raise
    return ServerHandle(server, bound, app, standard, drain, close)


async def serve_until_signal(
    handle: ServerHandle[App],
    grace: float,
    drain: float = 0.0,
) -> None:
    """Serve until SIGINT or SIGTERM, then: report NOT_SERVING (health, for
    load balancers and probes); keep serving ``drain`` seconds while they
    notice; refuse new calls with UNAVAILABLE for a moment, so none is
    accepted and then cut off; stop, giving in-flight calls ``grace`` seconds;
    close the app."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(handle.server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("signal received: draining for up to %.1fs", grace)
            await handle.standard.shutdown()
            if drain > 0:
                await asyncio.sleep(drain)
            handle.drain.draining = True
            await asyncio.sleep(REFUSE_BEFORE_STOP_S)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # Stop before cancelling the waiter: cancelling wait_for_termination
        # first would cancel gRPC's own shutdown future.
        await handle.stop(grace)
        for task in (waiter, stopper):
            task.cancel()
