"""Helpers for the Trainer's tests: a registry with the fake recipe, scripted
machine load for the gate, a config in a temporary directory, and waiting
for a job to reach a state."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import threading
import time
from collections.abc import Iterable

import grpc
import psutil

from tests.support.labeler_support import BackgroundLoop
from trainer.config import TrainerConfig
from trainer.gate import GatePolicy, Sample
from trainer.recipes import Param, Recipe
from trainer.server import create_server
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

FAKE = Recipe(
    name="fake",
    module="tests.support.trainer_fake_recipe",
    description="test recipe without TensorFlow",
    metrics=("precision", "recall", "f1"),
    params=(
        Param("epochs", 3, 1, 200, "epochs"),
        Param("threads", 1, 1, 64, "thread budget"),
    ),
)
REGISTRY = {FAKE.name: FAKE}
# Thresholds above 100% never fire: for tests about jobs, not about the gate
# (the machine is shared, so its real load must not decide their outcome).
OPEN_GATE = GatePolicy(
    cpu_normal=101, cpu_danger=101, memory_normal=101, memory_danger=101, warmup_s=0.0, window_s=0.2
)


class ScriptedLoad:
    """Machine load as the test says it is: contiguous samples at whatever
    level ``set`` chose, so the gate sees exactly those readings."""

    def __init__(self, cpu: float = 10.0, memory: float = 10.0, step: float = 0.05) -> None:
        self.step = step
        self._levels = [(time.monotonic() - 3600, cpu, memory)]
        self._lock = threading.Lock()

    def set(self, cpu: float, memory: float) -> None:
        with self._lock:
            self._levels.append((time.monotonic(), cpu, memory))

    def samples(self) -> list[Sample]:
        now = time.monotonic()
        with self._lock:
            levels = list(self._levels)
        out, t = [], now - 30.0
        while t + self.step <= now:
            level = next(lv for lv in reversed(levels) if lv[0] <= t) if levels[0][0] <= t else levels[0]
            out.append(Sample(t, t + self.step, level[1], level[2]))
            t += self.step
        return out

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class OwnLoad:
    """Machine CPU made of this test's own processes only (its jobs, its
    burners: every descendant of the test process), read from /proc like the
    real sampler; memory as the test says. Real processes' real load, so a
    test about how the gate treats that load is not decided by other work
    sharing the machine."""

    def __init__(self, interval_s: float = 0.1, memory: float = 10.0) -> None:
        self.interval_s = interval_s
        self.memory = memory
        self._samples: list[Sample] = []
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpus = psutil.cpu_count() or 1

    def cpu(self) -> float:
        """Machine CPU percent of our processes since the previous call."""
        total = 0.0
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            children = []
        alive = {}
        for child in children:
            proc = self._procs.get(child.pid, child)
            try:
                total += proc.cpu_percent(interval=None)
                alive[child.pid] = proc
            except psutil.Error:
                continue
        self._procs = alive
        return min(100.0, total / self._cpus)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples[-600:])

    def _run(self) -> None:
        self.cpu()
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            sample = Sample(last, now, self.cpu(), self.memory)
            last = now
            with self._lock:
                self._samples.append(sample)


def make_config(tmp_path: pathlib.Path, **overrides) -> TrainerConfig:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_spec(data, "fake.json")
    values = dict(
        data_root=data,
        model_root=tmp_path / "models",
        state_dir=tmp_path / "state",
        port=0,
        gate=OPEN_GATE,
        sample_interval_s=0.05,
        tick_s=0.05,
        kill_grace_s=2.0,
        requeue_backoff_s=0.1,
        max_requeue_backoff_s=1.0,
        registry=REGISTRY,
        default_recipe="fake",
        default_corpus="fake.json",
        # Tests must not leave jobs behind: stopping the server stops them.
        stop_jobs_on_exit=True,
    )
    values.update(overrides)
    return TrainerConfig(**values)


def write_spec(data_root: pathlib.Path, name: str, **spec) -> str:
    """Write a fake recipe script (its "corpus") under the data root; returns its relative path."""
    path = data_root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return name


def pids_from_log(lines: list[str]) -> dict[str, int]:
    for line in lines:
        if line.startswith("pids "):
            return json.loads(line[5:])
    return {}


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie counts as alive: someone failed to reap it)?"""
    try:
        return psutil.Process(pid).is_running()
    except psutil.NoSuchProcess:
        return False


ENDED = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_KILLED)


@dataclasses.dataclass
class RunningTrainer:
    loop: BackgroundLoop
    server: grpc.aio.Server
    port: int
    channel: grpc.Channel
    stub: trainer_pb2_grpc.TrainerStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def service(self):
        return self.server.app

    def start(self, model: str = "movie", label: str = "影视", **fields) -> trainer_pb2.Job:
        return self.stub.Start(trainer_pb2.StartRequest(model=model, label=label, **fields), timeout=10).job

    def status(self, job_id: str, log_lines: int = 100) -> trainer_pb2.StatusResponse:
        return self.stub.Status(trainer_pb2.StatusRequest(job_id=job_id, log_lines=log_lines), timeout=10)

    def wait(self, job_id: str, states: Iterable[int] = ENDED, timeout: float = 60.0) -> trainer_pb2.Job:
        """Poll Status until the job is in one of ``states``."""
        states = tuple(states)
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id).job
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {trainer_pb2.JobState.Name(job.state)} after {timeout:.0f}s: {job.reason} "
                    f"(gate: {job.gate.reason})"
                )
            time.sleep(0.05)

    def wait_log(self, job_id: str, needle: str, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = list(self.status(job_id, 1000).log_tail)
            if any(needle in line for line in lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never logged {needle!r}; its log: {lines[-10:]}")
            time.sleep(0.05)


@contextlib.contextmanager
def running_trainer(config: TrainerConfig, sampler=None, executor=None):
    """A real Trainer server on 127.0.0.1:0, its loop in a thread (so sync
    stubs and subprocesses can call it); stopped, jobs and all, at the end."""
    loop = BackgroundLoop()
    try:
        server = loop.run(create_server(config, sampler, executor=executor))
        port = server.port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield RunningTrainer(loop, server, port, channel, trainer_pb2_grpc.TrainerStub(channel))
        finally:
            channel.close()
            loop.run(server.stop(1.0))
    finally:
        loop.close()
