"""Real server processes for the reliability tests: ``labeler serve``,
``labeler-modelserver`` and ``trainer serve`` as subprocesses, their memory
and file descriptors, and a load generator that records every outcome."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import random
import re
import sys
import threading
import time

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc.security import ClientSecurity, open_channel
from tests.support.labeler_support import EXAMPLE, SAMPLE_LABELS, labeler_config
from tests.support.server_process import ENV, ServerProcess  # noqa: F401 - ENV is re-exported for the tests

LABELER_SERVING = re.compile(r"Labeler serving on \S+:(\d+)")
MODELSERVER_SERVING = re.compile(r"labeler-modelserver serving on \S+:(\d+)")


def modelserver_process(config_file: pathlib.Path, *flags: str, port: int = 0) -> ServerProcess:
    argv = [
        sys.executable,
        "-m",
        "modelserver.cli",
        f"--port={port}",
        f"--model_config_file={config_file}",
        "--file_system_poll_wait_seconds=1",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        "--request_threads=2",
        *flags,
    ]
    return ServerProcess(argv, MODELSERVER_SERVING)


def labeler_process(config_file: pathlib.Path, *flags: str) -> ServerProcess:
    argv = [sys.executable, "-m", "labeler.cli", "serve", "--config", str(config_file), "--port", "0", *flags]
    return ServerProcess(argv, LABELER_SERVING)


def write_modelserver_config(path: pathlib.Path, model_root: pathlib.Path, models) -> pathlib.Path:
    entries = "".join(
        f'  config {{ name: "{m}" base_path: "{model_root / m}" model_platform: "tensorflow" }}\n'
        for m in models
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def write_labeler_config(
    path: pathlib.Path,
    model_root: pathlib.Path,
    targets: dict[str, str],
    tls: ClientSecurity | None = None,
    **top,
) -> pathlib.Path:
    """A LabelerConfig JSON file; ``tls``: the Labeler's TLS to the model servers."""
    config = labeler_config(model_root, targets, **top)
    if tls is not None:
        config.model_server_tls.SetInParent()
        config.model_server_tls.ca_file = tls.tls.ca
        config.model_server_tls.cert_file = tls.tls.cert
        config.model_server_tls.key_file = tls.tls.key
    path.write_text(json_format.MessageToJson(config))
    return path


def health(channel: grpc.Channel, service: str = "", timeout: float = 5.0) -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        .status
    )


def wait_serving(channel: grpc.Channel, service: str = "", timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if health(channel, service) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not SERVING after {timeout:.0f}s")
        time.sleep(0.1)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclasses.dataclass
class Stack:
    """The model server and the Labeler as real processes, secured: the model
    server requires mutual TLS, the Labeler TLS and a bearer token."""

    modelserver: ServerProcess
    labeler: ServerProcess
    labeler_client: ClientSecurity  # TLS + token
    modelserver_client: ClientSecurity  # mutual TLS
    model_root: pathlib.Path

    def labeler_channel(self) -> grpc.Channel:
        return open_channel(self.labeler.target, self.labeler_client)

    def modelserver_channel(self) -> grpc.Channel:
        return open_channel(self.modelserver.target, self.modelserver_client)


# -- load ------------------------------------------------------------------------------

LABELS = list(SAMPLE_LABELS.values())
WORDS = EXAMPLE + ["口红", "粉底液", "演唱会", "穿搭", "比赛", "火锅", "手机", "旅行", "的", "了"]


def mixed_request(
    rng: random.Random, stub: labeler_pb2_grpc.LabelerStub, timeout: float, subsets: bool = True
):
    """One call of the mix: 60% Classify (some for a subset of the labels),
    25% ClassifyBatch, 15% ListLabels."""
    r = rng.random()
    if r < 0.60:
        words = rng.choices(WORDS, k=rng.randint(1, 30))
        labels = rng.sample(LABELS, rng.randint(0, 2)) if subsets else []
        return stub.Classify(labeler_pb2.ClassifyRequest(words=words, labels=labels), timeout=timeout)
    if r < 0.85:
        docs = [
            labeler_pb2.Document(words=rng.choices(WORDS, k=rng.randint(1, 30)))
            for _ in range(rng.randint(2, 32))
        ]
        return stub.ClassifyBatch(labeler_pb2.ClassifyBatchRequest(documents=docs), timeout=timeout)
    return stub.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=timeout)


class Load:
    """``workers`` threads sending the mix over one channel until ``stop()``.
    ``outcomes`` counts status code names (``OK`` for answers); ``failures``
    keeps (code, details) of the others; ``partial`` counts answers that
    listed failed labels."""

    def __init__(
        self,
        channel: grpc.Channel,
        workers: int = 4,
        timeout: float = 10.0,
        seed: int = 0,
        subsets: bool = True,
        until: threading.Event | None = None,
    ) -> None:
        """``until``: a polite client stops starting calls once it is set
        (as a load balancer does once the server's health says NOT_SERVING)."""
        self.stub = labeler_pb2_grpc.LabelerStub(channel)
        self.timeout = timeout
        self.subsets = subsets
        self.until = until
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.partial = 0
        self.failures: list[tuple[str, str]] = []
        self.failed_labels: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(workers)
        ]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 10)
        return self

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set() and not (self.until is not None and self.until.is_set()):
            try:
                reply = mixed_request(rng, self.stub, self.timeout, self.subsets)
            except grpc.RpcError as err:
                with self._lock:
                    self.outcomes[err.code().name] += 1
                    if len(self.failures) < 1000:
                        self.failures.append((err.code().name, err.details() or ""))
                self._stop.wait(0.01)  # a server that is down refuses at once: do not spin
                continue
            with self._lock:
                self.outcomes["OK"] += 1
                failures = getattr(reply, "failures", ())
                if failures:
                    self.partial += 1
                    self.failed_labels.update(f.label for f in failures)


TRAINER_SERVING = re.compile(r"trainer listening on \S+:(\d+)")
OPEN_GATE_FLAGS = [
    "--cpu-normal",
    "101",
    "--cpu-danger",
    "101",
    "--memory-normal",
    "101",
    "--memory-danger",
    "101",
]
# Between normal and danger: nothing is killed, and nothing is admitted unless a
# running job ends (its place is free again).
CLOSED_GATE_FLAGS = [
    "--cpu-normal",
    "1",
    "--cpu-danger",
    "101",
    "--memory-normal",
    "1",
    "--memory-danger",
    "101",
]


def trainer_process(root: pathlib.Path, *flags: str) -> ServerProcess:
    """``trainer serve`` on ``root``/data, models and state, port 0."""
    argv = [
        sys.executable,
        "-m",
        "trainer.cli",
        "serve",
        "--port",
        "0",
        "--data-root",
        str(root / "data"),
        "--model-root",
        str(root / "models"),
        "--state-dir",
        str(root / "state"),
        "--sample-interval",
        "0.1",
        "--window",
        "0.5",
        "--warmup",
        "0",
        "--kill-grace",
        "5",
        *flags,
    ]
    return ServerProcess(argv, TRAINER_SERVING, start_timeout=60)
