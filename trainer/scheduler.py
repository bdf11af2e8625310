"""The scheduler: one loop on the server's event loop that admits queued jobs
through the gate, watches the load for the whole run, reaps jobs that end,
tails their logs and re-attaches jobs after a restart.

Admission and gate kills are decided only here, one decision at a time, so
concurrent Start calls can never admit more than the gate allows. Anything
that may wait (killing a process tree) runs in a background task on a worker
thread: Kill answers at once with the job STOPPING, a restarted Trainer
serves while the strays of jobs that ended are still being cleared, and the
loop keeps watching the other jobs meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

from modelspec.report import ResultReport, parse_line
from trainer import cluster_gate, gate, job_limits, push, sweeps
from trainer.cgroup_limits import node_limits
from trainer.config import OverloadPolicy, TrainerConfig
from trainer.domain import GateDecision, JobContainment, JobRecord, JobResources, JobState, Placement
from trainer.events import EventHub, JobEvent
from trainer.executor import Attempt, Executor, ExecutorUnavailable, LaunchSpec
from trainer.jobs import JobLog, exit_reason, job_env, shown_line
from trainer.local_runner import LocalExecutor
from trainer.store import JobStore
from trainer.validation import resolve_corpus

log = logging.getLogger(__name__)

RECENT_LINES = 200
PERSIST_RESOURCES_S = 5.0
PERSIST_WAIT_DECISION_S = 20.0
# How often a running job's processes are looked for by their marker (a scan of /proc).
DISCOVER_S = 2.0


@dataclasses.dataclass
class LiveJob:
    """A job whose process runs (or is being stopped) right now."""

    record: JobRecord
    process: Attempt
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


class Scheduler:
    def __init__(
        self, config: TrainerConfig, store: JobStore, hub: EventHub, sampler, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.sampler = sampler
        self.live: dict[str, LiveJob] = {}
        self.last_admit: float | None = None
        self.last_end: float | None = None
        self.last_kill: float | None = None
        # The gate's latest word on the job at the head of the queue.
        self.head_decision: tuple[str, GateDecision] | None = None
        self._head_persisted: tuple[str, str, float] = ("", "", 0.0)
        self._wake = asyncio.Event()
        self._stopping = False
        self._deadlines_checked_at = 0.0
        # A job's shares are percentages of what the gate measures against
        # (the container's cgroup limits, or the node).
        limits = sampler.limits() if callable(getattr(sampler, "limits", None)) else node_limits()
        self._cpus, self._memory_total = limits.cpu_cores, limits.memory_bytes
        self._tasks: set[asyncio.Task] = set()
        # Strays of jobs judged at reconciliation, cleared once the loop runs.
        self._cleanups: list[Attempt] = []
        # Jobs found STOPPING at reconciliation: their kill is finished by the loop.
        self._cleanups_stop: list[tuple[LiveJob, str]] = []
        # Where attempts run (trainer.executor): this machine, or a Ray cluster.
        self.executor: Executor = executor if executor is not None else LocalExecutor(config.cgroup_root)
        # Per node (a cluster executor): when the gate last admitted / saw an end / killed there.
        self._node_admit: dict[str, float] = {}
        self._node_end: dict[str, float] = {}
        self._node_kill: dict[str, float] = {}
        # Set by shutdown: kills under way skip what is left of their grace.
        self._hurry = threading.Event()

    def find_cgroups(self) -> None:
        """Prepare the executor once (the local one looks for a writable cgroup v2)."""
        self.executor.prepare()

    @property
    def cgroups(self) -> bool:
        return getattr(self.executor, "cgroup_parent", None) is not None

    @property
    def cluster(self):
        """The executor's nodes, when it has them (trainer.cluster_gate decides per node)."""
        return self.executor if callable(getattr(self.executor, "alive_nodes", None)) else None

    # -- the loop ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` at its next turn, even if a cancellation of it is lost."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        for process in self._cleanups:
            self._background(
                asyncio.to_thread(process.stop, self.config.kill_grace_s, 5.0, self._hurry),
                "clear strays",
            )
        self._cleanups = []
        for live, reason in self._cleanups_stop:
            self._background(self._stop(live, reason), f"kill {live.record.job_id}")
        self._cleanups_stop = []
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

    def _background(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - log it; the loop goes on
                log.exception("background %s failed", what)

        task = asyncio.get_running_loop().create_task(guarded(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def tick(self) -> None:
        now = time.monotonic()
        samples = self.sampler.samples()
        for live in list(self.live.values()):
            if live.busy:
                continue
            self._drain(live)
            if live.process.exited():
                live.busy = "finishing"
                self._background(self._finish(live), f"finish {live.record.job_id}")
            else:
                self._measure(live, now, samples)
        await self._enforce_deadlines()
        if any(j.busy == "gate" for j in self.live.values()):
            # One gate kill at a time; its end starts a fresh reading (last_kill).
            self._hold_head("a job the load gate killed is still being stopped")
            return
        if self.cluster is not None:
            self._cluster_turn(now)
            return
        decision = gate.decide_overload(samples, now, self._running(), self.config.gate, self.last_kill)
        if decision is not None:
            self._gate_kill(self.live[decision.job_id], decision)
            return
        self._admit_next(samples, now)

    # -- a cluster executor: the gate per node (trainer.cluster_gate) ----------

    def _node_views(self) -> list[cluster_gate.NodeView]:
        cluster = self.cluster
        views = []
        for node in cluster.alive_nodes():
            here = [j for j in self.live.values() if j.record.placement.node == node.node_id]
            running = [
                gate.RunningJob(
                    j.record.job_id,
                    j.admitted_at,
                    None,
                    gate.thread_budget_share(self._threads(j.record), node.cpus),
                    priority=j.record.priority,
                )
                for j in here
                if not j.busy
            ]
            views.append(
                cluster_gate.NodeView(
                    node.node_id,
                    node.address,
                    cluster.node_samples(node.node_id),
                    running,
                    node.cpus,
                    node.memory_bytes,
                    placed_cpus=float(sum(self._threads(j.record) for j in here)),
                    placed_memory=float(len(here) * self.config.ray_job_memory_mb * 2**20),
                    last_admit=self._node_admit.get(node.node_id),
                    last_end=self._node_end.get(node.node_id),
                    last_kill=self._node_kill.get(node.node_id),
                )
            )
        return views

    def _cluster_turn(self, now: float) -> None:
        unavailable = self.cluster.unavailable()
        if unavailable and not self.cluster.alive_nodes():
            self._hold_head(f"UNAVAILABLE: {unavailable}; the job runs once the Ray head answers")
            return
        views = self._node_views()
        over = cluster_gate.overloaded(views, self.config.gate, now)
        if over is not None:
            decision, node_id = over
            self._node_kill[node_id] = now
            self._gate_kill(self.live[decision.job_id], decision)
            return
        head = self.store.next_queued(time.time())
        if head is None:
            self.head_decision = None
            return
        threads = self._threads(head)
        placement = cluster_gate.place(
            views,
            gate.Candidate(head.job_id),
            float(threads),
            float(self.config.ray_job_memory_mb * 2**20),
            self.config.gate,
            now,
        )
        decision = dataclasses.replace(placement.decision, decided_at=time.time())
        if decision.action is gate.Action.ADMIT:
            head.gate = decision
            self.head_decision = None
            if self._spawn(head, placement.node_id):
                self._node_admit[placement.node_id] = now
            return
        self._note_wait(head, decision)

    @staticmethod
    def _threads(record: JobRecord) -> int:
        return max(1, int(record.params.get("threads", 1) or 1))

    def _running(self) -> list[gate.RunningJob]:
        out = []
        for j in self.live.values():
            if j.busy:
                continue
            recent = j.recent_cpu()
            share = recent / self._cpus if recent is not None else None
            out.append(
                gate.RunningJob(
                    j.record.job_id, j.admitted_at, share, j.cpu_budget, priority=j.record.priority
                )
            )
        return out

    def _budget(self, record: JobRecord) -> float:
        return gate.thread_budget_share(int(record.params.get("threads", 1) or 1), self._cpus)

    # -- admission -------------------------------------------------------------

    def _hold_head(self, reason: str) -> None:
        head = self.store.next_queued(time.time())
        if head is not None:
            self._note_wait(head, gate.Decision(gate.Action.WAIT, reason, decided_at=time.time()))
        else:
            self.head_decision = None

    def _admit_next(self, samples: list[gate.Sample], now: float) -> None:
        head = self.store.next_queued(time.time())
        if head is None:
            self.head_decision = None
            return
        candidate = gate.Candidate(head.job_id, cpu_budget=self._budget(head))
        if head.overload_kills:
            candidate = dataclasses.replace(
                candidate, cpu_share=head.resources.cpu_share, memory_share=head.resources.memory_share
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
        decision = dataclasses.replace(decision, decided_at=time.time())
        if decision.action is gate.Action.ADMIT:
            head.gate = decision
            self.head_decision = None
            self._spawn(head)
            return
        self._note_wait(head, decision)

    def _note_wait(self, head: JobRecord, decision: GateDecision) -> None:
        head.gate = decision
        self.head_decision = (head.job_id, decision)
        # Store and announce a WAIT when its gist changes (its numbers change every tick).
        job_id, gist, at = self._head_persisted
        gist_now = re.sub(r"[0-9.]+", "#", decision.reason)
        if (job_id, gist) != (head.job_id, gist_now) or time.monotonic() - at > PERSIST_WAIT_DECISION_S:
            self.store.update(head, "gate")
            self._head_persisted = (head.job_id, gist_now, time.monotonic())
            self._publish(head)

    def _spawn(self, record: JobRecord, node: str = "") -> bool:
        cfg = self.config
        job_log = JobLog(cfg.log_path(record.job_id), cfg.max_log_bytes)
        recipe = cfg.registry.get(record.recipe)
        admitted = record.gate.reason if record.gate is not None else "admitted"
        attempt = record.attempts + 1
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
            job_log.skip_to_end()
            recent = collections.deque(job_log.tail(RECENT_LINES), maxlen=RECENT_LINES)
            job_log.note(f"attempt {attempt} started: {admitted}")
            marker = f"{record.job_id}.{attempt}"
            spec = LaunchSpec(
                job_id=record.job_id,
                attempt=attempt,
                argv=tuple(argv),
                cwd=cfg.work_dir(record.job_id),
                env=job_env(record.params.get("threads"), marker),
                log_path=job_log.path,
                threads=self._threads(record),
                node=node,
                checkpoint_dir=checkpoint_dir,
            )
            process = self.executor.spawn(spec)
        except ExecutorUnavailable as exc:
            # Nothing started: the job stays queued and its gate message says why.
            self._note_wait(record, gate.Decision(gate.Action.WAIT, str(exc), decided_at=time.time()))
            return False
        except Exception as exc:  # noqa: BLE001 - any failure to start fails the job, not the Trainer
            record.state, record.end_time = JobState.FAILED, time.time()
            record.reason = f"could not start: {exc}"
            job_log.note(record.reason)
            self.store.update(record)
            self._publish(record, final=True)
            return False
        record.state, record.reason = JobState.RUNNING, admitted
        pid, create_time, containment = process.identity()
        record.pid, record.pid_create_time = pid, create_time
        record.placement = process.placement
        record.start_time, record.end_time, record.exit_code = time.time(), None, None
        record.attempts = attempt
        record.resources = JobResources()
        record.containment = containment
        self.store.update(record)
        now = time.monotonic()
        self.live[record.job_id] = LiveJob(
            record, process, job_log, now, recent, cpu_budget=self._budget(record), measured_at=now
        )
        self.last_admit = now
        log.info("job %s admitted (%s): %s", record.job_id, _where(process.placement), record.reason)
        self._publish(record)
        return True

    # -- watching --------------------------------------------------------------

    def _drain(self, live: LiveJob, final: bool = False) -> None:
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
            self._publish(live.record)

    def _measure(self, live: LiveJob, now: float, samples: list[gate.Sample]) -> None:
        if now - live.measured_at < self.config.sample_interval_s:
            return
        live.measured_at = now
        process = live.process
        if now - live.discovered_at >= DISCOVER_S:
            live.discovered_at = now
            process.discover()
        usage = process.usage()
        # The job's recent load: its tree over the last window, not an average since it started.
        live.cpu_samples.append((now, usage.cpu_percent))
        while live.cpu_samples and live.cpu_samples[0][0] < now - self.config.gate.window_s:
            live.cpu_samples.popleft()
        recent = live.recent_cpu() or 0.0
        machine = gate.latest(samples)
        old = live.record.resources
        live.record.resources = JobResources(
            cpu_percent=usage.cpu_percent,
            rss_bytes=usage.rss_bytes,
            machine_cpu_percent=machine.cpu if machine is not None else old.machine_cpu_percent,
            machine_memory_percent=machine.memory if machine is not None else old.machine_memory_percent,
            read_time=time.time(),
            cpu_share=recent / self._cpus,
            memory_share=100.0 * usage.rss_bytes / self._memory_total,
        )
        containment = process.identity()[2]
        pids = frozenset(p.pid for p in containment.descendants)
        if pids != live.persisted_pids:
            # A new descendant is on disk at once: a Trainer killed now still finds it.
            live.persisted_pids = pids
            live.record.containment = containment
            self.store.update(live.record, "containment")
        if now - live.persisted_at >= PERSIST_RESOURCES_S:
            live.persisted_at = now
            self.store.update(live.record, "resources")

    # -- endings ---------------------------------------------------------------

    async def _finish(self, live: LiveJob) -> None:
        """The root exited by itself: clear strays, reap, and judge the result."""
        try:
            code = await asyncio.to_thread(live.process.stop, self.config.kill_grace_s, 5.0, self._hurry)
            self._drain(live, final=True)
            rec = live.record
            lost = getattr(live.process, "lost", "")
            if lost:
                self._requeue_lost(live, lost)
                return
            version_dir = self.config.model_root / rec.model / str(live.version)
            if live.version and code in (0, None) and version_dir.is_dir():
                rec.state, rec.model_version = JobState.SUCCEEDED, live.version
                rec.reason = f"exported version {live.version}"
            elif (verdict := push.rejection(rec)) is not None:
                rec.state, rec.reason = JobState.FAILED, verdict.reason
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

    def _requeue_lost(self, live: LiveJob, lost: str) -> None:
        """The attempt ended with no word from its node (the node died, the
        cluster lost it): the job goes back to the queue at once and its next
        attempt (attempts + 1) resumes from the last checkpoint, on any node."""
        rec = live.record
        where = rec.placement.node[:12]
        rec.state = JobState.QUEUED
        rec.reason = (
            f"requeued: attempt {rec.attempts} was lost ({lost}); it resumes from its last checkpoint"
        )
        rec.run_s += max(0.0, time.time() - (rec.start_time or time.time()))
        rec.exit_code, rec.end_time, rec.pid, rec.pid_create_time, rec.not_before = None, None, 0, 0.0, 0.0
        rec.containment = JobContainment()
        live.log.note(rec.reason)
        self.live.pop(rec.job_id, None)
        self._node_end[rec.placement.node] = time.monotonic()
        self.store.update(rec)
        log.warning("job %s on node %s: %s", rec.job_id, where, rec.reason)
        self._publish(rec)
        self.wake()

    async def kill(self, job_id: str, reason: str, state: JobState = JobState.KILLED) -> JobRecord | None:
        """Stop a job: a queued one at once; a running one moves to STOPPING
        and its tree is ended in the background (then ``state``: KILLED, or
        FAILED for a passed deadline). Returns the job as it is now
        (unchanged if it had already ended)."""
        live = self.live.get(job_id)
        if live is None:
            rec = self.store.get(job_id)
            if rec is not None and rec.state is JobState.QUEUED:
                rec.state, rec.reason, rec.end_time = state, f"{reason} while queued", time.time()
                rec.gate = None
                self.store.update(rec)
                self._publish(rec, final=True)
                self.wake()
            return rec
        if live.busy:
            return live.record.copy()
        self._stopping_state(live, "killing", reason)
        self._background(self._stop(live, reason, state), f"kill {job_id}")
        return live.record.copy()

    def _stopping_state(self, live: LiveJob, busy: str, reason: str) -> None:
        live.busy = busy
        rec = live.record
        rec.state, rec.reason = JobState.STOPPING, f"stopping: {reason}"
        live.log.note(reason)
        self.store.update(rec)
        self._publish(rec)

    async def _stop(self, live: LiveJob, reason: str, state: JobState = JobState.KILLED) -> None:
        try:
            code = await asyncio.to_thread(live.process.stop, self.config.kill_grace_s, 5.0, self._hurry)
            self._drain(live, final=True)
            live.record.state, live.record.reason = state, reason
            self._end(live, code)
        finally:
            live.done.set()

    def _gate_kill(self, live: LiveJob, decision: GateDecision) -> None:
        decision = dataclasses.replace(decision, decided_at=time.time())
        live.record.gate = decision
        log.warning("job %s: %s", live.record.job_id, decision.reason)
        self._stopping_state(live, "gate", decision.reason)  # the one log line of the kill
        self._background(self._finish_gate_kill(live, decision), f"gate kill {live.record.job_id}")

    async def _finish_gate_kill(self, live: LiveJob, decision: GateDecision) -> None:
        rec = live.record
        try:
            code = await asyncio.to_thread(live.process.stop, self.config.kill_grace_s, 5.0, self._hurry)
            self._drain(live, final=True)
            rec.overload_kills += 1
            rec.state, rec.reason = JobState.KILLED, decision.reason
            # A gate kill frees no place for another job: no end event.
            self._end(live, code, credit=False, final=False)
            cfg = self.config
            if cfg.overload_policy == OverloadPolicy.REQUEUE and rec.overload_kills <= cfg.max_requeues:
                backoff = cfg.requeue_backoff(rec.overload_kills)
                rec.state, rec.not_before, rec.end_time = JobState.QUEUED, time.time() + backoff, None
                outcome = (
                    f"requeued (overload kill {rec.overload_kills} of at most {cfg.max_requeues}), may run "
                    f"again in {backoff:.0f}s once its expected load fits, and resumes from its last epoch"
                )
            else:
                rec.state = JobState.FAILED
                why = (
                    "the overload policy is 'fail'"
                    if cfg.overload_policy == OverloadPolicy.FAIL
                    else (f"it was killed {rec.overload_kills} times (limit {cfg.max_requeues} requeues)")
                )
                outcome = f"not requeued: {why}"
            rec.reason = f"{decision.reason}; {outcome}"
            live.log.note(outcome)
            self.store.update(rec)
            self._publish(rec, final=rec.state.ended)
        finally:
            self.last_kill = time.monotonic()
            live.done.set()
            self.wake()

    def _end(self, live: LiveJob, code: int | None, credit: bool = True, final: bool = True) -> None:
        rec = live.record
        # deadline_seconds counts run time over all attempts.
        rec.run_s += max(0.0, time.time() - (rec.start_time or time.time()))
        rec.exit_code, rec.end_time, rec.pid, rec.pid_create_time = code, time.time(), 0, 0.0
        rec.containment = JobContainment()
        self.live.pop(rec.job_id, None)
        if credit:
            self.last_end = time.monotonic()
            if rec.placement.node:
                self._node_end[rec.placement.node] = self.last_end
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
        pid and create time); judge the others by their logs at once, and
        leave clearing their strays (which may wait out the kill grace) to
        the loop, so the server answers meanwhile. Queued jobs stay queued; a
        job caught STOPPING (the Trainer ended while it killed it) is killed
        for good and recorded KILLED."""
        for rec in [*self.store.in_state(JobState.RUNNING), *self.store.in_state(JobState.STOPPING)]:
            process = self.executor.attach(rec)
            job_log = JobLog(self.config.log_path(rec.job_id), self.config.max_log_bytes)
            lines = job_log.read_lines(final=process.exited())
            version = 0
            for line in lines:
                report = parse_line(line)
                if report is not None:
                    push.fold_report(rec, report)
                    rec.progress = rec.progress.with_report(report)
                    if isinstance(report, ResultReport) and report.version:
                        version = report.version
            recent = collections.deque(map(shown_line, lines[-RECENT_LINES:]), maxlen=RECENT_LINES)
            admitted_at = time.monotonic() - max(0.0, time.time() - (rec.start_time or time.time()))
            if rec.state is JobState.STOPPING:
                live = LiveJob(rec, process, job_log, admitted_at, recent, version=version, busy="killing")
                self.live[rec.job_id] = live
                why = rec.reason.removeprefix("stopping: ")
                self._cleanups_stop.append((live, f"{why} (finished by a restarted Trainer)"))
                continue
            if not process.exited():
                self.live[rec.job_id] = LiveJob(
                    rec, process, job_log, admitted_at, recent, version=version, cpu_budget=self._budget(rec)
                )
                self.last_admit = max(self.last_admit or admitted_at, admitted_at)
                rec.reason = f"re-attached to {_where(rec.placement, rec.pid)} after a Trainer restart"
                job_log.note(rec.reason)
                self.store.update(rec)
                continue
            self._cleanups.append(process)  # strays it may have left
            if version and (self.config.model_root / rec.model / str(version)).is_dir():
                rec.state, rec.model_version = JobState.SUCCEEDED, version
                rec.reason = f"exported version {version} (it finished while the Trainer was down)"
            elif (verdict := push.rejection(rec)) is not None:
                rec.state, rec.reason = JobState.FAILED, verdict.reason
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
            rec.containment = JobContainment()
            job_log.note(rec.reason)
            self.store.update(rec)
            log.warning("job %s: %s", rec.job_id, rec.reason)

    async def shutdown(self, stop_jobs: bool) -> None:
        """Leave running jobs to be re-attached, or stop them and queue them
        again; either way end within the shutdown budget. A job whose stop
        cannot be confirmed in time stays STOPPING in the store, and a
        restarted Trainer records it KILLED (never lost)."""
        budget = self.config.shutdown_budget_s
        deadline = time.monotonic() + budget
        self._hurry.set()
        stopping = []
        for live in list(self.live.values()):
            if not live.busy:
                self._drain(live)
            if not stop_jobs:
                if not live.busy:
                    live.log.note(
                        "the Trainer stopped; the job keeps running and a restarted Trainer re-attaches it"
                    )
                    self.store.update(live.record, "progress", "resources", "containment")
                continue
            if not live.busy:
                self._stopping_state(
                    live, "shutdown", "the Trainer is stopping: killing the job to queue it again"
                )
            stopping.append(live)
        # Every tree at once: SIGTERM, then SIGKILL in time for the budget
        # (also speeds up kills already under way with the full grace).
        grace = min(self.config.kill_grace_s, max(0.5, 0.5 * budget))
        kill_wait = max(0.5, 0.3 * budget)
        stops = {
            asyncio.ensure_future(asyncio.to_thread(live.process.stop, grace, kill_wait)): live
            for live in stopping
        }
        if stops:
            _, late = await asyncio.wait(stops, timeout=max(0.1, deadline - time.monotonic()))
            if late:
                log.warning(
                    "shutdown budget of %gs spent before %d job tree(s) were confirmed gone; "
                    "they stay STOPPING and a restarted Trainer records them KILLED",
                    budget,
                    len(late),
                )
        for stop, live in stops.items():
            if live.busy != "shutdown" or not stop.done() or stop.exception() is not None:
                continue  # a Kill or a gate kill already under way records its own end
            code = stop.result()
            self._drain(live, final=True)
            rec = live.record
            rec.state, rec.reason = (
                JobState.QUEUED,
                "requeued: the Trainer stopped while it ran; it resumes from its last epoch",
            )
            rec.exit_code = code
            rec.pid, rec.pid_create_time, rec.not_before = 0, 0.0, 0.0
            rec.containment = JobContainment()
            rec.run_s += max(0.0, time.time() - (rec.start_time or time.time()))  # deadline_seconds
            self.store.update(rec)
            self._publish(rec)
            live.done.set()
        # Kills under way finish (their trees are gone by now), within what is left.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.1, deadline - time.monotonic()))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.live.clear()

    # -- views -----------------------------------------------------------------

    def current(self, record: JobRecord) -> JobRecord:
        """``record`` with what only memory knows: a running job's latest
        readings, the gate's latest word on the queue (a job behind the head
        is told why the head waits)."""
        live = self.live.get(record.job_id)
        if live is not None:
            return live.record.copy()
        if record.state is not JobState.QUEUED or self.head_decision is None:
            return record
        head_id, decision = self.head_decision
        record = record.copy()
        if head_id == record.job_id:
            record.gate = decision
            return record
        wait = record.not_before - time.time()
        if wait > 0:
            why = f"backing off for {wait:.0f}s after a gate kill; meanwhile the head of the queue ({head_id}) waits: "
        else:
            why = f"behind {head_id} in the queue, which waits: "
        record.gate = GateDecision(
            gate.Action.WAIT, why + decision.reason, decision.cpu, decision.memory, "", decision.decided_at
        )
        return record

    def recent_lines(self, job_id: str) -> list[str] | None:
        live = self.live.get(job_id)
        return list(live.recent) if live is not None else None

    def _publish(self, record: JobRecord, final: bool = False) -> None:
        self.hub.publish(record.job_id, JobEvent(job=record.copy(), final=final))


def _where(placement: Placement, pid: int = 0) -> str:
    """Where an attempt runs, in words."""
    if placement.executor == "ray":
        return f"Ray job {placement.handle} on node {placement.node[:12]}@{placement.address}"
    return f"pid {pid or placement.handle}"
