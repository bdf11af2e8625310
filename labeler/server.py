"""Assemble and run a Labeler: config -> registry, predictor, core, servicer,
health, reflection and metrics on one grpc.aio server.

``create_server(config)`` returns ``(server, port)`` with the server started
and its version poller running; stopping the server stops the poller and
closes the model server channels. The ``LabelerApp`` is reachable as
``server.labeler`` (reload, introspection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib

import grpc

from labeler.config import ConfigError, Settings, load_settings, validate
from labeler.domain import LabelState
from labeler.metrics import LabelerMetrics, MetricsInterceptor
from labeler.model_client import ClientPool
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
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.owns_tracing = owns_tracing  # made from the config: shut down on close
        self.config_path = pathlib.Path(config_path) if config_path else None
        self._config_mtime = self._mtime()
        self.clients = ClientPool(settings.model_server_tls)
        self.registry = ModelRegistry(settings, self.clients, on_change=self._on_change)
        # Shadow Predicts go straight out (not coalesced, not in the served Predict metrics).
        self.rollouts = Rollouts(
            settings, self.clients, DirectPredictor(self.clients, None, tracing), metrics
        )
        self.service = LabelerService(self.registry, self._predictor(settings), self.rollouts)
        self._standard: rpc_server.StandardServices | None = None
        self._serving: bool | None = None
        self._tasks: list[asyncio.Task] = []
        self._closer: asyncio.Task | None = None
        self.metrics_port: int | None = None
        self._health_updates: set[asyncio.Task] = set()
        self._reload_lock = asyncio.Lock()

    def _predictor(self, settings: Settings) -> Predictor:
        direct = DirectPredictor(self.clients, self.metrics, self.tracing)
        c = settings.coalescing
        return CoalescingPredictor(direct, c.max_delay_s, c.max_batch_documents) if c.enabled else direct

    async def start(self, standard: rpc_server.StandardServices) -> None:
        self._standard = standard
        self._on_change(self.registry.snapshot())
        self._tasks.append(asyncio.ensure_future(self.registry.run()))
        self._tasks.append(asyncio.ensure_future(self.rollouts.run()))
        if self.config_path is not None:
            self._tasks.append(asyncio.ensure_future(self._watch_config()))

    def _on_change(self, snapshot: Snapshot) -> None:
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
            await asyncio.gather(self.registry.reload(settings), self.rollouts.reload(settings))
            if settings.coalescing != old.settings.coalescing:
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
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the current one: %s", exc)
            return False
        await self.reload(settings)
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
) -> tuple[grpc.aio.Server, int]:
    """Build and start a Labeler server; returns it and its bound port.

    ``config`` is a file path, a LabelerConfig or validated Settings. With a
    ``config_path`` (implied by a path ``config``) the file is watched and
    reloaded when it changes. ``metrics_port`` (0 picks one) turns on the
    Prometheus endpoint; its port is ``server.labeler.metrics_port``.
    ``security`` adds TLS and bearer tokens (rpc.security). ``tracing``
    (tests: an in-memory exporter) overrides the config's ``tracing``.
    """
    settings = _settings(config)
    if config_path is None and isinstance(config, (str, os.PathLike)):
        config_path = config
    metrics = LabelerMetrics()
    owns_tracing = tracing is None
    if tracing is None:
        tracing = rpc_tracing.create_tracing(settings.tracing)
    app = LabelerApp(settings, metrics, config_path, tracing, owns_tracing)
    security = security or ServerSecurity()
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if tracing is not None:
        interceptors.append(tracing.server_interceptor([SERVICE_NAME]))
    server = security.new_server(interceptors)
    labeler_pb2_grpc.add_LabelerServicer_to_server(LabelerServicer(app.service), server)
    standard = rpc_server.StandardServices(server, [SERVICE_NAME])
    await standard.set_serving(False)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = rpc_server.bind(server, address, security.credentials())
    app.metrics_port = metrics.serve(metrics_port, host) if metrics_port is not None else None
    await server.start()
    await app.start(standard)

    async def close_when_stopped() -> None:
        await server.wait_for_termination()
        await app.close()

    app._closer = asyncio.ensure_future(close_when_stopped())
    server.labeler = app
    return server, bound
