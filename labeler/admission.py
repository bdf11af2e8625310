"""Admission as the first thing a Classify call meets (issue 27).

``AdmissionInterceptor`` runs before every other interceptor and before the
request is parsed. Two paths:

- Nothing free and no room to wait (``AdmissionGate.slots.full()``): the call
  gets a prebuilt handler that sets RESOURCE_EXHAUSTED, the prebuilt message
  and a ``grpc-retry-pushback-ms`` trailer and returns. No other interceptor,
  no deserialisation, no exception, no ``context.abort``: the cheapest answer
  Python can give (measured against the alternatives in bench/flood.py).
- Otherwise the call waits for a slot (``AdmissionGate.enter``: deadline
  aware, CoDel-style timeouts and adaptive LIFO under congestion); refused
  the same cheap way if none comes in time (the other interceptors are not
  even looked up for it); else the rest of the chain is looked up, the
  request parsed, and the call runs under its deadline: work still running
  when the deadline passes is cancelled (``labeler_calls_past_deadline``).

The metrics interceptor never sees a refused call, so the refusal paths count
it in ``labeler_rpc_requests`` themselves.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from labeler.metrics import LabelerMetrics
from labeler.overload import AdmissionGate, Refusal
from labeler.v1 import labeler_pb2
from rpc.server import RETRY_PUSHBACK_KEY

# The guarded methods and their response serializers: the admission handler
# is built before the rest of the chain runs (and it runs only once a call
# is admitted), so it must know how to serialize the answer itself.
GUARDED_METHODS = {
    "/labeler.v1.Labeler/Classify": labeler_pb2.ClassifyResponse.SerializeToString,
    "/labeler.v1.Labeler/ClassifyBatch": labeler_pb2.ClassifyBatchResponse.SerializeToString,
}
_STATUS = {
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
}
_PAST_DEADLINE = "the call's deadline passed while the Labeler worked on it; the work was stopped"


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Admission for the guarded methods; every other call passes through.

    ``refusal``: "answer" (the default: status, message and trailer set on the
    context, no exception) or "abort" (``context.abort``, for the benchmark's
    side-by-side cost of the two)."""

    def __init__(self, gate: AdmissionGate, metrics: LabelerMetrics, refusal: str = "answer") -> None:
        if refusal not in ("answer", "abort"):
            raise ValueError(f"refusal must be 'answer' or 'abort', got {refusal!r}")
        self._gate = gate
        self._metrics = metrics
        self._abort = refusal == "abort"
        self._full = {
            method: grpc.unary_unary_rpc_method_handler(self._refuse_full(_short(method)))
            for method in GUARDED_METHODS
        }

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        serialize = GUARDED_METHODS.get(method)
        if serialize is None:
            return await continuation(handler_call_details)
        if self._gate.settings.enabled and self._gate.slots.full():
            return self._full[method]
        # The rest of the chain (and the servicer) is looked up only once the
        # call is admitted: a refused call never runs another interceptor.
        return grpc.unary_unary_rpc_method_handler(
            self._admitted(_short(method), continuation, handler_call_details),
            request_deserializer=None,  # parsed only once admitted
            response_serializer=serialize,
        )

    def _refuse_full(self, name: str):
        gate = self._gate

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
            await self._answer(context, name, gate.refuse("classify"))

        return refuse

    async def _answer(self, context: grpc.aio.ServicerContext, name: str, refusal: Refusal) -> None:
        m = self._metrics
        code = refusal.code
        m.child(m.rpc_requests, name, code).inc()
        status = _STATUS[code]
        trailer = ((RETRY_PUSHBACK_KEY, str(refusal.retry_pushback_ms)),) if refusal.retry_pushback_ms else ()
        if self._abort:
            await context.abort(status, refusal.message, trailer)
        context.set_code(status)
        context.set_details(refusal.message)
        if trailer:
            context.set_trailing_metadata(trailer)

    def _admitted(self, name: str, continuation, handler_call_details):
        gate, metrics = self._gate, self._metrics

        async def admitted(raw: bytes, context: grpc.aio.ServicerContext):
            refusal = await gate.enter(context.time_remaining())
            if refusal is not None:
                await self._answer(context, name, refusal)
                return None
            started = time.perf_counter()
            answered = False
            try:
                handler = await continuation(handler_call_details)
                deserialize = handler.request_deserializer
                request = deserialize(raw) if deserialize is not None else raw
                left = context.time_remaining()
                if left is None:
                    reply = await handler.unary_unary(request, context)
                    answered = True
                    return reply
                try:
                    async with asyncio.timeout(left):
                        reply = await handler.unary_unary(request, context)
                except TimeoutError:
                    answered = True  # ran until its deadline: how long calls take now, at least
                    metrics.child(metrics.past_deadline, "cancelled").inc()
                    metrics.child(metrics.rpc_requests, name, "DEADLINE_EXCEEDED").inc()
                    context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
                    context.set_details(_PAST_DEADLINE)
                    return None
                except asyncio.CancelledError:
                    # gRPC cancels the handler when its deadline passes (or
                    # the caller goes away): the work stops here.
                    remaining = context.time_remaining()
                    if remaining is not None and remaining <= 0:
                        answered = True  # ran until its deadline
                        metrics.child(metrics.past_deadline, "cancelled").inc()
                    raise
                answered = True
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    metrics.child(metrics.past_deadline, "late").inc()
                return reply
            finally:
                gate.leave(time.perf_counter() - started, answered)

        return admitted


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]
