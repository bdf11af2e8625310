"""The gRPC side of the Labeler's metrics: per-RPC counts and latency.

Kept apart from ``labeler.metrics`` so that the metrics themselves stay free of
gRPC (the core records into them)."""

from __future__ import annotations

import time

import grpc

from labeler.metrics import LabelerMetrics


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every unary RPC by method and final status code, and times it.

    It sits outside the error-mapping interceptor, so it sees the code that
    the caller sees (from the abort)."""

    def __init__(self, metrics: LabelerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if not handler_call_details.method.startswith("/labeler."):
            return handler
        inner = handler.unary_unary
        metrics = self._metrics

        async def unary_unary(request, context):
            start = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                metrics.child(metrics.rpc_requests, method, code).inc()
                metrics.child(metrics.rpc_latency, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
