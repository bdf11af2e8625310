"""Hyperparameter sweeps: a search space, trials that report a held-out
metric, the best trial kept.

Design (the simplest correct one given validate-before-push): every trial is
an ordinary Trainer job started through ``TrainerService.start_job`` (so it is
gated, killable, requeued and resumed like any other), marked with its
``sweep_id`` and run with ``--no-push``: it trains, scores its held-out split
and exports nothing. When every trial has ended, the best trial's
configuration (same hyperparameters, same seed, same held-out split) is
trained once more as the sweep's *final* job with the sweep's validation
policy: only that model goes through validation before push, by the same
path as any Start (``trainer.push``; stage / promote / reject in
``trainer.recipes.export``). No trial ever touches the served model
directory, so a killed or crashed sweep leaves nothing half-published.

The pure part (``check_spec``, ``generate_trials``, ``best_trial``) is unit
tested; ``SweepDriver`` persists sweeps in the job store and advances them on
job events. It depends on two narrow protocols, not on the service:
``SweepJobs`` (start, kill and read jobs, and the validation policy a Start
would get) and ``SweepStore`` (the sweeps' records). Trial ``i`` of a sweep is the job with idempotency key
``<sweep_id>/trial-<i>`` and the final job ``<sweep_id>/final``, so a
restarted Trainer (or a crash between starting a job and recording it)
never starts one twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from rpc.errors import AlreadyExists, InvalidArgument, NotFound, ServiceError, shown
from trainer import lifecycle, validation
from trainer.config import TrainerConfig
from trainer.domain import (
    METRICS,
    Direction,
    JobRecord,
    JobRequest,
    JobState,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepRecord,
    SweepSpec,
    SweepState,
    SweepView,
    TrialView,
    ValidationPolicy,
)
from trainer.events import JobEvent
from trainer.recipes import Param, Recipe

log = logging.getLogger(__name__)

DEFAULT_GRID_POINTS = 3
MAX_GRID_POINTS = 100
# Random search draws this many times for a combination not tried yet before
# it concludes the space has fewer distinct points than the budget.
RANDOM_DRAWS = 200
POLL_S = 1.0


# -- the pure part ------------------------------------------------------------------


def _field(name: str) -> str:
    return f"spec.search_space[{name!r}]"


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
        _check_space(name, space, param)
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
    if spec.algorithm is SearchAlgorithm.GRID:
        size = math.prod(len(_grid_values(space, params[name])) for name, space in spec.search_space.items())
        if size > spec.trial_budget:
            raise InvalidArgument(
                f"spec.trial_budget {spec.trial_budget} is smaller than the grid's {size} points: raise it, or "
                "give fewer values or grid_points, or use RANDOM search"
            )


def _check_space(name: str, space: SearchSpace, param: Param) -> None:
    bounds = f"{param.minimum}..{param.maximum}"
    has_range = space.minimum is not None or space.maximum is not None
    if space.values and has_range:
        raise InvalidArgument(f"{_field(name)}: give either values or a range, not both")
    if space.values:
        for v in space.values:
            if not float(v).is_integer() or not param.minimum <= v <= param.maximum:
                raise InvalidArgument(
                    f"{_field(name)}.values: {v:g} is not an integer in {bounds} (the recipe's bounds for {name})"
                )
        return
    if not has_range:
        raise InvalidArgument(f"{_field(name)} is empty: give a list of values or a range (min, max)")
    lo, hi = space.minimum, space.maximum
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        raise InvalidArgument(f"{_field(name)}.range needs both min and max")
    if lo > hi:
        raise InvalidArgument(f"{_field(name)}.range: min {lo:g} > max {hi:g}")
    if space.scale is Scale.LOG and lo <= 0:
        raise InvalidArgument(f"{_field(name)}.range: a LOG scale needs min > 0, got {lo:g}")
    if lo < param.minimum or hi > param.maximum:
        raise InvalidArgument(
            f"{_field(name)}.range {lo:g}..{hi:g} leaves the recipe's bounds {bounds} for {name}"
        )
    if math.ceil(lo) > math.floor(hi):
        raise InvalidArgument(f"{_field(name)}.range {lo:g}..{hi:g} holds no integer ({name} is an integer)")
    if not 0 <= space.grid_points <= MAX_GRID_POINTS:
        raise InvalidArgument(f"{_field(name)}.range.grid_points must be 0..{MAX_GRID_POINTS}")


def _grid_values(space: SearchSpace, param: Param) -> list[int]:
    """The distinct integer points of one hyperparameter's grid, in order."""
    if space.values:
        raw = list(space.values)
    else:
        n = space.grid_points or DEFAULT_GRID_POINTS
        lo, hi = _range(space)
        if n == 1 or lo == hi:
            raw = [lo]
        elif space.scale is Scale.LOG:
            raw = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (n - 1)) for i in range(n)]
        else:
            raw = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    # Hyperparameters are integers: round (inside the range), drop repeats.
    out: list[int] = []
    for v in raw:
        point = _clamp_int(v, space, param)
        if point not in out:
            out.append(point)
    return out


