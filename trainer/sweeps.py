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

The pure part (``check_spec``, ``generate_trials``, ``best_trial``: the
search, in trainer.sweep_search) is unit tested; ``SweepDriver`` persists sweeps in the job store and advances them on
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
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from rpc.errors import AlreadyExists, InvalidArgument, NotFound, ServiceError
from trainer import validation
from trainer.config import TrainerConfig
from trainer.domain import (
    JobRecord,
    JobRequest,
    JobState,
    SweepRecord,
    SweepSpec,
    SweepState,
    SweepView,
    TrialView,
    ValidationPolicy,
)
from trainer.events import JobEvent
from trainer.recipes import Recipe
from trainer.sweep_search import (
    DEFAULT_GRID_POINTS,
    MAX_GRID_POINTS,
    RANDOM_DRAWS,
    best_trial,
    check_spec,
    final_key,
    generate_trials,
    trial_key,
    trial_metric,
    trial_scored,
)

__all__ = [
    "DEFAULT_GRID_POINTS",
    "MAX_GRID_POINTS",
    "RANDOM_DRAWS",
    "SweepDriver",
    "SweepJobs",
    "SweepStore",
    "best_trial",
    "check_spec",
    "final_key",
    "generate_trials",
    "trial_key",
    "trial_metric",
    "trial_scored",
]

log = logging.getLogger(__name__)

POLL_S = 1.0


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
