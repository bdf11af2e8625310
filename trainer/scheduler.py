"""The scheduler: admission and timing. One loop on the server's event loop
admits queued jobs through the load gate, asks the gate which job to stop at
danger, enforces deadlines, and notices attempts that ended; it decides
*when*. Where and how attempts run is the executor's (trainer.executor,
through trainer.attempts); what a job's state becomes is the lifecycle's
(trainer.lifecycle); recovery after a restart is trainer.recovery's and the
read view trainer.job_view's.

Admission and gate kills are decided only here, one decision at a time, so
concurrent Start calls can never admit more than the gate allows. Anything
that may wait (ending a process tree) runs in a background task on a worker
thread, and the store is written by its own thread (trainer.queued_store):
Kill answers at once with the job STOPPING, a restarted Trainer serves while
the strays of jobs that ended are still being cleared, and the loop keeps
watching the other jobs meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any

from trainer import cluster_gate, gate, job_limits, job_view, recovery, shutdown
from trainer.attempts import Attempts, LiveJob
from trainer.cgroup_limits import node_limits
from trainer.config import TrainerConfig
from trainer.domain import GateDecision, JobRecord, JobState
from trainer.events import EventHub
from trainer.executor import Executor, ExecutorUnavailable
from trainer.lifecycle import StopAsked, StopKind
from trainer.local_runner import LocalExecutor
from trainer.queued_store import QueuedStore

log = logging.getLogger(__name__)

PERSIST_WAIT_DECISION_S = 20.0


class Scheduler:
    def __init__(
        self,
        config: TrainerConfig,
        store: QueuedStore,
        hub: EventHub,
        sampler,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.sampler = sampler
        self.executor = executor if executor is not None else LocalExecutor(config.cgroup_root)
        # A job's shares are percentages of what the gate measures against
        # (the container's cgroup limits, or the node).
        limits = sampler.limits() if callable(getattr(sampler, "limits", None)) else node_limits()
        self.attempts = Attempts(config, store, hub, self.executor, limits.cpu_cores, limits.memory_bytes)
        self._config = config
        self.last_admit: float | None = None
        self.last_end: float | None = None
        self.last_kill: float | None = None
        # The gate's latest word on the job at the head of the queue.
        self.head_decision: tuple[str, GateDecision] | None = None
        self._head_persisted: tuple[str, str, float] = ("", "", 0.0)
        self._wake = asyncio.Event()
        self._stopping = False
        self._deadlines_checked_at = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._recovered = recovery.Recovered()
        # Per node (a cluster executor): when the gate last admitted / saw an end / killed there.
        self._node_admit: dict[str, float] = {}
        self._node_end: dict[str, float] = {}
        self._node_kill: dict[str, float] = {}

    @property
    def config(self) -> TrainerConfig:
        return self._config

    @config.setter
    def config(self, config: TrainerConfig) -> None:
        """New settings (a test changes the gate's thresholds while jobs run)."""
        self._config = config
        self.attempts.config = config

    @property
    def live(self) -> dict[str, LiveJob]:
        return self.attempts.live

    @property
    def cluster(self) -> Any:
        """The executor, when it has nodes of its own (a Ray cluster): the gate
        then decides per node (trainer.cluster_gate)."""
        return self.executor if callable(getattr(self.executor, "alive_nodes", None)) else None

    def find_cgroups(self) -> None:
        """Prepare the executor (the local one looks for a writable cgroup v2)."""
        self.executor.prepare()

    def reconcile(self) -> None:
        """After a restart (on a worker thread): re-attach or judge the jobs a
        previous Trainer left (trainer.recovery); the loop finishes the rest."""
        records = [*self.store.in_state_now(JobState.RUNNING), *self.store.in_state_now(JobState.STOPPING)]
        self._recovered = recovery.reconcile(self.attempts, records)
        if self._recovered.last_admit is not None:
            self.last_admit = max(self.last_admit or 0.0, self._recovered.last_admit)

    # -- the loop ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` at its next turn, even if a cancellation of it is lost."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        found, self._recovered = self._recovered, recovery.Recovered()
        for attempt in found.strays:
            self._background(
                asyncio.to_thread(attempt.stop, self.config.kill_grace_s, 5.0, self.attempts.hurry),
                "clear strays",
            )
        for live, reason in found.stopping:
            self._background(self._stop(live, StopKind.KILL, reason), f"kill {live.record.job_id}")
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
            self.attempts.drain(live)
            if live.attempt.exited():
                live.busy = "finishing"
                self._background(self._finish(live), f"finish {live.record.job_id}")
            else:
                self.attempts.measure(live, now, samples)
        await self._enforce_deadlines()
        if any(j.busy == "gate" for j in self.live.values()):
            # One gate kill at a time; its end starts a fresh reading (last_kill).
            await self._hold_head("a job the load gate killed is still being stopped")
            return
        if self.cluster is not None:
            await self._cluster_turn(now)
            return
        decision = gate.decide_overload(samples, now, self._running(), self.config.gate, self.last_kill)
        if decision is not None:
            self._gate_kill(self.live[decision.job_id], decision)
            return
        await self._admit_next(samples, now)

    # -- a cluster executor: the gate per node (trainer.cluster_gate) ----------

    def _node_views(self) -> list[cluster_gate.NodeView]:
        cluster = self.cluster
        memory = float(self.config.ray_job_memory_mb * 2**20)
        views = []
        for node in cluster.alive_nodes():
            here = [j for j in self.live.values() if j.record.placement.node == node.node_id]
            running = [
                gate.RunningJob(
                    j.record.job_id,
                    j.admitted_at,
                    None,
                    gate.thread_budget_share(_threads(j.record), node.cpus),
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
                    placed_cpus=float(sum(_threads(j.record) for j in here)),
                    placed_memory=len(here) * memory,
                    last_admit=self._node_admit.get(node.node_id),
                    last_end=self._node_end.get(node.node_id),
                    last_kill=self._node_kill.get(node.node_id),
                )
            )
        return views

    async def _cluster_turn(self, now: float) -> None:
        """Rules of trainer.cluster_gate: a node at danger stops one of its
        jobs; else the head of the queue goes to the least loaded node that
        admits it and has room, or waits with each node's verdict (or with
        why the cluster cannot be reached: UNAVAILABLE)."""
        cluster = self.cluster
        unavailable = cluster.unavailable()
        if unavailable and not cluster.alive_nodes():
            await self._hold_head(f"UNAVAILABLE: {unavailable}; the job runs once the Ray head answers")
            return
        views = self._node_views()
        over = cluster_gate.overloaded(views, self.config.gate, now)
        if over is not None:
            decision, node_id = over
            self._node_kill[node_id] = now
            self._gate_kill(self.live[decision.job_id], decision)
            return
        head = await self._head()
        if head is None:
            self.head_decision = None
            return
        placement = cluster_gate.place(
            views,
            gate.Candidate(head.job_id),
            float(_threads(head)),
            float(self.config.ray_job_memory_mb * 2**20),
            self.config.gate,
            now,
        )
        decision = dataclasses.replace(placement.decision, decided_at=time.time())
        if decision.action is not gate.Action.ADMIT:
            self._note_wait(head, decision)
            return
        head.gate = decision
        self.head_decision = None
        try:
            # One HTTP submit to the Ray head (bounded by the client's timeout, on a
            # worker thread: trainer.attempts), made just after the poller heard from the head.
            started = await self.attempts.spawn(head, decision.reason, placement.node_id)
        except ExecutorUnavailable as exc:
            self._note_wait(head, dataclasses.replace(decision, action=gate.Action.WAIT, reason=str(exc)))
            return
        if started is not None and started.state is JobState.RUNNING:
            self._node_admit[placement.node_id] = time.monotonic()
            self.last_admit = time.monotonic()

    def _running(self) -> list[gate.RunningJob]:
        out = []
        for j in self.live.values():
            if j.busy:
                continue
            recent = j.recent_cpu()
            share = recent / self.attempts.cpus if recent is not None else None
            out.append(
                gate.RunningJob(
                    j.record.job_id, j.admitted_at, share, j.cpu_budget, priority=j.record.priority
                )
            )
        return out

    # -- admission -------------------------------------------------------------

    async def _head(self) -> JobRecord | None:
        """The head of the queue as it is now (re-read: a Kill may have come
        while the store answered)."""
        head = await self.store.next_queued(time.time())
        if head is None:
            return None
        head = self.store.get(head.job_id)
        return head if head is not None and head.state is JobState.QUEUED else None

    async def _hold_head(self, reason: str) -> None:
        head = await self._head()
        if head is not None:
            self._note_wait(head, gate.Decision(gate.Action.WAIT, reason, decided_at=time.time()))
        else:
            self.head_decision = None

    async def _admit_next(self, samples: list[gate.Sample], now: float) -> None:
        head = await self._head()
        if head is None:
            self.head_decision = None
            return
        candidate = gate.Candidate(head.job_id, cpu_budget=self.attempts.budget(head))
        if head.overload_kills or head.retries:
            res = head.resources
            candidate = dataclasses.replace(
                candidate,
                cpu_share=res.cpu_share,
                memory_share=res.memory_share,
                cpu_unstarved=res.cpu_unstarved,
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
        if decision.action is not gate.Action.ADMIT:
            self._note_wait(head, decision)
            return
        head.gate = decision
        self.head_decision = None
        try:
            started = await self.attempts.spawn(head, decision.reason)
        except ExecutorUnavailable as exc:
            self._note_wait(head, dataclasses.replace(decision, action=gate.Action.WAIT, reason=str(exc)))
            return
        if started is not None and started.state is JobState.RUNNING:
            self.last_admit = time.monotonic()

    def _note_wait(self, head: JobRecord, decision: GateDecision) -> None:
        head.gate = decision
        self.head_decision = (head.job_id, decision)
        # Store and announce a WAIT when its gist changes (its numbers change every tick).
        job_id, gist, at = self._head_persisted
        gist_now = re.sub(r"[0-9.]+", "#", decision.reason)
        if (job_id, gist) != (head.job_id, gist_now) or time.monotonic() - at > PERSIST_WAIT_DECISION_S:
            self.store.update(head, "gate")
            self._head_persisted = (head.job_id, gist_now, time.monotonic())
            self.attempts.publish(head)

    # -- endings ---------------------------------------------------------------

    async def _finish(self, live: LiveJob) -> None:
        await self.attempts.finish(live)
        self.last_end = time.monotonic()
        if live.record.placement.node:
            self._node_end[live.record.placement.node] = self.last_end
        self.wake()

    async def kill(self, job_id: str, reason: str, kind: StopKind = StopKind.KILL) -> JobRecord | None:
        """Stop a job: a queued one at once; a running one moves to STOPPING
        and its tree is ended in the background (then KILLED, or FAILED for a
        passed deadline). Returns the job as it is now (unchanged if it had
        already ended)."""
        live = self.live.get(job_id)
        if live is None:
            rec = self.store.get(job_id)
            if rec is not None and rec.state is JobState.QUEUED:
                rec = self.attempts.change(rec, StopAsked(kind, reason)) or rec
                self.wake()
            return rec
        if live.busy:
            return live.record.copy()
        self.attempts.ask_stop(live, "killing", kind, reason)
        self._background(self._stop(live, kind, reason), f"kill {job_id}")
        return live.record.copy()

    async def _stop(self, live: LiveJob, kind: StopKind, reason: str) -> None:
        await self.attempts.stop(live, kind, reason)
        self.last_end = time.monotonic()
        self.wake()

    def _gate_kill(self, live: LiveJob, decision: GateDecision) -> None:
        decision = dataclasses.replace(decision, decided_at=time.time())
        live.record.gate = decision
        log.warning("job %s: %s", live.record.job_id, decision.reason)
        self.attempts.ask_stop(live, "gate", StopKind.GATE, decision.reason)  # the one log line of the kill
        self._background(self._finish_gate_kill(live, decision), f"gate kill {live.record.job_id}")

    async def _finish_gate_kill(self, live: LiveJob, decision: GateDecision) -> None:
        try:
            # A gate kill frees no place for another job: no end time (last_end).
            await self.attempts.stop(live, StopKind.GATE, decision.reason)
        finally:
            self.last_kill = time.monotonic()
            self.wake()

    # -- deadlines (trainer.job_limits) ----------------------------------------

    async def _enforce_deadlines(self) -> None:
        """Fail every job whose deadline has passed: a running one killed
        (SIGTERM, grace, SIGKILL), a queued one before it runs."""
        now = time.time()
        for live in list(self.live.values()):
            reason = "" if live.busy else job_limits.deadline_passed(live.record, now)
            if reason:
                await self.kill(live.record.job_id, reason, StopKind.DEADLINE)
        if now - self._deadlines_checked_at >= 1.0:
            self._deadlines_checked_at = now
            for rec in await self.store.in_state(JobState.QUEUED):
                reason = job_limits.deadline_passed(rec, now)
                if reason:
                    await self.kill(rec.job_id, reason, StopKind.DEADLINE)

    # -- shutdown (trainer.shutdown) -------------------------------------------

    async def shutdown(self, stop_jobs: bool) -> None:
        """Leave running jobs to be re-attached, or stop them and queue them
        again; either way end within the shutdown budget (trainer.shutdown)."""
        await shutdown.stop_all(
            self.attempts, self.store, self._tasks, self.config.shutdown_budget_s, stop_jobs
        )

    # -- views -----------------------------------------------------------------

    def current(self, record: JobRecord) -> JobRecord:
        """``record`` as clients see it now (trainer.job_view)."""
        return job_view.current(
            record, {job_id: live.record for job_id, live in self.live.items()}, self.head_decision
        )

    def recent_lines(self, job_id: str) -> list[str] | None:
        live = self.live.get(job_id)
        return list(live.recent) if live is not None else None


def _threads(record: JobRecord) -> int:
    return max(1, int(record.params.get("threads", 1) or 1))