def _clamp_int(value: float, space: SearchSpace, param: Param) -> int:
    lo = math.ceil(space.minimum) if space.minimum is not None else param.minimum
    hi = math.floor(space.maximum) if space.maximum is not None else param.maximum
    return int(min(hi, max(lo, round(value))))


def _range(space: SearchSpace) -> tuple[float, float]:
    """A range space's bounds (check_spec made sure a space without values has both)."""
    assert space.minimum is not None and space.maximum is not None
    return float(space.minimum), float(space.maximum)


def _sample(space: SearchSpace, param: Param, rng: random.Random) -> int:
    if space.values:
        return int(rng.choice(space.values))
    lo, hi = _range(space)
    if space.scale is Scale.LOG:
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        value = rng.uniform(lo, hi)
    return _clamp_int(value, space, param)


def generate_trials(spec: SweepSpec, recipe: Recipe) -> list[dict[str, int]]:
    """Every trial's full hyperparameters (base, sampled, defaults), in the
    order they run. Grid: the cartesian product of each hyperparameter's
    points (names in sorted order). Random: ``trial_budget`` distinct draws
    from ``random.Random(seed)``, fewer when the space holds fewer points.
    Deterministic for a given spec."""
    params = {p.name: p for p in recipe.params}
    names = sorted(spec.search_space)
    if spec.algorithm is SearchAlgorithm.GRID:
        axes = [_grid_values(spec.search_space[n], params[n]) for n in names]
        combos = [dict(zip(names, point, strict=True)) for point in itertools.product(*axes)]
    else:
        rng = random.Random(spec.seed)
        combos, seen = [], set()
        for _ in range(spec.trial_budget):
            for _ in range(RANDOM_DRAWS):
                combo = {n: _sample(spec.search_space[n], params[n], rng) for n in names}
                key = tuple(combo[n] for n in names)
                if key not in seen:
                    break
            else:
                break  # the space is exhausted
            seen.add(key)
            combos.append(combo)
    return [recipe.validate({**spec.base_params, **combo}) for combo in combos[: spec.trial_budget]]


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


# How a trial that exited 0 is judged is the lifecycle's business (rule 3).
trial_scored = lifecycle.trial_scored


def trial_key(sweep_id: str, index: int) -> str:
    return f"{sweep_id}/trial-{index}"


def final_key(sweep_id: str) -> str:
    return f"{sweep_id}/final"


# -- the driver ------------------------------------------------------------------------


class SweepJobs(Protocol):
    """What the sweep driver needs of the Trainer's jobs (TrainerService provides it)."""

    def start_job(self, request: JobRequest) -> JobRecord:
        """Validate and queue a job (with a known idempotency key: the job it made)."""
        ...

    async def kill(self, job_id: str) -> JobRecord:
        """Kill a job as a Kill request does."""
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

    def list_sweeps(self, states: Iterable[SweepState] = (), limit: int = 100) -> list[SweepRecord]: ...


