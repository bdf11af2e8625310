"""Assemble and run a Labeler: config -> registry, predictor, core, servicer,
health, reflection and metrics on one grpc.aio server.

``create_server(config)`` returns a started ``rpc.server.ServerHandle`` whose
``app`` is the ``LabelerApp`` (reload, introspection) with its version poller
running; ``handle.stop(grace)`` stops the server, then the poller, and closes
the model server channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib

import grpc

from labeler.admission import AdmissionInterceptor
from labeler.cache import CachingPredictor, PredictionCache
from labeler.config import ConfigError, Settings, load_settings, validate
from labeler.domain import LabelState
from labeler.metrics import LabelerMetrics
from labeler.metrics_interceptor import MetricsInterceptor
from labeler.model_client import ClientPool
from labeler.overload import AdmissionGate, LimitedPredictor
from labeler.predictor import CoalescingPredictor, DirectPredictor, Predictor
from labeler.registry import ModelRegistry, Snapshot
from labeler.rollout import Rollouts
from labeler.service import LabelerService
from labeler.servicer import LabelerServicer
from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc
from rpc import server as rpc_server
from rpc import tracing as rpc_tracing
from rpc.security import ServerSecurity

log = logging.getLogger(__name__)

SERVICE_NAME = labeler_pb2.DESCRIPTOR.services_by_name["Labeler"].full_name


class LabelerApp:
    """Everything behind the servicer, with its background tasks."""

    def __init__(
        self,
        settings: Settings,
        metrics: LabelerMetrics,
        config_path: str | os.PathLike | None = None,
        tracing: rpc_tracing.Tracing | None = None,
        owns_tracing: bool = False,
        admission_in_service: bool = False,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.owns_tracing = owns_tracing  # made from the config: shut down on close
        self.config_path = pathlib.Path(config_path) if config_path else None
        self._config_mtime = self._mtime()
        self.clients = ClientPool(settings.model_server_tls)
        self.limiter: LimitedPredictor | None = (
            None  # the Predict bound per target, when overload control is on
        )
        self.registry = ModelRegistry(settings, self.clients, on_change=self._on_change)
        self.admission = AdmissionGate(settings.overload, metrics)
        self.cache: PredictionCache | None = None
        # Shadow Predicts go straight out (not coalesced, not in the served Predict metrics).
        self.rollouts = Rollouts(
            settings, self.clients, DirectPredictor(self.clients, None, tracing), metrics
        )
        self.rollouts.shed_shadows_when(self.admission.overloaded)
        # Admission runs in the AdmissionInterceptor, before the request is
        # parsed; in the service only for the benchmark's comparison.
        self.service = LabelerService(
            self.registry,
            self._predictor(settings),
            self.admission if admission_in_service else None,
            self.rollouts,
            metrics,
        )
        self._standard: rpc_server.StandardServices | None = None
        self._serving: bool | None = None
        self._tasks: list[asyncio.Task] = []
        self.metrics_port: int | None = None
        self._health_updates: set[asyncio.Task] = set()
        self._reload_lock = asyncio.Lock()

    def _predictor(self, settings: Settings) -> Predictor:
        predictor: Predictor = DirectPredictor(self.clients, self.metrics, self.tracing)
        self.limiter = None
        if settings.overload.enabled:
            predictor = self.limiter = LimitedPredictor(predictor, settings.overload, self.metrics)
            self.limiter.set_fanout(self.registry.snapshot().models_per_target)
        c = settings.coalescing
        if c.enabled:
            predictor = CoalescingPredictor(predictor, c.max_delay_s, c.max_batch_documents)
        return self._cached(settings, predictor)

    def _cached(self, settings: Settings, predictor: Predictor) -> Predictor:
        """The prediction cache on top (issue 17); kept across reloads unless its size changes."""
        c = settings.prediction_cache
        if not c.enabled:
            self.cache = None
            return predictor
        if self.cache is None or self.cache.max_bytes != c.max_bytes:
            self.cache = PredictionCache(c.max_bytes)
        return CachingPredictor(predictor, self.cache, self.metrics)

    async def start(self, standard: rpc_server.StandardServices) -> None:
        # A canary or shadow of a version the model server does not serve is refused.
        await self.rollouts.check_candidates()
        self._standard = standard
        self._on_change(self.registry.snapshot())
        self._tasks.append(asyncio.ensure_future(self.registry.run()))
        self._tasks.append(asyncio.ensure_future(self.rollouts.run()))
        if self.config_path is not None:
            self._tasks.append(asyncio.ensure_future(self._watch_config()))

    def _on_change(self, snapshot: Snapshot) -> None:
        if self.limiter is not None:
            self.limiter.set_fanout(snapshot.models_per_target)
        for b in snapshot.bindings.values():
            self.metrics.label_version.labels(b.spec.label, b.spec.model).set(
                b.loaded.version if b.loaded else 0
            )
            self.metrics.label_available.labels(b.spec.label, b.spec.model).set(
                1 if b.state is LabelState.AVAILABLE else 0
            )
        # Health is NOT_SERVING until every configured model has a version loaded.
        if self._standard is not None and snapshot.ready != self._serving:
            self._serving = snapshot.ready
            task = asyncio.ensure_future(self._standard.set_serving(snapshot.ready))
            self._health_updates.add(task)
            task.add_done_callback(self._health_updates.discard)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every label has a version loaded (for callers that must)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.registry.snapshot().ready and loop.time() < end:
            await asyncio.sleep(0.05)
        return self.registry.snapshot().ready

    async def reload(self, settings: Settings) -> None:
        async with self._reload_lock:
            old = self.registry.snapshot()
            self.clients.use_tls(settings.model_server_tls)
            # Candidates first: a candidate the model server does not serve
            # refuses the whole config (ConfigError), and the old one stays.
            candidates = await self.rollouts.prepare(settings)
            table = await self.registry.prepare(settings)
            # From here on nothing awaits: a request's view (labeler.plan.RequestView)
            # is the old configuration or the new one, whole.
            self.registry.install(table)
            self.rollouts.install(candidates)
            self.admission.update(settings.overload)
            if (settings.coalescing, settings.overload, settings.prediction_cache) != (
                old.settings.coalescing,
                old.settings.overload,
                old.settings.prediction_cache,
            ):
                self.service.use_predictor(self._predictor(settings))
            kept = {(s.label, s.model) for s in settings.labels}
            for s in old.settings.labels:
                if (s.label, s.model) not in kept:
                    with contextlib.suppress(KeyError):
                        self.metrics.label_version.remove(s.label, s.model)
                        self.metrics.label_available.remove(s.label, s.model)
            log.info("configuration reloaded: %d label(s)", len(settings.labels))

    async def reload_from_file(self) -> bool:
        """Re-read the config file; an invalid file is logged and ignored."""
        if self.config_path is None:
            return False
        self._config_mtime = self._mtime()
        try:
            settings = await asyncio.to_thread(load_settings, self.config_path)
            await self.reload(settings)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the current one: %s", exc)
            return False
        return True

    def _mtime(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime if self.config_path else None
        except OSError:
            return None

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.registry.snapshot().settings.poll_interval_s)
            if self._mtime() != self._config_mtime:
                try:
                    await self.reload_from_file()
                except Exception:  # noqa: BLE001 - the watcher must survive
                    log.exception("configuration reload failed")

    async def close(self) -> None:
        """Stop the background tasks, close channels and metrics (idempotent)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.rollouts.close()
        await self.clients.close()
        self.metrics.close()
        if self.tracing is not None:
            # Flushing sends the last spans (blocking I/O): off the event loop.
            flush = self.tracing.shutdown if self.owns_tracing else self.tracing.provider.force_flush
            await asyncio.to_thread(flush)


