"""Build and run the model server in-process.

    handle = await create_server(
        ModelServerOptions.for_model("half_plus_two", "/models/half_plus_two", port=0))
    ...                                   # the server is started and SERVING
    await handle.stop(grace)              # stops the server, then polling and sessions

``handle.port`` is the bound port (``port=0`` picks a free one, for tests) and
``handle.app`` the ModelManager; the CLI is a thin wrapper over ``serve``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import pathlib

from modelserver import loader
from modelserver.batching import Batcher
from modelserver.config import ModelServerOptions
from modelserver.manager import ModelManager
from modelserver.service import PredictionCore
from modelserver.servicer import MODEL_SERVICE, PREDICTION_SERVICE, ModelService, PredictionService
from rpc import server as rpc_server
from rpc import tracing as rpc_tracing
from rpc.addresses import host_port
from tfserving.protos import model_service_pb2_grpc, prediction_service_pb2_grpc

__all__ = ["ModelServerOptions", "create_server", "serve"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0


async def create_server(options: ModelServerOptions) -> rpc_server.ServerHandle[ModelManager]:
    """Bind the port, load the models, start the gRPC server; returns its
    handle. Raises rpc.server.PortInUse when the port is taken (before any
    model is loaded) and a ServiceError if the config cannot be served."""
    working_dir = pathlib.Path(options.working_dir or pathlib.Path.cwd()).absolute()
    session_config = loader.session_config(options.intra_op_parallelism, options.inter_op_parallelism)
    manager = ModelManager(
        load=functools.partial(_load, session_config),
        working_dir=working_dir,
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
    )
    # TensorFlow releases the GIL while it runs: two threads per core keep the
    # cores busy; more only add GIL hand-offs (measured in bench.modelserver).
    threads = options.request_threads or 2 * (os.cpu_count() or 1)
    executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="predict")
    manager.on_close(executor.shutdown)
    core = PredictionCore(
        manager,
        executor,
        max_tensor_bytes=options.max_message_bytes,
        batcher=Batcher(options.batching, executor) if options.batching else None,
        reload_base_path_root=options.reload_base_path_root or working_dir,
        working_dir=working_dir,
    )

    def add_servicers(server) -> None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)

    async def load_models() -> None:
        await manager.start(options.model_config)
        if options.model_config_file is not None and options.model_config_file_poll_wait_seconds > 0:
            manager.watch_config_file(
                options.model_config_file, options.model_config_file_poll_wait_seconds, options.model_config
            )

    tracing = options.tracing
    if tracing is None:
        tracing = rpc_tracing.create_tracing(rpc_tracing.settings_from_env("labeler-modelserver"))
        if tracing is not None:
            manager.on_close(tracing.shutdown)  # flush the last spans
    # Predicts only: the Labelers' version polls (GetModelStatus) would be a trace a second.
    interceptors = (
        [tracing.server_interceptor([PREDICTION_SERVICE], _model_attributes)] if tracing is not None else []
    )

    handle = await rpc_server.start_server(
        manager,
        host=options.host,
        port=options.port,
        security=options.server_security(),
        service_names=[PREDICTION_SERVICE, MODEL_SERVICE],
        add_servicers=add_servicers,
        close_app=manager.close,
        interceptors=interceptors,
        on_bound=load_models,
    )
    log.info("labeler-modelserver serving on %s", host_port(options.host, handle.port))
    return handle


def _model_attributes(request) -> dict[str, object]:
    """Span attributes of a request naming a model (Predict, GetModelStatus ...)."""
    spec = getattr(request, "model_spec", None)
    if spec is None:
        return {}
    return {"tfserving.model": spec.name, "tfserving.model_version": int(spec.version.value)}


def _load(session_config, name: str, version: int, path: pathlib.Path) -> loader.LoadedVersion:
    return loader.load_version(name, version, path, session_config)


async def serve(options: ModelServerOptions) -> None:
    """Serve until SIGINT/SIGTERM, then drain in-flight requests and unload."""
    handle = await create_server(options)
    await rpc_server.serve_until_signal(handle, SHUTDOWN_GRACE_S)