class SweepDriver:
    """Starts sweeps, keeps up to ``max_parallel`` trials queued or running,
    and once all have ended trains the best configuration with validation
    before push. Everything it knows is in the store, so a restarted Trainer
    resumes every unfinished sweep where it was."""

    def __init__(self, jobs: SweepJobs, store: SweepStore, config: TrainerConfig) -> None:
        self.jobs = jobs
        self.store = store
        self.config = config
        self.max_trials = config.max_sweep_trials
        self._wake = asyncio.Event()
        self._stopping = False

    # -- the RPCs --------------------------------------------------------------

    def start_sweep(self, spec: SweepSpec) -> SweepView:
        cfg = self.config
        validation.check_request_fields(spec.model, spec.label, spec.idempotency_key)
        recipe = validation.recipe_named(cfg.registry, spec.recipe or cfg.default_recipe)
        try:
            recipe.validate(spec.base_params)
        except InvalidArgument as exc:
            raise InvalidArgument(f"spec.base_hyperparameters: {exc}") from None
        corpus, _ = validation.resolve_corpus(cfg.data_root, spec.corpus or cfg.default_corpus)
        # The final job's policy, checked now rather than when the trials are done.
        self.jobs.validation_policy(
            JobRequest(model=spec.model, label=spec.label, validation=spec.validation), recipe
        )
        check_spec(spec, recipe, self.max_trials)
        spec = dataclasses.replace(spec, recipe=recipe.name, corpus=corpus)
        record = SweepRecord(
            sweep_id=f"{spec.model}-sweep-{secrets.token_hex(6)}",
            spec=spec,
            trials=generate_trials(spec, recipe),
            state=SweepState.RUNNING,
            create_time=time.time(),
            reason="running its trials",
        )
        stored, created = self.store.insert_sweep(record)
        if not created:
            if stored.spec != spec:
                raise AlreadyExists(
                    f"idempotency_key {spec.idempotency_key!r} already started sweep {stored.sweep_id} with "
                    "another spec; use a new key for a different sweep"
                )
            return self.view(stored.sweep_id)
        log.info("sweep %s started: %d trials of %s", stored.sweep_id, len(stored.trials), spec.model)
        self.advance(stored)
        return self.view(stored.sweep_id)

    def view(self, sweep_id: str) -> SweepView:
        sweep = self._get(sweep_id)
        jobs = self._jobs(sweep)  # as Status shows them
        trials = []
        for i, params in enumerate(sweep.trials):
            job = jobs.get(trial_key(sweep_id, i))
            trials.append(TrialView(i, params, job, trial_metric(job, sweep.spec.metric)))
        return SweepView(
            sweep, trials, best_trial(trials, sweep.spec.direction), jobs.get(final_key(sweep_id))
        )

    def list_sweeps(self, states: Iterable[SweepState] = (), limit: int = 0) -> list[SweepView]:
        limit = validation.list_limit(limit)
        return [self.view(s.sweep_id) for s in self.store.list_sweeps(states, limit)]

    async def kill(self, sweep_id: str) -> SweepView:
        """Stop a sweep: no more trials; its queued jobs killed, its running
        ones STOPPING (their trees end in the background, then KILLED), as Kill."""
        sweep = self._get(sweep_id)
        if sweep.state.ended:
            return self.view(sweep_id)
        # Recorded first: the driver starts nothing for a killed sweep.
        sweep.state, sweep.end_time = SweepState.KILLED, time.time()
        sweep.reason = "killed by a KillSweep request"
        self.store.update_sweep(sweep)
        for job in self._jobs(sweep).values():
            if not job.state.ended:
                await self.jobs.kill(job.job_id)
        log.info("sweep %s killed", sweep_id)
        return self.view(sweep_id)

    # -- advancing -------------------------------------------------------------

    def on_event(self, job_id: str, event: JobEvent) -> None:
        """EventHub listener: a sweep job changed state."""
        if event.job is not None and event.job.sweep_id and event.job.state.ended:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                for sweep in self.store.list_sweeps((SweepState.RUNNING, SweepState.PUSHING), 1000):
                    self.advance(sweep)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the driver must outlive one bad turn
                log.exception("sweep driver turn failed")
            try:
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def advance(self, sweep: SweepRecord) -> None:
        """One step: start trials up to the parallel limit; when all have
        ended, start the final job; when it has ended, end the sweep."""
        if sweep.state.ended:
            return
        jobs = self._jobs(sweep)
        spec = sweep.spec
        try:
            if sweep.state is SweepState.RUNNING:
                trials = [jobs.get(trial_key(sweep.sweep_id, i)) for i in range(len(sweep.trials))]
                active = sum(1 for j in trials if j is not None and not j.state.ended)
                for i, job in enumerate(trials):
                    if job is None and active < spec.max_parallel:
                        trials[i] = self._start_job(
                            sweep, sweep.trials[i], trial_key(sweep.sweep_id, i), True
                        )
                        active += 1
                if any(j is None or not j.state.ended for j in trials):
                    return
                views = [
                    TrialView(i, p, j, trial_metric(j, spec.metric))
                    for i, (p, j) in enumerate(zip(sweep.trials, trials, strict=True))
                ]
                best = best_trial(views, spec.direction)
                if best is None:
                    self._end(sweep, SweepState.FAILED, f"no trial succeeded with a held-out {spec.metric}")
                    return
                started = self._start_job(sweep, best.params, final_key(sweep.sweep_id), False)
                sweep.state, sweep.final_job_id = SweepState.PUSHING, started.job_id
                sweep.reason = (
                    f"best trial {best.index} ({spec.metric} {best.metric:.3f}, job {best.job.job_id if best.job else '?'}): "
                    f"training its configuration as job {started.job_id} with validation before push"
                )
                self.store.update_sweep(sweep)
                log.info("sweep %s: %s", sweep.sweep_id, sweep.reason)
                return
            final = jobs.get(final_key(sweep.sweep_id))
            if final is None:  # recorded PUSHING but the job is gone: start it (idempotent)
                final = self._start_job(
                    sweep, self._best_params(sweep, jobs), final_key(sweep.sweep_id), False
                )
            if not final.state.ended:
                return
            if final.state is JobState.SUCCEEDED:
                self._end(
                    sweep,
                    SweepState.SUCCEEDED,
                    f"the best configuration was pushed as version {final.model_version} (job {final.job_id})",
                )
            else:
                self._end(
                    sweep,
                    SweepState.FAILED,
                    f"the best configuration's job {final.job_id} {final.state.value.lower()}: {final.reason}",
                )
        except ServiceError as exc:  # e.g. the corpus was removed since the sweep started
            self._end(sweep, SweepState.FAILED, f"could not start a job: {exc}")

    def _best_params(self, sweep: SweepRecord, jobs: Mapping[str, JobRecord]) -> dict[str, int]:
        views = [
            TrialView(i, p, jobs.get(trial_key(sweep.sweep_id, i)), None) for i, p in enumerate(sweep.trials)
        ]
        views = [dataclasses.replace(v, metric=trial_metric(v.job, sweep.spec.metric)) for v in views]
        best = best_trial(views, sweep.spec.direction)
        if best is None:
            raise InvalidArgument("no trial succeeded")
        return best.params

    def _start_job(self, sweep: SweepRecord, params: dict[str, int], key: str, trial: bool) -> JobRecord:
        spec = sweep.spec
        return self.jobs.start_job(
            JobRequest(
                model=spec.model,
                label=spec.label,
                recipe=spec.recipe,
                corpus=spec.corpus,
                params=dict(params),
                idempotency_key=key,
                validation=spec.validation,
                sweep_id=sweep.sweep_id,
                no_push=trial,
                priority=spec.priority,  # trials inherit the sweep's priority
            )
        )

    def _end(self, sweep: SweepRecord, state: SweepState, reason: str) -> None:
        sweep.state, sweep.reason, sweep.end_time = state, reason, time.time()
        self.store.update_sweep(sweep)
        log.info("sweep %s %s: %s", sweep.sweep_id, state.value.lower(), reason)

    def _get(self, sweep_id: str) -> SweepRecord:
        if not sweep_id or len(sweep_id) > 128 or not sweep_id.isprintable():
            raise InvalidArgument("sweep_id is required (StartSweep returns it; ListSweeps shows them all)")
        sweep = self.store.get_sweep(sweep_id)
        if sweep is None:
            raise NotFound(f"no sweep {sweep_id!r}; `trainer sweep list` shows the sweeps this Trainer knows")
        return sweep

    def _jobs(self, sweep: SweepRecord) -> dict[str, JobRecord]:
        """The sweep's jobs by idempotency key."""
        jobs = self.jobs.sweep_jobs(sweep.sweep_id, len(sweep.trials) + 10)
        return {j.idempotency_key: j for j in jobs}