# HTTP/2 streams per connection (issue 27), from overload.excess_calls:
# - HOLD: twice the calls the Labeler runs at once (at most running
#   + queued): enough to keep it busy while one answer goes out and the next
#   request comes in, few enough that a call let in is served within about
#   one call's time rather than queued until its deadline. The excess of one
#   connection waits in the caller's transport for a free stream and costs
#   the Labeler nothing; a caller whose deadline passes there sees
#   DEADLINE_EXCEEDED. (A client's first burst, sent before the server's
#   SETTINGS arrive, has its excess refused by HTTP/2 as REFUSED_STREAM,
#   which gRPC clients retry once, transparently.)
# - REFUSE (default): room beyond that (4x, at least 4,096), so admission answers every
#   excess call at once, RESOURCE_EXHAUSTED with a pushback: the caller
#   learns early, each refusal costs Labeler CPU.
#
# Either way the streams beyond the limit are held, not refused: gRPC's
# "overload protection" (on by default) answers a stream over the limit with
# RST_STREAM REFUSED_STREAM, even on a connection whose client has the
# server's SETTINGS, which callers see as UNAVAILABLE and retry into the
# flood. Off, the excess waits in the transport and never reaches Python.
HOLD_STREAMS_OVER_LIMIT = ("grpc.http.overload_protection", 0)
_STREAMS_PER_ADMITTED = 4
_STREAMS_PER_RUNNING = 2
_MIN_STREAMS_WITH_ADMISSION = 4096


