"""OpenTelemetry tracing for the servers: off by default, OTLP/gRPC when on.

Everything here is optional: with tracing off a server holds ``None`` instead
of a ``Tracing``, installs no interceptor and imports no OpenTelemetry module,
so an untraced call pays one ``is None`` test and allocates nothing.

With tracing on:
- ``Tracing.server_interceptor()`` records a SERVER span per unary RPC, child
  of the caller's trace when its metadata carries W3C ``traceparent``;
- ``Tracing.client_span()`` records a CLIENT span around an outgoing call and
  gives the metadata (``traceparent``) that makes the callee's span its child.

The standard variables apply: ``OTEL_TRACES_EXPORTER=otlp`` turns tracing on
(``settings_from_env``), ``OTEL_SDK_DISABLED=true`` keeps it off, and the
exporter reads ``OTEL_EXPORTER_OTLP_*`` for what the settings leave unset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc

from rpc.tracing_settings import TracingSettings, settings_from_env

__all__ = ["TracingSettings", "settings_from_env", "Tracing", "ClientSpan", "create_tracing"]


def _otel_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class Tracing:
    """A tracer plus W3C trace-context propagation over gRPC metadata."""

    def __init__(self, tracer_provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("text-labeler")
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace

    # -- server side -------------------------------------------------------------

    def server_interceptor(
        self,
        services: Iterable[str],
        request_attributes: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> grpc.aio.ServerInterceptor:
        """A SERVER span per unary RPC of ``services`` (full names, e.g.
        "labeler.v1.Labeler"; health checks and reflection are left out);
        ``request_attributes(request)`` adds attributes."""
        return _ServerInterceptor(self, frozenset(services), request_attributes)

    def extract(self, metadata: Any) -> Any:
        """The caller's trace context from its invocation metadata."""
        carrier = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
        return self._propagator.extract(carrier)

    # -- client side -------------------------------------------------------------

    @contextlib.contextmanager
    def client_span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[ClientSpan]:
        """A CLIENT span, current inside the block; ``.metadata`` carries it to the callee."""
        with self.tracer.start_as_current_span(
            name, kind=self._trace.SpanKind.CLIENT, attributes=dict(attributes)
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            yield ClientSpan(span, tuple(carrier.items()))

    def shutdown(self) -> None:
        """Flush and stop the exporter (only for providers made here)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


@dataclasses.dataclass
class ClientSpan:
    span: Any
    metadata: tuple[tuple[str, str], ...]

    def set_outcome(self, code_name: str) -> None:
        """Record the call's gRPC status code name; anything but OK is an error."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("rpc.grpc.status_code", code_name)
        if code_name != "OK":
            self.span.set_status(Status(StatusCode.ERROR, code_name))


def create_tracing(settings: TracingSettings) -> Tracing | None:
    """A Tracing exporting over OTLP/gRPC, or None when tracing is off."""
    if not settings.enabled or _otel_disabled():
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = (
        OTLPSpanExporter(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else OTLPSpanExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    """Sits outside the error-mapping interceptor, so it sees the caller's code."""

    def __init__(self, tracing: Tracing, services: frozenset[str], request_attributes) -> None:
        self._tracing = tracing
        self._services = services
        self._request_attributes = request_attributes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        tracing = self._tracing
        full_method = handler_call_details.method  # "/package.Service/Method"
        service, _, method = full_method.lstrip("/").rpartition("/")
        if service not in self._services:
            return handler
        parent = tracing.extract(handler_call_details.invocation_metadata)
        inner = handler.unary_unary
        request_attributes = self._request_attributes

        async def unary_unary(request, context):
            from opentelemetry.trace import SpanKind, Status, StatusCode

            attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            if request_attributes is not None:
                attributes.update(request_attributes(request))
            with tracing.tracer.start_as_current_span(
                full_method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    reply = await inner(request, context)
                except BaseException:
                    status = context.code()
                    code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                    span.set_attribute("rpc.grpc.status_code", code)
                    span.set_status(Status(StatusCode.ERROR, code))
                    raise
                span.set_attribute("rpc.grpc.status_code", "OK")
                return reply

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
