"""The jobs that run now: their attempts started through the executor
(trainer.executor), watched (report lines, usage), and ended. Every state
change goes through trainer.lifecycle (``decide``) and the store's one
``transition`` call, and is announced to watchers with the record as
written. Nothing here decides *when*: the scheduler does (admission, gate
kills, deadlines, shutdown)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
import threading
import time
from typing import Protocol

from modelspec.report import ResultReport, parse_line
from trainer import gate, lifecycle, push
from trainer.config import TrainerConfig
from trainer.domain import JobRecord, JobResources, JobState, Placement
from trainer.events import EventHub, JobEvent
from trainer.executor import Attempt, Executor, ExecutorUnavailable, LaunchSpec
from trainer.joblog import JobLog, exit_reason, shown_line
from trainer.jobs import job_env
from trainer.validation import resolve_corpus

log = logging.getLogger(__name__)

RECENT_LINES = 200
PERSIST_RESOURCES_S = 5.0
# How often a running job's processes are looked for harder (trainer.executor: discover).
DISCOVER_S = 2.0


class Store(Protocol):
    """The store calls this module makes (trainer.queued_store.QueuedStore)."""

    def transition(self, record: JobRecord, change: lifecycle.Change, now: float) -> JobRecord: ...

    def update(self, record: JobRecord, *fields: str) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...


@dataclasses.dataclass
class LiveJob:
    """A job whose attempt runs (or is being stopped) right now."""

    record: JobRecord
    attempt: Attempt
    log: JobLog
    admitted_at: float  # monotonic
    recent: collections.deque[str]
    version: int = 0
    cpu_budget: float = 0.0  # machine % its thread budget lets it use
    # Set while the job is being stopped or reaped (in the background).
    busy: str = ""
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    measured_at: float = 0.0
    persisted_at: float = 0.0
    discovered_at: float = 0.0
    # (monotonic time, tree cpu in % of one core): the samples of the last window.
    cpu_samples: collections.deque[tuple[float, float]] = dataclasses.field(default_factory=collections.deque)
    persisted_pids: frozenset[int] = frozenset()

    def recent_cpu(self) -> float | None:
        """Mean tree CPU (% of one core) over the samples kept, None before the first."""
        if not self.cpu_samples:
            return None
        return sum(c for _, c in self.cpu_samples) / len(self.cpu_samples)


class Attempts:
    def __init__(
        self, config: TrainerConfig, store: Store, hub: EventHub, executor: Executor, cpus: float, memory: int
    ) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.executor = executor
        self.cpus, self.memory_total = cpus, memory
        self.live: dict[str, LiveJob] = {}
        # Set by shutdown: kills under way skip what is left of their grace.
        self.hurry = threading.Event()

    # -- state changes ---------------------------------------------------------------------

    def change(self, record: JobRecord, event: lifecycle.Event) -> JobRecord | None:
        """Apply what ``event`` decides for ``record`` (None: nothing, it did not apply)."""
        now = time.time()
        decided = lifecycle.decide(record, event, lifecycle.RequeuePolicy.from_config(self.config), now)
        if decided is None:
            return None
        passing = lifecycle.passing_record(record, decided, now)
        if passing is not None:
            self.publish(passing)  # rule 6: Watch sees the attempt end KILLED on the way
        new = self.store.transition(record, decided, now)
        self.publish(new, final=new.state.ended)
        return new

    def publish(self, record: JobRecord, final: bool = False) -> None:
        self.hub.publish(record.job_id, JobEvent(job=record.copy(), final=final))

    def budget(self, record: JobRecord) -> float:
        return gate.thread_budget_share(int(record.params.get("threads", 1) or 1), self.cpus)

    # -- starting ------------------------------------------------------------------------------

    async def spawn(self, record: JobRecord, admitted: str, node: str = "") -> JobRecord | None:
        """Start the next attempt of a queued job. Returns the job as it is
        now (RUNNING, or FAILED when it could not start); None when the
        executor cannot start anything now (the job stays queued).

        The executor's start may block (a Ray submit is an HTTP call to the
        head), so it runs on a worker thread and the event loop keeps
        answering RPCs meanwhile. It is seen through to its end even if the
        scheduler is cancelled meanwhile (the attempt is recorded, then the
        cancel goes on), and an attempt whose job was killed while it
        started is stopped at once."""
        cfg = self.config
        job_log = JobLog(cfg.log_path(record.job_id), cfg.max_log_bytes)
        attempt_no = record.attempts + 1
        cancelled = False
        try:
            spec = dataclasses.replace(self._launch_spec(record, attempt_no, job_log), node=node)
            job_log.skip_to_end()
            recent = collections.deque(job_log.tail(RECENT_LINES), maxlen=RECENT_LINES)
            job_log.note(f"attempt {attempt_no} started: {admitted}")
            start = asyncio.ensure_future(asyncio.to_thread(self.executor.spawn, spec))
            cancelled = await _through_cancel(start)
            attempt = start.result()
        except ExecutorUnavailable as exc:
            job_log.note(f"attempt {attempt_no} not started: {exc}; the job stays queued")
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to start fails the job, not the Trainer
            failed = self.change(record, lifecycle.StartFailed(str(exc)))
            job_log.note(failed.reason if failed is not None else f"could not start: {exc}")
            return failed
        now_record = self.store.get(record.job_id)
        if now_record is not None and now_record.state is not JobState.QUEUED:
            # A Kill (or a deadline) ended the queued job while its attempt started.
            job_log.note(f"attempt {attempt_no} stopped: the job was {now_record.state.name} once it started")
            await asyncio.to_thread(attempt.stop, cfg.kill_grace_s, 5.0, self.hurry)
            return now_record
        pid, create_time, containment = attempt.identity()
        new = self.change(
            record, lifecycle.Admitted(admitted, pid, create_time, containment, attempt.placement)
        )
        assert new is not None, "a queued job is admitted"
        now = time.monotonic()
        self.live[new.job_id] = LiveJob(
            new, attempt, job_log, now, recent, cpu_budget=self.budget(new), measured_at=now
        )
        log.info("job %s admitted (%s): %s", new.job_id, where(new.placement, pid), new.reason)
        if cancelled:
            raise asyncio.CancelledError
        return new

    def _launch_spec(self, record: JobRecord, attempt: int, job_log: JobLog) -> LaunchSpec:
        cfg = self.config
        recipe = cfg.registry.get(record.recipe)
        if recipe is None:
            raise ValueError(f"recipe {record.recipe!r} is no longer in this Trainer's registry")
        _, corpus_path = resolve_corpus(cfg.data_root, record.corpus)
        held_out = record.validation.held_out_corpus if record.validation else ""
        checkpoint_dir = cfg.checkpoint_dir(record.job_id)
        checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = recipe.argv(
            model=record.model,
            label=record.label,
            labels=record.labels,
            corpus=str(corpus_path),
            model_root=str(cfg.model_root),
            params=record.params,
            checkpoint_dir=str(checkpoint_dir),
            python=sys.executable,
            validation=record.validation,
            held_out_path=str(resolve_corpus(cfg.data_root, held_out)[1]) if held_out else None,
            no_push=record.no_push,
        )
        threads = int(record.params.get("threads", 1) or 1)
        spec = LaunchSpec(
            record.job_id,
            attempt,
            tuple(argv),
            cfg.work_dir(record.job_id),
            {},
            job_log.path,
            threads,
            checkpoint_dir=checkpoint_dir,
        )
        spec.cwd.mkdir(parents=True, exist_ok=True)
        return dataclasses.replace(spec, env=job_env(record.params.get("threads"), spec.marker))

    # -- watching ------------------------------------------------------------------------------

    def drain(self, live: LiveJob, final: bool = False) -> None:
        """Read the attempt's new log lines: show them, fold its reports."""
        changed = False
        for line in live.log.read_lines(final=final):
            shown = shown_line(line)
            live.recent.append(shown)
            self.hub.publish(live.record.job_id, JobEvent(line=shown))
            report = parse_line(line)  # the whole line: a bundle's result may be long
            if report is not None:
                push.fold_report(live.record, report)
                live.record.progress = live.record.progress.with_report(report)
                if isinstance(report, ResultReport) and report.version:
                    live.version = report.version
                changed = True
        live.log.trim()
        if changed:
            self.store.update(live.record, "progress", "push")
            self.publish(live.record)

    def measure(self, live: LiveJob, now: float, samples: list[gate.Sample]) -> None:
        if now - live.measured_at < self.config.sample_interval_s:
            return
        live.measured_at = now
        attempt = live.attempt
        if now - live.discovered_at >= DISCOVER_S:
            live.discovered_at = now
            attempt.discover()
        usage = attempt.usage()
        policy = self.config.gate
        # The job's recent load: its tree over the last window, not an average since it started.
        live.cpu_samples.append((now, usage.cpu_percent))
        while live.cpu_samples and live.cpu_samples[0][0] < now - policy.window_s:
            live.cpu_samples.popleft()
        share = (live.recent_cpu() or 0.0) / self.cpus
        machine = gate.latest(samples)
        old = live.record.resources
        unstarved = old.cpu_unstarved
        reading = gate.summarize(samples, now, policy.window_s)
        full_window = live.cpu_samples and now - live.admitted_at >= policy.window_s
        if full_window and reading is not None and reading.cpu < policy.cpu_danger:
            unstarved = max(unstarved or 0.0, share)
        live.record.resources = JobResources(
            cpu_percent=usage.cpu_percent,
            rss_bytes=usage.rss_bytes,
            machine_cpu_percent=machine.cpu if machine is not None else old.machine_cpu_percent,
            machine_memory_percent=machine.memory if machine is not None else old.machine_memory_percent,
            read_time=time.time(),
            cpu_share=share,
            memory_share=100.0 * usage.rss_bytes / self.memory_total,
            cpu_unstarved=unstarved,
        )
        pid, create_time, containment = attempt.identity()
        pids = frozenset(p.pid for p in containment.descendants)
        if pids != live.persisted_pids:
            # A new descendant is on disk at once: a Trainer killed now still finds it.
            live.persisted_pids = pids
            live.record.containment = containment
            self.store.update(live.record, "containment")
        if now - live.persisted_at >= PERSIST_RESOURCES_S:
            live.persisted_at = now
            self.store.update(live.record, "resources")

    # -- ending ----------------------------------------------------------------------------------

    async def finish(self, live: LiveJob) -> None:
        """The root exited by itself: clear strays, reap, and judge it (trainer.lifecycle)."""
        try:
            code = await asyncio.to_thread(live.attempt.stop, self.config.kill_grace_s, 5.0, self.hurry)
            self.drain(live, final=True)
            rec = live.record
            lost = getattr(live.attempt, "lost", "")
            if lost:  # rule 8: requeued at once, resumes from its checkpoint (any node)
                new = self.change(rec, lifecycle.Lost(lost))
                if new is not None:
                    live.log.note(new.reason)
                    log.warning("job %s: %s", rec.job_id, new.reason)
                self._ended(live, new)
                return
            recipe = self.config.registry.get(rec.recipe)
            exited = lifecycle.Exited(
                code,
                version=live.version,
                exported=bool(live.version)
                and (self.config.model_root / rec.model / str(live.version)).is_dir(),
                failure=exit_reason(code, live.recent),
                deterministic_codes=frozenset(recipe.deterministic_exit_codes if recipe else ()),
            )
            new = self.change(rec, exited)
            if new is not None and new.state is lifecycle.QUEUED:
                live.log.note(new.reason)  # rule 5: a retry, and why
            self._ended(live, new)
        finally:
            live.done.set()

    def ask_stop(self, live: LiveJob, busy: str, kind: lifecycle.StopKind, reason: str) -> None:
        """The job goes STOPPING (its tree is ended by ``stop``)."""
        live.busy = busy
        live.log.note(reason)
        new = self.change(live.record, lifecycle.StopAsked(kind, reason))
        if new is not None:
            live.record = new

    async def stop(self, live: LiveJob, kind: lifecycle.StopKind, reason: str) -> JobRecord | None:
        """End the tree of a STOPPING job and record how it came out."""
        try:
            code = await asyncio.to_thread(live.attempt.stop, self.config.kill_grace_s, 5.0, self.hurry)
            return self.stopped(live, kind, reason, code)
        finally:
            live.done.set()

    def stopped(
        self, live: LiveJob, kind: lifecycle.StopKind, reason: str, code: int | None
    ) -> JobRecord | None:
        self.drain(live, final=True)
        new = self.change(live.record, lifecycle.Stopped(kind, reason, code))
        if new is not None and kind is lifecycle.StopKind.GATE:
            live.log.note(new.reason.removeprefix(f"{reason}; "))
        self._ended(live, new)
        return new

    def _ended(self, live: LiveJob, new: JobRecord | None) -> None:
        self.live.pop(live.record.job_id, None)
        if new is None:
            return
        live.record = new
        log.info("job %s %s: %s", new.job_id, new.state.value.lower(), new.reason)


def where(placement: Placement, pid: int = 0) -> str:
    """Where an attempt runs, in words."""
    if placement.executor == "ray":
        return f"Ray job {placement.handle} on node {placement.node[:12]}@{placement.address}"
    return f"pid {pid or placement.handle}"


async def _through_cancel(work: asyncio.Future) -> bool:
    """Wait for ``work`` to end even if the awaiting task is cancelled
    meanwhile; True when it was (the caller raises the cancel once done)."""
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
