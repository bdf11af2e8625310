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

The search is Optuna's (trainer.search): TPE, random or grid sampling, and
a pruner that stops a trial whose held-out metric after an epoch (the
recipe's ``progress`` line carries it as ``held_out``) is poor next to the
other trials' at that epoch. A pruned trial's job is killed through the
ordinary Kill path (KILLED, reason "pruned by ..."; not a load-gate kill, so
nothing counts it against the gate), its checkpoint and last metrics stay,
and its trial state is PRUNED (``Trial.trial_state``).

The pure part (``check_spec``, ``planned_trials``, ``best_trial``) is unit
tested; ``SweepDriver`` persists sweeps in the job store (and their studies
in the state directory) and advances them on job events; it depends on the
narrow ``SweepJobs`` and ``SweepStore`` protocols (trainer.sweep_search), not
on the service. Trial ``i`` of a sweep is the job with idempotency key ``KEY_PREFIX + <sweep_id>/trial-<i>``
and the final job ``KEY_PREFIX + <sweep_id>/final`` (a prefix no client key
can hold), and a drawn trial is recorded before its job starts, so a
restarted Trainer (or a crash between drawing, starting and recording)
never starts one twice and loses none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterable, Mapping

from rpc.errors import AlreadyExists, InvalidArgument, NotFound, ServiceError
from trainer import search, validation
from trainer.config import TrainerConfig
from trainer.domain import (
    JobRecord,
    JobRequest,
    JobState,
    SearchAlgorithm,
    SweepRecord,
    SweepSpec,
    SweepState,
    SweepView,
    TrialState,
)
from trainer.events import JobEvent
from trainer.sweep_search import (
    KEY_PREFIX,
    MAX_SPEC_BYTES,
    SweepJobs,
    SweepStore,
    best_trial,
    check_spec,
    final_key,
    own_key,
    planned_trials,
    trial_key,
    trial_metric,
    trial_scored,
    trial_view,
)

# The pure part lives in trainer.sweep_search; these names stay importable from here.
__all__ = [
    "KEY_PREFIX",
    "MAX_SPEC_BYTES",
    "SweepDriver",
    "SweepJobs",
    "SweepStore",
    "best_trial",
    "check_spec",
    "final_key",
    "planned_trials",
    "trial_key",
    "trial_metric",
    "trial_scored",
]

log = logging.getLogger(__name__)

POLL_S = 1.0


# -- the driver ------------------------------------------------------------------------


class SweepDriver:
    """Starts sweeps, keeps up to ``max_parallel`` trials queued or running,
    reports their per-epoch held-out metric to the sweep's pruner (and
    stops those it prunes), draws TPE's next trials from the results so
    far, and once all have ended trains the best configuration with
    validation before push. Everything it knows is in the job store and the
    sweep's study (trainer.search), so a restarted Trainer resumes every
    unfinished sweep where it was."""

    def __init__(self, jobs: SweepJobs, store: SweepStore, config: TrainerConfig) -> None:
        self.jobs = jobs
        self.store = store
        self.config = config
        self.max_trials = config.max_sweep_trials
        self._wake = asyncio.Event()
        self._stopping = False
        self._studies: dict[str, search.SweepStudy | None] = {}

    # -- the RPCs --------------------------------------------------------------

    def start_sweep(self, spec: SweepSpec) -> SweepView:
        cfg = self.config
        validation.check_request_fields(spec.model, spec.label, spec.idempotency_key, spec.labels)
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
        sweep_id = f"{spec.model}-sweep-{secrets.token_hex(6)}"
        path = search.study_path(cfg.state_dir, sweep_id)
        study = search.SweepStudy(path, spec, recipe)
        planned, note = study.plan()
        # Grid and random search do not learn from results: every trial is
        # drawn now (Sweep.trials lists them all); TPE draws each one when a
        # slot frees, from the results so far.
        trials: list[dict[str, int]] = []
        if spec.algorithm is not SearchAlgorithm.TPE:
            for i in range(planned):
                params = study.draw(i)
                if params is None:
                    break
                trials.append(recipe.validate({**spec.base_params, **params}))
        record = SweepRecord(
            sweep_id=sweep_id,
            spec=spec,
            trials=trials,
            state=SweepState.RUNNING,
            create_time=time.time(),
            reason="running its trials" + (f" ({note})" if note else ""),
        )
        stored, created = self.store.insert_sweep(record)
        if not created:
            path.unlink(missing_ok=True)
            if stored.spec != spec:
                raise AlreadyExists(
                    f"idempotency_key {spec.idempotency_key!r} already started sweep {stored.sweep_id} with "
                    "another spec; use a new key for a different sweep"
                )
            return self.view(stored.sweep_id)
        self._studies[sweep_id] = study
        log.info(
            "sweep %s started: %s search, %d trials of %s, %s pruner",
            stored.sweep_id,
            spec.algorithm.value,
            planned,
            spec.model,
            search.pruner_words(spec.pruner),
        )
        self._wake.set()
        return self.view(stored.sweep_id)

    def view(self, sweep_id: str, detail: bool = True) -> SweepView:
        """A sweep with its trials (``detail``: with their per-epoch values)."""
        sweep = self._get(sweep_id)
        return self._view(sweep, detail)

    def _view(self, sweep: SweepRecord, detail: bool = True) -> SweepView:
        jobs = self._jobs(sweep)
        study = self._study(sweep)
        trials = []
        for i, params in enumerate(sweep.trials):
            trials.append(
                trial_view(sweep.spec, study, i, params, jobs.get(trial_key(sweep.sweep_id, i)), detail)
            )
        final = jobs.get(final_key(sweep.sweep_id))
        complete = [t for t in trials if t.state is TrialState.COMPLETE]
        return SweepView(
            sweep,
            trials,
            best_trial(complete, sweep.spec.direction),
            final,
            trial_epochs=sum(t.job.progress.epoch for t in trials if t.job is not None),
        )

    def list_sweeps(
        self, states: Iterable[SweepState] = (), limit: int = 0, before_seq: int = 0
    ) -> list[SweepView]:
        """Sweeps newest first, their trials without per-epoch values."""
        limit = validation.list_limit(limit)
        return [self._view(s, detail=False) for s in self.store.list_sweeps(states, limit, before_seq)]

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
        """EventHub listener: a sweep job changed state or reported an epoch."""
        if event.job is not None and event.job.sweep_id:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                for sweep in self.store.list_sweeps((SweepState.RUNNING, SweepState.PUSHING), 1000):
                    await self.advance(sweep)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the driver must outlive one bad turn
                log.exception("sweep driver turn failed")
            try:
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def advance(self, sweep: SweepRecord) -> None:
        """One step: judge running trials by their latest epoch (stopping
        those the pruner prunes), tell the study how ended ones came out,
        start (and with TPE draw) trials up to the parallel limit; when all
        have ended, start the final job; when it has ended, end the sweep."""
        if sweep.state.ended:
            return
        jobs = self._jobs(sweep)
        spec = sweep.spec
        try:
            if sweep.state is SweepState.RUNNING:
                study = self._study(sweep)
                trials = [jobs.get(trial_key(sweep.sweep_id, i)) for i in range(len(sweep.trials))]
                if study is not None:
                    await self._judge(sweep, study, trials)
                    if not self._unchanged(sweep):  # e.g. KillSweep while the study was written
                        return
                active = sum(1 for j in trials if j is not None and not j.state.ended)
                for i, job in enumerate(trials):
                    if job is None and active < spec.max_parallel:
                        trials[i] = self._start_job(
                            sweep, sweep.trials[i], trial_key(sweep.sweep_id, i), True
                        )
                        active += 1
                while (
                    study is not None and active < spec.max_parallel and await self._draw_next(sweep, study)
                ):
                    i = len(sweep.trials) - 1
                    trials.append(self._start_job(sweep, sweep.trials[i], trial_key(sweep.sweep_id, i), True))
                    active += 1
                if any(j is None or not j.state.ended for j in trials):
                    return
                if study is not None and len(sweep.trials) < study.plan()[0]:
                    return
                views = [
                    trial_view(sweep.spec, study, i, p, j)
                    for i, (p, j) in enumerate(zip(sweep.trials, trials, strict=True))
                ]
                best = best_trial([v for v in views if v.state is TrialState.COMPLETE], spec.direction)
                if best is None:
                    self._end(
                        sweep,
                        SweepState.FAILED,
                        f"no trial succeeded with a held-out {spec.metric}" + self._summary(sweep),
                    )
                    return
                started = self._start_job(sweep, best.params, final_key(sweep.sweep_id), False)
                sweep.state, sweep.final_job_id = SweepState.PUSHING, started.job_id
                sweep.reason = (
                    f"best trial {best.index} ({spec.metric} {best.metric:.3f}, job {best.job.job_id if best.job else '?'}): "
                    f"training its configuration as job {started.job_id} with validation before push"
                    + self._summary(sweep)
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
                    f"the best configuration was pushed as version {final.model_version} (job {final.job_id})"
                    + self._summary(sweep),
                )
            else:
                self._end(
                    sweep,
                    SweepState.FAILED,
                    f"the best configuration's job {final.job_id} {final.state.value.lower()}: {final.reason}"
                    + self._summary(sweep),
                )
        except ServiceError as exc:  # e.g. the corpus was removed since the sweep started
            self._end(sweep, SweepState.FAILED, f"could not start a job: {exc}")

    async def _judge(
        self, sweep: SweepRecord, study: search.SweepStudy, trials: list[JobRecord | None]
    ) -> None:
        """Tell the study how ended trials came out; report running ones'
        latest held-out metric and stop those the pruner prunes (also one
        pruned before a restart whose job still runs)."""
        metric = sweep.spec.metric
        for i, job in enumerate(trials):
            if job is None:
                continue
            record = study.record(i)
            if job.state.ended:
                await asyncio.to_thread(study.tell, i, trial_metric(job, metric))
                continue
            value = job.progress.held_out.get(metric)
            epoch = job.progress.held_out_epoch
            pruned = record is not None and record.state is search.OptunaState.PRUNED
            if not pruned and value is not None and epoch > 0:
                # After its last epoch a trial is as good as done: nothing left to save.
                last = 0 < job.progress.epochs <= epoch
                pruned = await asyncio.to_thread(study.report, i, epoch, value, not last)
            if pruned and job.state is not JobState.STOPPING:
                why = (
                    f"pruned by the sweep's {search.pruner_words(sweep.spec.pruner)} pruner after epoch {epoch}: "
                    f"held-out {metric} {value if value is not None else float('nan'):.3f} is poor next to the "
                    "other trials' at that epoch (checkpoint and metrics kept)"
                )
                log.info("sweep %s trial %d (job %s) %s", sweep.sweep_id, i, job.job_id, why)
                await self.jobs.kill(job.job_id, why)

    def _summary(self, sweep: SweepRecord) -> str:
        study = self._study(sweep)
        return study.summary(len(sweep.trials)) if study is not None else ""

    def _unchanged(self, sweep: SweepRecord) -> bool:
        stored = self.store.get_sweep(sweep.sweep_id)
        return stored is not None and stored.state is sweep.state

    async def _draw_next(self, sweep: SweepRecord, study: search.SweepStudy) -> bool:
        """Draw the next trial into the sweep (recorded before its job starts);
        False when the sweep has all it will get (or was killed meanwhile).
        The study's file is written off the event loop."""
        if len(sweep.trials) >= study.plan()[0]:
            return False
        recipe = validation.recipe_named(self.config.registry, sweep.spec.recipe)
        params = await asyncio.to_thread(study.draw, len(sweep.trials))
        if not self._unchanged(sweep):
            return False
        if params is None:
            study.end_search(len(sweep.trials))
            return False
        sweep.trials.append(recipe.validate({**sweep.spec.base_params, **params}))
        self.store.update_sweep(sweep)
        return True

    def _study(self, sweep: SweepRecord) -> search.SweepStudy | None:
        """The sweep's study, opened once (None: a sweep started before sweeps
        ran on Optuna; its trials were all drawn then, and it is not pruned)."""
        if sweep.sweep_id not in self._studies:
            path = search.study_path(self.config.state_dir, sweep.sweep_id)
            study = None
            if path.exists():
                recipe = validation.recipe_named(self.config.registry, sweep.spec.recipe)
                study = search.SweepStudy(path, sweep.spec, recipe)
            self._studies[sweep.sweep_id] = study
        return self._studies[sweep.sweep_id]

    def _best_params(self, sweep: SweepRecord, jobs: Mapping[str, JobRecord]) -> dict[str, int]:
        study = self._study(sweep)
        views = [
            trial_view(sweep.spec, study, i, p, jobs.get(trial_key(sweep.sweep_id, i)))
            for i, p in enumerate(sweep.trials)
        ]
        best = best_trial([v for v in views if v.state is TrialState.COMPLETE], sweep.spec.direction)
        if best is None:
            raise InvalidArgument("no trial succeeded")
        return best.params

    def _start_job(self, sweep: SweepRecord, params: dict[str, int], key: str, trial: bool) -> JobRecord:
        spec = sweep.spec
        return self.jobs.start_job(
            JobRequest(
                model=spec.model,
                label=spec.label,
                labels=spec.labels,
                recipe=spec.recipe,
                corpus=spec.corpus,
                params=dict(params),
                idempotency_key=key,
                validation=spec.validation,
                sweep_id=sweep.sweep_id,
                no_push=trial,
                priority=spec.priority,  # trials inherit the sweep's priority
            ),
            internal_key=True,
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
        """The sweep's jobs by idempotency key (as trial_key / final_key make
        them), as they are now (a running job's latest epoch included)."""
        jobs = self.jobs.sweep_jobs(sweep.sweep_id, len(sweep.trials) + 10)
        return {own_key(j.idempotency_key): j for j in jobs}
