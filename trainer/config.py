"""The Trainer's configuration: roots, gate policy, job limits, and the recipe
registry it may run (the real one by default; tests pass their own).

The one home of every Trainer setting and default: the dataclass fields below,
each with its docstring (``trainer serve`` makes a flag of every field:
trainer.config_flags).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

from rpc.errors import InvalidArgument
from trainer.domain import ValidationPolicy
from trainer.push import check_policy
from trainer.recipes import RECIPES, Recipe

DEFAULT_PORT = 50052
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CORPUS = "sample/train.jsonl"


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """The load gate's thresholds (machine-wide percentages; a danger above
    100 never fires) and timings. trainer/gate.py applies them."""

    cpu_normal: float = 55.0
    """Admit a job only while the CPU is below this (machine %)."""
    cpu_danger: float = 95.0
    """At this CPU (machine %), stop the newest lowest-priority job."""
    memory_normal: float = 55.0
    """Admit a job only while memory use is below this (machine %)."""
    memory_danger: float = 95.0
    """At this memory use (machine %), stop the newest lowest-priority job."""
    warmup_s: float = 3.0
    """Seconds after an admission before the next (the new job's load is not
    visible yet); the danger watch runs all the time."""
    window_s: float = 3.0
    """Seconds of CPU samples a decision averages."""
    settle_s: float = 10.0
    """Seconds after its admission a job is expected to use at least its
    thread budget, even if its measured load does not show it yet."""

    def __post_init__(self) -> None:
        for kind in ("cpu", "memory"):
            normal, danger = getattr(self, f"{kind}_normal"), getattr(self, f"{kind}_danger")
            if not 0 < normal <= danger:
                raise ValueError(
                    f"{kind} thresholds need 0 < normal <= danger, got normal {normal} and danger {danger}"
                )
        if self.warmup_s < 0 or self.window_s <= 0 or self.settle_s < 0:
            raise ValueError(
                f"warm-up and settle time must be >= 0 and window > 0 seconds, got {self.warmup_s}, "
                f"{self.settle_s} and {self.window_s}"
            )


class OverloadPolicy:
    """What happens to a job the gate killed."""

    REQUEUE = "requeue"  # back to the queue with backoff, up to max_requeues times, then failed
    FAIL = "fail"  # failed at once


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Every setting of a Trainer; ``trainer serve`` makes a flag of each
    field (trainer.config_flags), its help from the docstring below it."""

    data_root: pathlib.Path
    """Directory holding the corpora; job corpus paths are relative to it."""
    model_root: pathlib.Path
    """Model repository the recipes export into."""
    state_dir: pathlib.Path
    """SQLite job store, job logs, checkpoints, work directories."""
    host: str = DEFAULT_HOST
    """Address to bind (loopback only by default)."""
    port: int = DEFAULT_PORT
    """Port to listen on (0 picks a free one)."""
    gate: GatePolicy = GatePolicy()
    """The load gate (its fields are flags of their own)."""
    sample_interval_s: float = 0.5
    """Seconds between load samples."""
    tick_s: float = 0.25
    """How often the scheduler looks at its jobs when nothing wakes it sooner (seconds)."""
    kill_grace_s: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a job is stopped."""
    overload_policy: str = OverloadPolicy.REQUEUE
    """What happens to a job the gate killed: requeue or fail."""
    max_requeues: int = 3
    """Gate kills a job survives before it fails."""
    requeue_backoff_s: float = 15.0
    """First wait before a killed (or retried) job runs again; doubles each time."""
    max_requeue_backoff_s: float = 300.0
    """Longest such wait (seconds)."""
    max_log_bytes: int = 1024 * 1024
    """A job log is trimmed to its newest half past this many bytes."""
    default_corpus: str = DEFAULT_CORPUS
    """Corpus (relative to the data root) for a Start that names none."""
    stop_jobs_on_exit: bool = False
    """On shutdown kill running jobs and queue them again (default: leave them
    running; a restarted Trainer re-attaches them)."""
    shutdown_budget_s: float = 4.0
    """Seconds a shutdown that stops jobs may take: SIGTERM, then SIGKILL in
    time (a container runtime gives 10 s before it kills the Trainer)."""
    cgroup_root: str = ""
    """cgroup v2 directory under which each job gets its own cgroup ("" looks
    for a writable one; "none" never uses one)."""
    registry: Mapping[str, Recipe] = dataclasses.field(default_factory=lambda: dict(RECIPES))
    """The recipes this Trainer may run (default: every recipe it knows)."""
    default_recipe: str = "fasttext"
    """Recipe for a Start that names none."""
    validation: ValidationPolicy = dataclasses.field(default_factory=ValidationPolicy)
    """Validation before push for a Start that leaves parts of it unset (its
    fields are flags of their own)."""
    max_sweep_trials: int = 100
    """The largest trial budget a sweep may ask for."""
    store_write_wait_s: float = 2.0
    """Seconds Start and Kill wait for their write to reach the job store
    before answering; a store locked longer (by another process) does not hold
    them up: they answer, and the queued write follows once it can."""
    executor: str = "local"
    """Where jobs run: local (this machine) or ray (every job a Ray job on the
    cluster at ray_address; trainer.ray_executor, the `ray` extra)."""
    ray_address: str = ""
    """The Ray Jobs API address, as for `ray job submit --address` (e.g.
    http://127.0.0.1:8265)."""
    ray_work_root: str = ""
    """Shared storage every Ray node mounts at the same path: each attempt's
    spec, log, checkpoint and fence ("" is <state-dir>/ray)."""
    ray_python: str = ""
    """The Python that runs the recipes on the Ray nodes ("" is this Trainer's)."""
    ray_job_memory_mb: int = 0
    """Memory each job declares to Ray and to the cluster gate's room check, in MiB (0: none)."""

    def __post_init__(self) -> None:
        for name in ("data_root", "model_root", "state_dir"):
            object.__setattr__(self, name, pathlib.Path(getattr(self, name)).expanduser().resolve())
        if self.overload_policy not in (OverloadPolicy.REQUEUE, OverloadPolicy.FAIL):
            raise ValueError(f"overload policy must be 'requeue' or 'fail', got {self.overload_policy!r}")
        if self.sample_interval_s <= 0 or self.gate.window_s < 2 * self.sample_interval_s:
            raise ValueError(
                f"the load window ({self.gate.window_s}s) must span at least two samples "
                f"(sample interval {self.sample_interval_s}s)"
            )
        if (
            self.max_requeues < 0
            or self.requeue_backoff_s < 0
            or self.max_requeue_backoff_s < self.requeue_backoff_s
        ):
            raise ValueError("requeue limits must be >= 0 and the backoff cap at least the first backoff")
        if self.shutdown_budget_s < 1.0:
            raise ValueError(f"shutdown budget must be at least 1 second, got {self.shutdown_budget_s}")
        if self.max_log_bytes < 4096:
            raise ValueError(f"max log bytes must be at least 4096, got {self.max_log_bytes}")
        try:
            check_policy(self.validation, "default validation")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        if self.executor == "ray" and not self.ray_address.startswith(("http://", "https://")):
            raise ValueError(
                f"--executor ray needs --ray-address, the Ray Jobs API address such as http://127.0.0.1:8265 "
                f"(got {self.ray_address!r})"
            )
        if not self.ray_work_root:
            object.__setattr__(self, "ray_work_root", str(self.state_dir / "ray"))
        if self.default_recipe not in self.registry:
            raise ValueError(
                f"default recipe {self.default_recipe!r} is not in the registry ({', '.join(self.registry)})"
            )

    @property
    def database(self) -> pathlib.Path:
        return self.state_dir / "jobs.sqlite3"

    def log_path(self, job_id: str) -> pathlib.Path:
        return self.state_dir / "logs" / f"{job_id}.log"

    def checkpoint_dir(self, job_id: str) -> pathlib.Path:
        return self.state_dir / "checkpoints" / job_id

    def work_dir(self, job_id: str) -> pathlib.Path:
        return self.state_dir / "work" / job_id

    def requeue_backoff(self, attempts: int) -> float:
        """Seconds a job killed on its ``attempts``-th attempt waits before it may run again."""
        return min(self.max_requeue_backoff_s, self.requeue_backoff_s * 2 ** max(0, attempts - 1))
