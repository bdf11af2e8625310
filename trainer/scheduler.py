"""The scheduler: one loop on the server's event loop that admits queued jobs
through the gate, watches the load for the whole run, reaps jobs that end,
tails their logs and re-attaches jobs after a restart.

Admission and gate kills happen only here, one decision at a time, so
concurrent Start calls can never admit more than the gate allows. Anything
that may wait (killing a process tree) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import sys
import time

from trainer import gate, job_limits, push, sweeps
from trainer.cgroup import node_limits
from trainer.config import OverloadPolicy, TrainerConfig
from trainer.domain import JobRecord, JobState
from trainer.events import EventHub, JobEvent
from trainer.jobs import JobLog, JobProcess, apply_report, exit_reason, job_env, parse_output
from trainer.store import JobStore
from trainer.validation import resolve_corpus

log = logging.getLogger(__name__)

RECENT_LINES = 200
PERSIST_RESOURCES_S = 5.0
PERSIST_WAIT_DECISION_S = 20.0
# Weight of the newest sample in a job's smoothed CPU use.
SMOOTHING = 0.3


@dataclasses.dataclass
class LiveJob:
    """A job whose process runs (or is being stopped) right now."""

    record: JobRecord
    process: JobProcess
    log: JobLog
    admitted_at: float  # monotonic
    recent: collections.deque[str]
    version: int = 0
    # Set while the job is being killed or reaped; Kill waits on ``done``.
    busy: str = ""
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    measured_at: float = 0.0
    persisted_at: float = 0.0
    cpu_smoothed: float = 0.0


class Scheduler:
    def __init__(self, config: TrainerConfig, store: JobStore, hub: EventHub, sampler) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.sampler = sampler
        self.live: dict[str, LiveJob] = {}
        self.last_admit: float | None = None
        self.last_end: float | None = None
        self.last_kill: float | None = None
        # The gate's latest word on the job at the head of the queue.
        self.head_decision: tuple[str, dict] | None = None
        self._head_persisted: tuple[str, str, float] = ("", "", 0.0)
        self._wake = asyncio.Event()
        self._stopping = False
        self._deadlines_checked_at = 0.0
        # A job's shares are percentages of what the gate measures against
        # (the container's cgroup limits, or the node).
        limits = sampler.limits() if callable(getattr(sampler, "limits", None)) else node_limits()
        self._cpus, self._memory_total = limits.cpu_cores, limits.memory_bytes

    # -- the loop ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` at its next turn, even if a cancellation of it is lost."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad tick
                log.exception("scheduler tick failed")
            await self._pause()

    async def _pause(self) -> None:
        """Until woken or the next tick. Not ``asyncio.wait_for``: on Python
        3.11 it swallows a cancel that lands while the wake-up completes (a
        Start or a job's end just before shutdown), and the loop never ends."""
        try:
            async with asyncio.timeout(self.config.tick_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def tick(self) -> None:
        now = time.monotonic()
        samples = self.sampler.samples()
        for live in list(self.live.values()):
            if live.busy:
                continue
            self._drain(live)
            if live.process.exited():
                await self._finish(live)
            else:
                self._measure(live, now, samples)
        await self._enforce_deadlines()
        decision = gate.decide_overload(samples, now, self._running(), self.config.gate, self.last_kill)
        if decision is not None:
            await self._gate_kill(self.live[decision.job_id], decision)
            return
        self._admit_next(samples, now)

    def _running(self) -> list[gate.RunningJob]:
        return [
            gate.RunningJob(j.record.job_id, j.admitted_at, j.record.priority)
            for j in self.live.values()
            if not j.busy
        ]

    # -- admission -------------------------------------------------------------

    def _admit_next(self, samples: list[gate.Sample], now: float) -> None:
        head = self.store.next_queued(time.time())
        if head is None:
            self.head_decision = None
            return
        candidate = gate.Candidate(head.job_id)
        if head.overload_kills:
            candidate = gate.Candidate(
                head.job_id, head.resources.get("cpu_share"), head.resources.get("memory_share")
            )
        decision = gate.decide_admission(
            samples,
            now,
            self._running(),
            candidate,
            self.config.gate,
            self.last_admit,
            self.last_end,
            self.last_kill,
        )
        head.gate = _gate_info(decision)
        self.head_decision = (head.job_id, head.gate)
        if decision.action is gate.Action.ADMIT:
            self._spawn(head)
            return
        # Store and announce a WAIT when its gist changes (its numbers change every tick).
        job_id, gist, at = self._head_persisted
        gist_now = re.sub(r"[0-9.]+", "#", decision.reason)
        if (job_id, gist) != (head.job_id, gist_now) or time.monotonic() - at > PERSIST_WAIT_DECISION_S:
            self.store.update(head, "gate")
            self._head_persisted = (head.job_id, gist_now, time.monotonic())
            self._publish(head)

    def _spawn(self, record: JobRecord) -> None:
        cfg = self.config
        job_log = JobLog(cfg.log_path(record.job_id), cfg.max_log_bytes)
        recipe = cfg.registry.get(record.recipe)
        try:
            if recipe is None:
                raise ValueError(f"recipe {record.recipe!r} is no longer in this Trainer's registry")
            _, corpus_path = resolve_corpus(cfg.data_root, record.corpus)
            held_out = record.validation.held_out_corpus if record.validation else ""
            checkpoint_dir = cfg.checkpoint_dir(record.job_id)
            checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
            argv = recipe.argv(
                model=record.model,
                label=record.label,
                corpus=str(corpus_path),
                model_root=str(cfg.model_root),
                params=record.params,
                checkpoint_dir=str(checkpoint_dir),
                python=sys.executable,
                validation=record.validation,
                held_out_path=str(resolve_corpus(cfg.data_root, held_out)[1]) if held_out else None,
                no_push=record.no_push,
            )
            job_log.skip_to_end()
            recent = collections.deque(job_log.tail(RECENT_LINES), maxlen=RECENT_LINES)
            job_log.note(f"attempt {record.attempts + 1} started: {record.gate.get('reason', '')}")
            process = JobProcess.spawn(
                argv,
                cwd=cfg.work_dir(record.job_id),
                env=job_env(record.params.get("threads")),
                log_path=job_log.path,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to start fails the job, not the Trainer
            record.state, record.end_time = JobState.FAILED, time.time()
            record.reason = f"could not start: {exc}"
            job_log.note(record.reason)
            self.store.update(record)
            self._publish(record, final=True)
            return
        record.state, record.reason = JobState.RUNNING, record.gate.get("reason", "admitted")
        record.pid, record.pid_create_time = process.pid, process.create_time
        record.start_time, record.end_time, record.exit_code = time.time(), None, None
        record.attempts += 1
        self.store.update(record)
        now = time.monotonic()
        self.live[record.job_id] = LiveJob(record, process, job_log, now, recent, measured_at=now)
        self.last_admit = now
        self.head_decision = None
        log.info("job %s admitted (pid %d): %s", record.job_id, process.pid, record.reason)
        self._publish(record)

    # -- watching --------------------------------------------------------------

    def _drain(self, live: LiveJob, final: bool = False) -> None:
        changed = False
        for line in live.log.read_lines(final=final):
            live.recent.append(line)
            self.hub.publish(live.record.job_id, JobEvent(line=line))
            report = parse_output(line)
            if report is not None:
                push.fold_report(live.record, *report)
                version = apply_report(live.record.progress, *report)
                live.version = version or live.version
                changed = True
        live.log.trim()
        if changed:
            self.store.update(live.record, "progress", "push")
            self._publish(live.record)

    def _measure(self, live: LiveJob, now: float, samples: list[gate.Sample]) -> None:
        if now - live.measured_at < self.config.sample_interval_s:
            return
        live.measured_at = now
        usage = live.process.usage()
        live.cpu_smoothed += SMOOTHING * (usage.cpu_percent - live.cpu_smoothed)
        res = live.record.resources
        res.update(cpu_percent=usage.cpu_percent, rss_bytes=usage.rss_bytes, read_time=time.time())
        machine = gate.latest(samples)
        if machine is not None:
            res.update(machine_cpu_percent=machine.cpu, machine_memory_percent=machine.memory)
        # What this attempt used at most, as machine percentages: the gate's
        # estimate if the job is killed and requeued.
        res["cpu_share"] = max(res.get("cpu_share", 0.0), live.cpu_smoothed / self._cpus)
        res["memory_share"] = max(res.get("memory_share", 0.0), 100.0 * usage.rss_bytes / self._memory_total)
        if now - live.persisted_at >= PERSIST_RESOURCES_S:
            live.persisted_at = now
            self.store.update(live.record, "resources")

    # -- endings ---------------------------------------------------------------

    async def _finish(self, live: LiveJob) -> None:
        """The root exited by itself: clear strays, reap, and judge the result."""
        live.busy = "finishing"
        try:
            code = await asyncio.to_thread(live.process.terminate, self.config.kill_grace_s)
            self._drain(live, final=True)
            rec = live.record
            version_dir = self.config.model_root / rec.model / str(live.version)
            if live.version and code in (0, None) and version_dir.is_dir():
                rec.state, rec.model_version = JobState.SUCCEEDED, live.version
                rec.reason = f"exported version {live.version}"
            elif push.rejected(rec):
                rec.state, rec.reason = JobState.FAILED, rec.push.reason
            elif code in (0, None) and sweeps.trial_scored(rec):
                rec.state, rec.reason = JobState.SUCCEEDED, sweeps.trial_scored(rec)
            elif code == 0:
                rec.state = JobState.FAILED
                rec.reason = "exited 0 but reported no exported version (no result line, or its version directory is missing)"
            else:
                rec.state, rec.reason = JobState.FAILED, exit_reason(code, live.recent)
            retry = job_limits.retryable(rec, code)
            if retry:
                job_limits.requeue_for_retry(rec, self.config, time.time())
                live.log.note(rec.reason)
            self._end(live, code, final=not retry)
            if retry:
                rec.end_time = None
                self.store.update(rec, "end_time")
        finally:
            live.done.set()

    async def kill(self, job_id: str, reason: str, state: JobState = JobState.KILLED) -> JobRecord | None:
        """Stop a job: a queued one at once, a running one by killing its tree.
        Returns the job after the kill (unchanged if it had already ended).
        ``state``: KILLED, or FAILED for a passed deadline."""
        live = self.live.get(job_id)
        if live is None:
            rec = self.store.get(job_id)
            if rec is not None and rec.state is JobState.QUEUED:
                rec.state, rec.reason, rec.end_time = state, f"{reason} while queued", time.time()
                rec.gate = {}
                self.store.update(rec)
                self._publish(rec, final=True)
                self.wake()
            return rec
        if live.busy:
            await live.done.wait()
            return self.store.get(job_id)
        live.busy = "killing"
        try:
            live.log.note(reason)
            code = await asyncio.to_thread(live.process.terminate, self.config.kill_grace_s)
            self._drain(live, final=True)
            live.record.state, live.record.reason = state, reason
            self._end(live, code)
        finally:
            live.done.set()
        return live.record

    async def _gate_kill(self, live: LiveJob, decision: gate.Decision) -> None:
        live.busy = "gate"
        rec = live.record
        try:
            rec.gate = _gate_info(decision)
            live.log.note(decision.reason)
            log.warning("job %s: %s", rec.job_id, decision.reason)
            code = await asyncio.to_thread(live.process.terminate, self.config.kill_grace_s)
            self._drain(live, final=True)
            rec.overload_kills += 1
            rec.state, rec.reason = JobState.KILLED, decision.reason
            # A gate kill frees no place for another job: no admission credit.
            self._end(live, code, credit=False, final=False)
            cfg = self.config
            if cfg.overload_policy == OverloadPolicy.REQUEUE and rec.overload_kills <= cfg.max_requeues:
                backoff = cfg.requeue_backoff(rec.overload_kills)
                rec.state, rec.not_before, rec.end_time = JobState.QUEUED, time.time() + backoff, None
                rec.reason = (
                    f"{decision.reason}; requeued (overload kill {rec.overload_kills} of at most "
                    f"{cfg.max_requeues}), may run again in {backoff:.0f}s and resumes from its last epoch"
                )
            else:
                rec.state = JobState.FAILED
                why = (
                    "the overload policy is 'fail'"
                    if cfg.overload_policy == OverloadPolicy.FAIL
                    else (f"it was killed {rec.overload_kills} times (limit {cfg.max_requeues} requeues)")
                )
                rec.reason = f"{decision.reason}; not requeued: {why}"
            live.log.note(rec.reason)
            self.store.update(rec)
            self._publish(rec, final=rec.state.ended)
        finally:
            self.last_kill = time.monotonic()
            live.done.set()

    def _end(self, live: LiveJob, code: int | None, credit: bool = True, final: bool = True) -> None:
        rec = live.record
        # deadline_seconds counts run time over all attempts.
        rec.run_s += max(0.0, time.time() - (rec.start_time or time.time()))
        rec.exit_code, rec.end_time, rec.pid, rec.pid_create_time = code, time.time(), 0, 0.0
        self.live.pop(rec.job_id, None)
        if credit:
            self.last_end = time.monotonic()
        self.store.update(rec)
        log.info("job %s %s: %s", rec.job_id, rec.state.value.lower(), rec.reason)
        self._publish(rec, final=final)
        self.wake()

    # -- deadlines (trainer.job_limits) ----------------------------------------

    async def _enforce_deadlines(self) -> None:
        """Fail every job whose deadline has passed: a running one killed
        (SIGTERM, grace, SIGKILL), a queued one before it runs."""
        now = time.time()
        for live in list(self.live.values()):
            reason = "" if live.busy else job_limits.deadline_passed(live.record, now)
            if reason:
                await self.kill(live.record.job_id, reason, JobState.FAILED)
        if now - self._deadlines_checked_at >= 1.0:
            self._deadlines_checked_at = now
            for rec in self.store.in_state(JobState.QUEUED):
                reason = job_limits.deadline_passed(rec, now)
                if reason:
                    await self.kill(rec.job_id, reason, JobState.FAILED)

    # -- restart and shutdown --------------------------------------------------

    def reconcile(self) -> None:
        """After a restart: re-attach running jobs whose process lives on (same
        pid and create time); judge the others by their logs. Queued jobs stay queued."""
        for rec in self.store.in_state(JobState.RUNNING):
            process = JobProcess.attach(rec.pid, rec.pid_create_time)
            job_log = JobLog(self.config.log_path(rec.job_id), self.config.max_log_bytes)
            lines = job_log.read_lines(final=not process.alive)
            version = 0
            for line in lines:
                report = parse_output(line)
                if report is not None:
                    push.fold_report(rec, *report)
                    version = apply_report(rec.progress, *report) or version
            if process.alive:
                admitted_at = time.monotonic() - max(0.0, time.time() - (rec.start_time or time.time()))
                recent = collections.deque(lines[-RECENT_LINES:], maxlen=RECENT_LINES)
                self.live[rec.job_id] = LiveJob(rec, process, job_log, admitted_at, recent, version=version)
                self.last_admit = max(self.last_admit or admitted_at, admitted_at)
                rec.reason = f"re-attached to pid {rec.pid} after a Trainer restart"
                job_log.note(rec.reason)
                self.store.update(rec)
                continue
            process.terminate(self.config.kill_grace_s)  # strays it may have left
            if version and (self.config.model_root / rec.model / str(version)).is_dir():
                rec.state, rec.model_version = JobState.SUCCEEDED, version
                rec.reason = f"exported version {version} (it finished while the Trainer was down)"
            elif push.rejected(rec):
                rec.state, rec.reason = JobState.FAILED, rec.push.reason
            elif sweeps.trial_scored(rec):
                rec.state, rec.reason = (
                    JobState.SUCCEEDED,
                    sweeps.trial_scored(rec) + " (while the Trainer was down)",
                )
            else:
                rec.state = JobState.FAILED
                rec.reason = (
                    f"lost: its process (pid {rec.pid}) ended while the Trainer was down and its log "
                    "names no exported version"
                )
            rec.end_time, rec.pid, rec.pid_create_time = rec.end_time or time.time(), 0, 0.0
            job_log.note(rec.reason)
            self.store.update(rec)
            log.warning("job %s: %s", rec.job_id, rec.reason)

    async def shutdown(self, stop_jobs: bool) -> None:
        """Leave running jobs to be re-attached, or stop them and queue them again."""
        for live in list(self.live.values()):
            if live.busy:
                await live.done.wait()
                continue
            self._drain(live)
            if not stop_jobs:
                live.log.note(
                    "the Trainer stopped; the job keeps running and a restarted Trainer re-attaches it"
                )
                self.store.update(live.record, "progress", "resources")
                continue
            live.busy = "shutdown"
            live.log.note("the Trainer is stopping: killing the job and queueing it again")
            code = await asyncio.to_thread(live.process.terminate, self.config.kill_grace_s)
            self._drain(live, final=True)
            rec = live.record
            rec.state, rec.reason = (
                JobState.QUEUED,
                "requeued: the Trainer stopped while it ran; it resumes from its last epoch",
            )
            rec.exit_code, rec.pid, rec.pid_create_time, rec.not_before = code, 0, 0.0, 0.0
            rec.run_s += max(0.0, time.time() - (rec.start_time or time.time()))  # deadline_seconds
            self.store.update(rec)
            self._publish(rec)
            live.done.set()
        self.live.clear()

    # -- views -----------------------------------------------------------------

    def current(self, record: JobRecord) -> JobRecord:
        """``record`` with what only memory knows: a running job's latest
        readings, the gate's latest word on the head of the queue."""
        live = self.live.get(record.job_id)
        if live is not None:
            return live.record.copy()
        if self.head_decision is not None and self.head_decision[0] == record.job_id:
            record = record.copy()
            record.gate = dict(self.head_decision[1])
        return record

    def recent_lines(self, job_id: str) -> list[str] | None:
        live = self.live.get(job_id)
        return list(live.recent) if live is not None else None

    def _publish(self, record: JobRecord, final: bool = False) -> None:
        self.hub.publish(record.job_id, JobEvent(job=record.copy(), final=final))


def _gate_info(decision: gate.Decision) -> dict:
    return {
        "action": decision.action.value,
        "reason": decision.reason,
        "cpu": decision.cpu,
        "memory": decision.memory,
        "time": time.time(),
    }