def streams_for_admission(security: ServerSecurity, settings: Settings) -> ServerSecurity:
    """``security`` with its per-connection stream limit sized from the overload settings."""
    o = settings.overload
    if not o.enabled or not security.max_concurrent_streams:
        return security
    held = o.max_classify_in_flight + o.max_classify_queued
    if o.hold_excess_in_transport:
        streams = min(security.max_concurrent_streams, held, _STREAMS_PER_RUNNING * o.max_classify_in_flight)
    else:
        streams = max(
            security.max_concurrent_streams, _MIN_STREAMS_WITH_ADMISSION, _STREAMS_PER_ADMITTED * held
        )
    return dataclasses.replace(security, max_concurrent_streams=streams)


def _settings(config: Settings | config_pb2.LabelerConfig | str | os.PathLike) -> Settings:
    if isinstance(config, Settings):
        return config
    if isinstance(config, config_pb2.LabelerConfig):
        return validate(config)
    return load_settings(config)


async def create_server(
    config: Settings | config_pb2.LabelerConfig | str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_port: int | None = None,
    config_path: str | os.PathLike | None = None,
    security: ServerSecurity | None = None,
    tracing: rpc_tracing.Tracing | None = None,
    shared_port: bool = False,
    admission_layer: str = "interceptor",
) -> rpc_server.ServerHandle[LabelerApp]:
    """Build and start a Labeler server; returns its handle (``handle.port``
    is the bound port, ``handle.app`` the LabelerApp).

    ``config`` is a file path, a LabelerConfig or validated Settings. With a
    ``config_path`` (implied by a path ``config``) the file is watched and
    reloaded when it changes. ``metrics_port`` (0 picks one) turns on the
    Prometheus endpoint; its port is ``handle.app.metrics_port``.
    ``security`` adds TLS and bearer tokens (rpc.security). A taken port
    raises rpc.server.PortInUse. ``tracing``
    (tests: an in-memory exporter) overrides the config's ``tracing``.
    ``shared_port``: one of ``labeler serve --workers N``'s processes (the
    parent holds the port). ``admission_layer`` is for the benchmark's
    side-by-side cost of a refusal: "interceptor" (the default: admission
    before anything else, refusals answered without an exception),
    "interceptor-abort" (the same with ``context.abort``) or "service" (in
    the request path, behind the other interceptors and the parsing, as in
    issue 17).
    """
    if admission_layer not in ("interceptor", "interceptor-abort", "service"):
        raise ValueError(f"unknown admission_layer {admission_layer!r}")
    settings = _settings(config)
    if config_path is None and isinstance(config, (str, os.PathLike)):
        config_path = config
    metrics = LabelerMetrics()
    owns_tracing = tracing is None
    if tracing is None:
        tracing = rpc_tracing.create_tracing(settings.tracing)
    app = LabelerApp(
        settings,
        metrics,
        config_path,
        tracing,
        owns_tracing,
        admission_in_service=admission_layer == "service",
    )
    security = streams_for_admission(security or ServerSecurity(), settings)
    front: list[grpc.aio.ServerInterceptor] = []
    if admission_layer != "service":
        refusal = "abort" if admission_layer == "interceptor-abort" else "answer"
        front.append(AdmissionInterceptor(app.admission, metrics, refusal))
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if tracing is not None:
        interceptors.append(tracing.server_interceptor([SERVICE_NAME]))

    async def serve_metrics() -> None:  # once the gRPC port is ours: a second Labeler fails on that
        app.metrics_port = metrics.serve(metrics_port, host) if metrics_port is not None else None

    handle = await rpc_server.start_server(
        app,
        host=host,
        port=port,
        security=security,
        service_names=[SERVICE_NAME],
        add_servicers=lambda server: labeler_pb2_grpc.add_LabelerServicer_to_server(
            LabelerServicer(app.service), server
        ),
        close_app=app.close,
        interceptors=interceptors,
        serving=False,  # until every configured model has a version loaded
        on_bound=serve_metrics,
        front=front,
        shared_port=shared_port,
        options=[HOLD_STREAMS_OVER_LIMIT],
    )
    try:
        await app.start(handle.standard)
    except BaseException:
        await handle.stop(None)
        raise
    return handle
