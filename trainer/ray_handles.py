"""The Ray executor's view of its attempts and nodes: ``RayAttempt`` (one
attempt as a Ray job, trainer.executor.Attempt: ``exited`` and ``usage``
answer from the poller's latest view, ``stop`` ends it through Ray), the log
pump that copies an attempt's log from shared storage into the Trainer's own
job log, and ``RayNodeSampler``, the per-node sample series the cluster gate
reads (trainer/ray_executor.py owns and polls them).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from trainer.config import TrainerConfig
from trainer.domain import JobContainment, Placement
from trainer.executor import Usage
from trainer.gate import Sample
from trainer.ray_attempt import FENCED_EXIT
from trainer.ray_jobs import NodeReading, RayJob, RayJobs, RayUnavailable

log = logging.getLogger(__name__)

# An attempt Ray has not started this long after its submit is given up
# (fenced off, requeued): Ray could not place it after all.
PENDING_LIMIT_S = 60.0
KEEP_SAMPLES_S = 60.0
PUMP_CHUNK = 1 << 20


class AttemptOwner(Protocol):
    """What an attempt needs from the executor that tracks it (RayExecutor)."""

    config: TrainerConfig
    jobs: RayJobs

    def attempt_paths(self, job_id: str, attempt: int) -> dict[str, pathlib.Path]: ...

    def advance_fence(self, job_id: str, past: int) -> None: ...

    def remove_stale_exports(self, job_id: str, current: int) -> list[str]: ...

    def node_map(self) -> dict[str, NodeReading]: ...

    def untrack(self, attempt: RayAttempt) -> None: ...


@dataclasses.dataclass
class LogPump:
    """Copies an attempt's log (on shared storage) into the job's own log."""

    source: pathlib.Path
    target: pathlib.Path
    offset_file: pathlib.Path
    offset: int = 0

    def run(self) -> None:
        try:
            with open(self.source, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                if size <= self.offset:
                    return
                src.seek(self.offset)
                data = src.read(min(PUMP_CHUNK, size - self.offset))
        except FileNotFoundError:
            return
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with open(self.target, "ab") as dst:
            dst.write(data)
        self.offset += len(data)
        self.offset_file.write_text(str(self.offset))


class RayAttempt:
    """One attempt of one job as a Ray job (the local JobProcess's shape)."""

    pid = 0
    create_time = 0.0
    cgroup = ""

    def __init__(
        self, executor: AttemptOwner, job_id: str, attempt: int, placement: Placement, threads: int
    ) -> None:
        self.executor = executor
        self.job_id = job_id
        self._placement = placement
        self.attempt = attempt
        self.threads = max(1, threads)
        self.marker = f"{job_id}.{attempt}"
        self.submitted_at = time.monotonic()
        self.ray: RayJob | None = None
        self.lost = ""  # why it ended with no word from its node; "" otherwise
        self.running_seen = False
        self._ended = threading.Event()
        log_path = executor.config.log_path(job_id)
        self.pump = LogPump(
            executor.attempt_paths(job_id, attempt)["log"], log_path, log_path.with_suffix(".ray-offset")
        )
        try:
            self.pump.offset = int(self.pump.offset_file.read_text())
        except (FileNotFoundError, ValueError):
            self.pump.offset = 0

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def node_name(self) -> str:
        return f"{self._placement.node[:12]}@{self._placement.address}"

    def identity(self) -> tuple[int, float, JobContainment]:
        return 0, 0.0, JobContainment(marker=self.marker)

    @property
    def submission_id(self) -> str:
        return self._placement.handle

    # -- what the scheduler reads ---------------------------------------------

    def exited(self) -> bool:
        return self._ended.is_set()

    @property
    def alive(self) -> bool:
        return not self.exited()

    def usage(self) -> Usage:
        """What it declared (its thread budget): Ray's Jobs API gives no per-job usage."""
        return Usage(cpu_percent=100.0 * self.threads, rss_bytes=0)

    def discover(self) -> None:
        pass

    @property
    def exit_code(self) -> int | None:
        if self.lost:
            return None
        if self.ray is None:
            return None
        if self.ray.status == "SUCCEEDED":
            return 0
        if self.ray.status == "STOPPED":
            return -15
        return self.ray.exit_code if self.ray.exit_code is not None else 1

    # -- the poller's view ----------------------------------------------------

    def observe(self, job: RayJob | None, nodes: dict[str, NodeReading]) -> None:
        """One poll: Ray's word on the job and on its node."""
        if self._ended.is_set():
            return
        if job is not None:
            self.ray = job
            if job.status == "RUNNING":
                self.running_seen = True
        node = nodes.get(self._placement.node)
        if job is not None and job.ended:
            if job.status == "FAILED" and node is not None and not node.alive:
                self._lose(f"its node {self.node_name} died")
            elif job.status == "FAILED" and job.exit_code is None:
                # Ray's supervisor of the job died (with its node, most often) before it
                # saw an exit: nothing says how the attempt ended, so it is lost.
                self._lose(f"its Ray job failed without an exit code ({job.error_type or job.message[:160]})")
            elif job.exit_code == FENCED_EXIT:
                self._lose("its attempt was fenced off by a newer one")
            else:
                self._ended.set()
            return
        if node is not None and not node.alive:
            self._lose(f"its node {self.node_name} died")
            return
        if job is None and nodes:
            self._lose(f"Ray has no job {self.submission_id} (the head lost it)")
            return
        if (
            job is not None
            and job.status == "PENDING"
            and time.monotonic() - self.submitted_at > PENDING_LIMIT_S
        ):
            self._lose(f"Ray did not start it within {PENDING_LIMIT_S:g}s on node {self.node_name}")

    def _lose(self, why: str) -> None:
        self.lost = why
        # The fence moves on at once: if the old attempt's processes live on
        # (a partitioned node), its wrapper ends them and exports nothing.
        self.executor.advance_fence(self.job_id, self.attempt)
        self._ended.set()

    # -- ending it -------------------------------------------------------------

    def stop(
        self, grace_s: float, kill_wait_s: float = 5.0, hurry: threading.Event | None = None
    ) -> int | None:
        """Stop the Ray job (idempotent) and wait for Ray to say it ended;
        if the head does not answer in time, fence the attempt off (its
        wrapper ends the tree on its node). Returns its exit code."""
        deadline = time.monotonic() + grace_s + kill_wait_s + 10.0
        asked = False
        while not self._ended.is_set() and time.monotonic() < deadline:
            try:
                if not asked:
                    self.executor.jobs.stop(self.submission_id)
                    asked = True
                job = self.executor.jobs.job(self.submission_id)
                self.observe(job, self.executor.node_map())
            except RayUnavailable as exc:
                log.warning("stopping %s: %s", self.submission_id, exc)
            if hurry is not None and hurry.is_set() and time.monotonic() > deadline - kill_wait_s - 10.0:
                break
            self._ended.wait(0.2)
        if not self._ended.is_set():
            self._lose("its stop was not confirmed by Ray in time")
        self.pump.run()
        if not self.lost:
            # Only the current attempt may export: what an earlier, fenced-off
            # attempt managed to export before it was ended is removed.
            for removed in self.executor.remove_stale_exports(self.job_id, self.attempt):
                log.warning("job %s: removed %s, exported by a fenced-off attempt", self.job_id, removed)
        self.executor.untrack(self)
        return self.exit_code

    def mark_lost(self, why: str) -> None:
        """Ended with no word from Ray (it cannot be followed); the fence stays."""
        self.lost = why
        self._ended.set()


class RayNodeSampler:
    """Per-node sample series from the dashboard's readings (the gate's input)."""

    def __init__(self, keep_s: float = KEEP_SAMPLES_S) -> None:
        self.keep_s = keep_s
        self._series: dict[str, collections.deque[Sample]] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, nodes: Sequence[NodeReading], now: float) -> None:
        with self._lock:
            for node in nodes:
                if node.cpu_percent is None or node.memory_percent is None or not node.alive:
                    continue
                start = self._last.get(node.node_id, now - 0.5)
                series = self._series.setdefault(node.node_id, collections.deque())
                series.append(Sample(start, now, node.cpu_percent, node.memory_percent))
                self._last[node.node_id] = now
                while series and series[0].end < now - self.keep_s:
                    series.popleft()

    def node_samples(self, node_id: str) -> list[Sample]:
        with self._lock:
            return list(self._series.get(node_id, ()))
