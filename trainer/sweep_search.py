"""The pure part of sweeps (trainer.sweeps): checking a spec (each error
naming its field), how many trials a space allows, a trial's metric and the
best trial, the jobs' idempotency keys; and the two narrow protocols the
sweep driver depends on instead of the service: ``SweepJobs`` (start, kill
and read jobs, and the validation policy a Start would get) and
``SweepStore`` (the sweeps' records)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Protocol

from rpc.errors import InvalidArgument, shown
from trainer import lifecycle, search
from trainer.domain import (
    METRICS,
    Direction,
    JobRecord,
    JobRequest,
    JobState,
    SearchAlgorithm,
    SweepRecord,
    SweepSpec,
    SweepState,
    TrialState,
    TrialView,
    ValidationPolicy,
)
from trainer.recipes import Recipe

# A spec (as stored, JSON) larger than this is refused: it is stored and
# sent back in every GetSweep and ListSweeps.
MAX_SPEC_BYTES = 64 * 1024
# Trial and final job idempotency keys start with this character, which no
# client key can hold (they must be printable): a client's Start can never
# reach, or collide with, a sweep's jobs.
KEY_PREFIX = "\x1esweep/"


# -- the pure part ------------------------------------------------------------------


def check_spec(spec: SweepSpec, recipe: Recipe, max_trials: int) -> None:
    """Raise InvalidArgument naming the field of ``spec`` that is wrong."""
    params = {p.name: p for p in recipe.params}
    if not spec.search_space:
        raise InvalidArgument(
            "spec.search_space is empty: give at least one hyperparameter with a list of values or a range"
        )
    for name, space in spec.search_space.items():
        param = params.get(name)
        if param is None:
            raise InvalidArgument(
                f"spec.search_space has an unknown hyperparameter {shown(name)}; recipe {recipe.name!r} has: "
                f"{', '.join(params)}"
            )
        if name in spec.base_params:
            raise InvalidArgument(
                f"{_field(name)}: {name} is also fixed in spec.base_hyperparameters; give it in one place"
            )
        search.check_space(name, space, param)
    size = len(json.dumps(spec.to_dict(), ensure_ascii=False).encode())
    if size > MAX_SPEC_BYTES:
        raise InvalidArgument(
            f"spec is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes (give ranges instead of long lists)"
        )
    if not recipe.metrics:
        raise InvalidArgument(f"recipe {recipe.name!r} reports no held-out metric: it cannot be swept")
    if spec.metric not in recipe.metrics:
        raise InvalidArgument(
            f"spec.metric {shown(spec.metric)} is not a metric recipe {recipe.name!r} reports; use one of "
            f"{', '.join(recipe.metrics)}"
        )
    if spec.direction is None:
        raise InvalidArgument("spec.direction must be MAXIMIZE or MINIMIZE")
    if not 1 <= spec.trial_budget <= max_trials:
        raise InvalidArgument(
            f"spec.trial_budget must be 1..{max_trials} (this Trainer's maximum), got {spec.trial_budget}"
        )
    if spec.max_parallel < 1:
        raise InvalidArgument(f"spec.max_parallel_trials must be >= 1, got {spec.max_parallel}")
    if not 0 <= spec.startup_trials <= 1000:
        raise InvalidArgument(f"spec.startup_trials must be 0..1000, got {spec.startup_trials}")
    search.check_pruner(spec.pruner)
    if spec.algorithm is SearchAlgorithm.GRID:
        size = search.grid_size(spec, recipe)
        if size > spec.trial_budget:
            raise InvalidArgument(
                f"spec.trial_budget {spec.trial_budget} is smaller than the grid's {size} points: raise it, or "
                "give fewer values or grid_points, or use RANDOM or TPE search"
            )


def _field(name: str) -> str:
    return f"spec.search_space[{name!r}]"


planned_trials = search.planned_trials


def trial_metric(job: JobRecord | None, metric: str) -> float | None:
    """A finished trial's held-out ``metric`` (None unless it succeeded and reported it)."""
    if job is None or job.state is not JobState.SUCCEEDED:
        return None
    value = getattr(job.progress, metric, None) if metric in METRICS else None
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def best_trial(trials: Iterable[TrialView], direction: Direction | None) -> TrialView | None:
    """The trial with the best metric; on a tie the earliest (``direction``
    None, never so after check_spec, maximizes)."""
    best, best_metric = None, 0.0
    sign = -1.0 if direction is Direction.MINIMIZE else 1.0
    for trial in trials:
        if trial.metric is None:
            continue
        if best is None or sign * (trial.metric - best_metric) > 0:
            best, best_metric = trial, trial.metric
    return best


def trial_view(
    spec: SweepSpec,
    study: search.SweepStudy | None,
    index: int,
    params: dict[str, int],
    job: JobRecord | None,
    detail: bool = True,
) -> TrialView:
    """Trial ``index`` as GetSweep shows it (``detail``: with its per-epoch values)."""
    record = study.record(index) if study is not None else None
    metric = trial_metric(job, spec.metric)
    state = search.trial_state(record, job.state if job is not None else None, metric)
    if state is TrialState.PRUNED:
        metric = None
    steps = record.intermediate if record is not None and detail else ()
    return TrialView(index, params, job, metric, state, steps)


# How a trial that exited 0 is judged is the lifecycle's business (rule 3).
trial_scored = lifecycle.trial_scored


def trial_key(sweep_id: str, index: int) -> str:
    return f"{KEY_PREFIX}{sweep_id}/trial-{index}"


def final_key(sweep_id: str) -> str:
    return f"{KEY_PREFIX}{sweep_id}/final"


def own_key(key: str) -> str:
    """A sweep job's key in today's form (jobs of sweeps started before the
    prefix carry ``<sweep_id>/trial-<i>``; the listing is by sweep id, so a
    client's job with such a key is never among them)."""
    return key if key.startswith(KEY_PREFIX) else KEY_PREFIX + key


class SweepJobs(Protocol):
    """What the sweep driver needs of the Trainer's jobs (TrainerService provides it)."""

    def start_job(self, request: JobRequest, internal_key: bool = False) -> JobRecord:
        """Validate and queue a job (with a known idempotency key: the job it
        made); ``internal_key``: the key is the Trainer's own, not a client's."""
        ...

    async def kill(self, job_id: str, reason: str = ...) -> JobRecord:
        """Kill a job as a Kill request does (``reason``: why)."""
        ...

    def sweep_jobs(self, sweep_id: str, limit: int) -> list[JobRecord]:
        """The sweep's jobs as Status shows them."""
        ...

    def validation_policy(self, request: JobRequest, recipe: Recipe) -> ValidationPolicy | None:
        """The validation before push a Start of ``request`` would get; raises InvalidArgument."""
        ...


class SweepStore(Protocol):
    """Where sweeps are kept (trainer.store.JobStore and its queued front)."""

    def insert_sweep(self, sweep: SweepRecord) -> tuple[SweepRecord, bool]: ...

    def update_sweep(self, sweep: SweepRecord) -> None: ...

    def get_sweep(self, sweep_id: str) -> SweepRecord | None: ...

    def list_sweeps(
        self, states: Iterable[SweepState] = (), limit: int = 100, before_seq: int = 0
    ) -> list[SweepRecord]: ...
