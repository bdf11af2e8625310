"""The Trainer's core: Start / Status / Kill / List / Watch on domain types.

No gRPC here. Start only validates and records the job (no process is started
and no load is sampled while the caller waits); the scheduler admits it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable

from rpc.errors import AlreadyExists, InvalidArgument, NotFound
from trainer import job_limits, push, sweeps, validation
from trainer.cgroup_limits import LoadLimits, node_limits
from trainer.config import TrainerConfig
from trainer.domain import JobRecord, JobRequest, JobState, SweepSpec, SweepView, ValidationPolicy
from trainer.events import EventHub, JobEvent
from trainer.executor import Executor
from trainer.gate import LoadSampler
from trainer.jobs import JobLog
from trainer.queued_store import QueuedStore
from trainer.recipes import Recipe
from trainer.scheduler import Scheduler

log = logging.getLogger(__name__)


class StateDirInUse(RuntimeError):
    """Another Trainer holds the state directory."""


class TrainerService:
    def __init__(self, config: TrainerConfig, sampler=None, executor: Executor | None = None) -> None:
        self.config = config
        self.executor = executor
        self.sampler = sampler if sampler is not None else LoadSampler(config.sample_interval_s)
        self.hub = EventHub()
        self.store: QueuedStore | None = None
        self.scheduler: Scheduler | None = None
        self._task: asyncio.Task | None = None
        self._lock_fd: int | None = None
        self._sweeps: sweeps.SweepDriver | None = None
        self._sweep_task: asyncio.Task | None = None

    @property
    def sweeps(self) -> sweeps.SweepDriver:
        """The sweep driver (made by ``start``, once the store is open)."""
        assert self._sweeps is not None, "start() first"
        return self._sweeps

    async def start(self) -> None:
        """Take the state directory, re-attach or judge jobs a previous Trainer
        left running, and start sampling and scheduling."""
        cfg = self.config
        for path in (cfg.state_dir, cfg.data_root, cfg.model_root):
            path.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        self.store = QueuedStore(cfg.database)
        if self.executor is None and cfg.executor == "ray":
            from trainer.ray_executor import RayExecutor  # the `ray` extra, loaded only when asked for

            self.executor = RayExecutor(cfg)
        self.scheduler = Scheduler(cfg, self.store, self.hub, self.sampler, self.executor)
        self._sweeps = sweeps.SweepDriver(self, self.store, cfg)
        # Quick (no process is waited for): the strays of jobs that ended
        # while the Trainer was down are cleared by the scheduler once it runs.
        await asyncio.to_thread(self.scheduler.find_cgroups)
        await asyncio.to_thread(self.scheduler.reconcile)
        self.sampler.start()
        self._task = asyncio.create_task(self.scheduler.run(), name="trainer-scheduler")
        # Sweeps resume where the store says they were (their jobs were re-attached above).
        self.hub.listen(self.sweeps.on_event)
        self._sweep_task = asyncio.create_task(self.sweeps.run(), name="trainer-sweeps")

    async def close(self) -> None:
        """Stop scheduling; running jobs keep running (or are stopped and
        requeued with ``stop_jobs_on_exit``)."""
        if self._sweep_task is not None:
            self.sweeps.stop()
            self._sweep_task.cancel()
            await asyncio.gather(self._sweep_task, return_exceptions=True)
            self._sweep_task = None
        if self._task is not None:
            assert self.scheduler is not None  # set with _task by start()
            # stop() as well as cancel(): a cancel can be lost (see Scheduler._pause).
            self.scheduler.stop()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self.scheduler.shutdown(self.config.stop_jobs_on_exit)
        self.hub.close()
        self.sampler.stop()
        stop_executor = getattr(self.executor, "stop", None)
        if callable(stop_executor):
            # The Ray executor joins its poller, which may be inside an HTTP call: off the loop.
            await asyncio.to_thread(stop_executor)
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock_state_dir(self) -> None:
        path = self.config.state_dir / "trainer.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by jobs (O_CLOEXEC by default)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirInUse(
                f"another Trainer is using the state directory {self.config.state_dir}; stop it or pick another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    # -- the RPCs, in domain terms ------------------------------------------------

    async def start_job_durably(self, request: JobRequest) -> JobRecord:
        """Start as the RPC does: ``start_job``, then wait (a little) for the job to be on disk."""
        record = self.start_job(request)
        await self._written()
        return record

    async def start_sweep(self, spec: SweepSpec) -> SweepView:
        """StartSweep as the RPC does: then wait (a little) for the sweep to be on disk."""
        view = self.sweeps.start_sweep(spec)
        await self._written()
        return view

    async def _written(self) -> None:
        assert self.store is not None, "start() first"
        if not await self.store.flush(self.config.store_write_wait_s):
            log.warning(
                "the job store is locked: answering before the write is on disk (it is queued and follows)"
            )

    def start_job(self, request: JobRequest, internal_key: bool = False) -> JobRecord:
        """Validate and queue a job; with a known idempotency key, the job it
        made. ``internal_key``: the key is the Trainer's own (a sweep's,
        outside what a client may send), not checked as a client's."""
        cfg = self.config
        client_key = "" if internal_key else request.idempotency_key
        validation.check_request_fields(request.model, request.label, client_key, request.labels)
        recipe = validation.recipe_named(cfg.registry, request.recipe or cfg.default_recipe)
        params = recipe.validate(request.params)
        corpus, _ = validation.resolve_corpus(cfg.data_root, request.corpus or cfg.default_corpus)
        policy = self.validation_policy(request, recipe)
        job_limits.check_limits(request.deadline_s, request.deadline_at, request.max_retries, time.time())
        priority = job_limits.check_priority(request.priority)
        record = JobRecord(
            job_id=f"{request.model}-{secrets.token_hex(6)}",
            recipe=recipe.name,
            model=request.model,
            label=request.label,
            corpus=corpus,
            params=params,
            state=JobState.QUEUED,
            create_time=time.time(),
            reason="queued: waiting for the load gate",
            idempotency_key=request.idempotency_key,
            labels=list(request.labels),
            validation=policy,
            sweep_id=request.sweep_id,
            no_push=request.no_push,
            deadline_s=request.deadline_s or 0.0,
            deadline_at=request.deadline_at or 0.0,
            max_retries=request.max_retries,
            priority=int(priority),
        )
        assert self.store is not None and self.scheduler is not None, "start() first"
        stored, created = self.store.insert(record)
        if not created:
            same = (
                stored.recipe,
                stored.model,
                stored.label,
                stored.labels,
                stored.corpus,
                stored.params,
                stored.validation,
            ) == (
                record.recipe,
                record.model,
                record.label,
                record.labels,
                record.corpus,
                record.params,
                record.validation,
            )
            if not same:
                raise AlreadyExists(
                    f"idempotency_key {request.idempotency_key!r} already started job {stored.job_id} with other "
                    "parameters; use a new key for a different job"
                )
            return self.scheduler.current(stored)
        log.info(
            "job %s queued: %s %s (%s) on %s",
            stored.job_id,
            stored.recipe,
            stored.model,
            stored.label,
            corpus,
        )
        self.scheduler.wake()
        return stored

    def validation_policy(self, request: JobRequest, recipe: Recipe) -> ValidationPolicy | None:
        """The validation before push in effect for a Start (None: the recipe
        does not validate); its held-out corpus must lie in the data root."""
        policy = push.resolve_policy(
            request.validation, self.config.validation, recipe.name, recipe.validates
        )
        if policy is not None and policy.held_out_corpus:
            try:
                held_out, _ = validation.resolve_corpus(self.config.data_root, policy.held_out_corpus)
            except (InvalidArgument, NotFound) as exc:
                raise type(exc)(f"validation.held_out_corpus: {exc}") from None
            policy = dataclasses.replace(policy, held_out_corpus=held_out)
        return policy

    def job(self, job_id: str) -> JobRecord:
        validation.check_job_id(job_id)
        assert self.store is not None and self.scheduler is not None, "start() first"
        record = self.store.get(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}; `trainer list` shows the jobs this Trainer knows")
        return self.scheduler.current(record)

    def status(self, job_id: str, log_lines: int = 0) -> tuple[JobRecord, list[str]]:
        lines = validation.log_lines(log_lines)
        record = self.job(job_id)
        return record, JobLog(self.config.log_path(job_id), self.config.max_log_bytes).tail(lines)

    def load_limits(self) -> LoadLimits:
        """The CPU and memory limits the gate's percentages are relative to
        (a sampler that does not say, e.g. a scripted one, measures the node)."""
        limits = getattr(self.sampler, "limits", None)
        return limits() if callable(limits) else node_limits()

    async def kill(self, job_id: str, reason: str = "killed by a Kill request") -> JobRecord:
        """Kill a job; answers at once: a running job comes back STOPPING
        (its tree is ended in the background, then it is KILLED). ``reason``:
        why (a sweep's pruner says so)."""
        record = self.job(job_id)
        if record.state.ended:
            return record
        assert self.scheduler is not None, "start() first"
        killed = await self.scheduler.kill(job_id, reason)
        await self._written()
        # None: the job left the store meanwhile; answer with what we had.
        return self.scheduler.current(killed or record)

    def list_jobs(
        self, states: Iterable[JobState] = (), model: str = "", limit: int = 0, sweep_id: str = ""
    ) -> list[JobRecord]:
        limit = validation.list_limit(limit)
        model = validation.model_filter(model)
        assert self.store is not None and self.scheduler is not None, "start() first"
        return [self.scheduler.current(r) for r in self.store.list(states, model, limit, sweep_id)]

    def sweep_jobs(self, sweep_id: str, limit: int) -> list[JobRecord]:
        """A sweep's jobs as Status shows them (trainer.sweeps.SweepJobs)."""
        assert self.store is not None and self.scheduler is not None, "start() first"
        return [self.scheduler.current(r) for r in self.store.list(sweep_id=sweep_id, limit=limit)]

    async def watch(
        self, job_id: str, log_lines: int = validation.DEFAULT_LOG_LINES
    ) -> AsyncIterator[JobEvent]:
        """The job now, its recent log lines, then every change and new line
        until it ends (or the caller stops iterating)."""
        record = self.job(job_id)
        sub = self.hub.subscribe(job_id)
        assert self.scheduler is not None, "start() first"
        # Snapshot before the first yield: lines logged after it arrive through ``sub``.
        recent = self.scheduler.recent_lines(job_id)
        if recent is None:
            recent = JobLog(self.config.log_path(job_id), self.config.max_log_bytes).tail(log_lines)
        try:
            yield JobEvent(job=record)
            for line in recent[-log_lines:]:
                yield JobEvent(line=line)
            if record.state.ended:
                return
            while (event := await sub.next()) is not None:
                yield event
                if event.final:
                    return
        finally:
            self.hub.unsubscribe(job_id, sub)
