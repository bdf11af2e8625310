"""ModelServerOptions: what the server is told to do (importable without TensorFlow)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from modelserver import model_config as config_lib
from modelserver.batching import BatchingOptions
from rpc import security


@dataclasses.dataclass(frozen=True)
class ModelServerOptions:
    """What ``tensorflow_model_server``'s flags configure, plus a few of ours.

    ``reload_base_path_root``: HandleReloadConfigRequest may only name base
    paths under it (None: the working directory). ``working_dir``: where
    relative base paths start (None: the process's). ``request_threads``:
    threads running TensorFlow calls (None: two per core).
    """

    model_config: config_lib.ModelServerConfig
    port: int = 8500
    host: str = "127.0.0.1"
    model_config_file: pathlib.Path | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    batching: BatchingOptions | None = None
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    request_threads: int | None = None
    allow_version_labels_for_unavailable_models: bool = False
    working_dir: pathlib.Path | None = None
    reload_base_path_root: pathlib.Path | None = None
    max_message_bytes: int = security.DEFAULT_MAX_MESSAGE_BYTES
    # TLS (mutual with tls.ca) and per-connection stream limit; no tokens
    # (TF Serving has none): protect it with mutual TLS or the network.
    tls: security.TlsFiles = security.TlsFiles()
    max_concurrent_streams: int = 0  # no limit, as TF Serving
    # An rpc.tracing.Tracing (tests); None: as the OTEL_* variables say (off by default).
    tracing: Any = dataclasses.field(default=None, compare=False)

    def server_security(self) -> security.ServerSecurity:
        return security.ServerSecurity(
            tls=self.tls,
            max_message_bytes=self.max_message_bytes,
            max_concurrent_streams=self.max_concurrent_streams,
        )

    @classmethod
    def for_model(cls, name: str, base_path: str | os.PathLike, **options) -> ModelServerOptions:
        """``--model_name`` / ``--model_base_path``."""
        return cls(model_config=config_lib.single_model_config(name, base_path), **options)

    @classmethod
    def for_config_file(cls, path: str | os.PathLike, **options) -> ModelServerOptions:
        """``--model_config_file``; raises ConfigFileError on a bad file."""
        path = pathlib.Path(path)
        return cls(model_config=config_lib.read_model_server_config(path), model_config_file=path, **options)
