"""The Trainer's configuration: roots, gate policy, job limits, and the recipe
registry it may run (the real one by default; tests pass their own).

The one home of every Trainer default: the dataclass field defaults below
(``trainer serve`` reads its flag defaults from them, see ``DEFAULTS``).
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
    cpu_danger: float = 95.0
    memory_normal: float = 55.0
    memory_danger: float = 95.0
    # After an admission, admit nothing more for this long (the new job's load
    # is not visible yet); the danger watch runs all the time.
    warmup_s: float = 3.0
    # CPU is judged on its mean over this window (the old launcher sampled 3 s).
    window_s: float = 3.0
    # For this long after its admission a job is expected to use at least its
    # thread budget, even if its measured load does not show it yet (imports).
    settle_s: float = 10.0

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
    data_root: pathlib.Path
    model_root: pathlib.Path
    state_dir: pathlib.Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    gate: GatePolicy = GatePolicy()
    sample_interval_s: float = 0.5
    # How often the scheduler looks at its jobs when nothing wakes it sooner.
    tick_s: float = 0.25
    kill_grace_s: float = 10.0
    overload_policy: str = OverloadPolicy.REQUEUE
    max_requeues: int = 3
    requeue_backoff_s: float = 15.0
    max_requeue_backoff_s: float = 300.0
    max_log_bytes: int = 1024 * 1024
    # Corpus (relative to data_root) for a Start that names none.
    default_corpus: str = DEFAULT_CORPUS
    # On shutdown: leave running jobs running (a restarted Trainer re-attaches
    # them) or stop them and put them back in the queue.
    stop_jobs_on_exit: bool = False
    # Shutdown (with stop_jobs_on_exit) ends within this many seconds: the
    # jobs get SIGTERM, then SIGKILL before it runs out (a container runtime
    # gives 10 s before it kills the Trainer).
    shutdown_budget_s: float = 4.0
    # cgroup v2 directory under which each job gets its own cgroup, where the
    # machine lets the Trainer create one ("" = look for a writable one; "none" = never).
    cgroup_root: str = ""
    registry: Mapping[str, Recipe] = dataclasses.field(default_factory=lambda: dict(RECIPES))
    default_recipe: str = "fasttext"
    # Validation before push for a Start that leaves parts of it unset: no
    # floors, and at most 0.02 of F1 below the served version.
    validation: ValidationPolicy = dataclasses.field(default_factory=ValidationPolicy)
    # The largest trial budget a sweep may ask for.
    max_sweep_trials: int = 100
    # Seconds Start and Kill wait for their write to reach the job store
    # before answering; a store locked longer (another process) does not hold
    # them up: they answer, and the queued write follows once it can.
    store_write_wait_s: float = 2.0
    # Where jobs run: "local" (this machine) or "ray" (a Ray cluster at
    # ray_address, every job a Ray job; trainer.ray_executor).
    executor: str = "local"
    # The Ray Jobs API address, as for `ray job submit --address`
    # (e.g. http://127.0.0.1:8265).
    ray_address: str = ""
    # Shared storage every Ray node mounts at the same path (each attempt's
    # spec, log, checkpoint and fence); "" = <state_dir>/ray.
    ray_work_root: str = ""
    # The Python that runs the recipes on the Ray nodes ("" = this Trainer's).
    ray_python: str = ""
    # Memory each job declares to Ray and to the cluster gate, in MiB (0 = none).
    ray_job_memory_mb: int = 0

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


def _field_defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


# Flag defaults for `trainer serve`: the TrainerConfig and GatePolicy field defaults.
DEFAULTS: Mapping[str, object] = {**_field_defaults(TrainerConfig), **_field_defaults(GatePolicy)}
