"""The load gate: when to admit the next queued job, and which job to kill.

The decisions are pure functions of load samples, the running jobs and a few
event times, so every branch is tested with scripted readings. The only
impure part is ``LoadSampler``, a background thread that reads non-blocking
cgroup-aware counters (trainer.cgroup_limits); nothing that answers an RPC
ever waits for a sample.

The policy keeps the old launcher's intent (normal 55%, danger 95%, watch a
new job before starting the next) without its flaws: nothing blocks, the
machine is watched for the whole run, and every decision has a reason.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Sequence

from trainer import cgroup_limits
from trainer.config import GatePolicy
from trainer.domain import GateAction, GateDecision, Priority

__all__ = ["Action", "Candidate", "Decision", "GatePolicy", "LoadSampler", "Reading", "RunningJob", "Sample"]


# The decision types live in trainer.domain (the job record carries them to
# the servicer as they are); the policy in trainer.config with every default.
Action = GateAction
Decision = GateDecision


@dataclasses.dataclass(frozen=True)
class Sample:
    """Machine load over [start, end] (monotonic seconds)."""

    start: float
    end: float
    cpu: float
    memory: float


@dataclasses.dataclass(frozen=True)
class Reading:
    """CPU averaged over samples covering [since, until]; memory as last sampled."""

    cpu: float
    memory: float
    since: float
    until: float


@dataclasses.dataclass(frozen=True)
class RunningJob:
    """A running job as the gate sees it. ``cpu_share`` is its recent load
    (machine %, mean of its process tree over the last window; None before
    the first reading); ``cpu_budget`` what its thread budget lets it use."""

    job_id: str
    admitted_at: float  # monotonic
    cpu_share: float | None = None
    cpu_budget: float = 0.0
    priority: int = 1  # trainer.job_limits.Priority: the lowest is stopped first


@dataclasses.dataclass(frozen=True)
class Candidate:
    """The queued job at the head of the queue. ``cpu_share`` and
    ``memory_share`` are the machine percentages it used recently on an
    earlier attempt (None on its first); ``cpu_unstarved`` the most it used
    over a window while the machine was below danger (None: never seen so);
    ``cpu_budget`` is what its thread budget lets it use."""

    job_id: str
    cpu_share: float | None = None
    memory_share: float | None = None
    cpu_budget: float = 0.0
    cpu_unstarved: float | None = None

    @property
    def cpu_estimate(self) -> float:
        """What it is expected to use: never below its thread budget, nor
        below what it used when it last ran unstarved. (A requeued job's
        recent load was measured while the load that killed it starved it, or
        during its start-up: taken alone it would let the job in only for the
        gate to kill it again.)"""
        return max(self.cpu_budget, self.cpu_share or 0.0, self.cpu_unstarved or 0.0)

    @property
    def estimate_source(self) -> str:
        own = self.cpu_estimate
        if self.cpu_share is not None and own == self.cpu_share:
            return "its recent load on its last attempt"
        if self.cpu_unstarved is not None and own == self.cpu_unstarved:
            return "what it used on its last attempt while the machine was below danger"
        return "its thread budget"


def victim(running: Sequence[RunningJob]) -> RunningJob:
    """The job the gate stops first: the lowest priority, the newest among those."""
    return max(running, key=lambda j: (-j.priority, j.admitted_at))


def victim_words(running: Sequence[RunningJob], chosen: RunningJob, jobs: str = "job(s)") -> str:
    """Why ``chosen`` goes first, for the gate's reason."""
    if len({j.priority for j in running}) == 1:
        return f"the newest of {len(running)} running {jobs} goes first"
    peers = sum(j.priority == chosen.priority for j in running)
    return (
        f"the newest of the {peers} {Priority(chosen.priority).name}-priority job(s) of {len(running)} running "
        "goes first"
    )


def thread_budget_share(threads: int, cpus: float) -> float:
    """Machine CPU percent a job with ``threads`` busy threads can use."""
    return min(100.0, 100.0 * max(1, threads) / max(1.0, cpus))


def summarize(
    samples: Sequence[Sample], now: float, window_s: float, since: float | None = None
) -> Reading | None:
    """The reading over the last ``window_s`` seconds, from samples that began
    at or after ``since``; None unless such samples reach back (nearly) to the
    window's start, or when the newest one is older than the window (a
    stalled sampler is no reason to act)."""
    start = now - window_s
    used = [
        s
        for s in samples
        if s.end > start and s.end <= now + 1e-9 and (since is None or s.start >= since - 1e-9)
    ]
    if not used:
        return None
    first = min(s.start for s in used)
    last = max(used, key=lambda s: s.end)
    # Samples tick at intervals: allow the first to begin a little late.
    if first > start + 0.2 * window_s or now - last.end > window_s:
        return None
    weights = [min(s.end, now) - max(s.start, start) for s in used]
    cpu = sum(s.cpu * w for s, w in zip(used, weights, strict=False)) / sum(weights)
    return Reading(cpu=cpu, memory=last.memory, since=max(first, start), until=last.end)


def latest(samples: Sequence[Sample], since: float | None = None) -> Sample | None:
    fresh = [s for s in samples if since is None or s.start >= since - 1e-9]
    return max(fresh, key=lambda s: s.end) if fresh else None


def _load(cpu: float, memory: float) -> str:
    return f"cpu {cpu:.1f}%, memory {memory:.1f}%"


def decide_overload(
    samples: Sequence[Sample],
    now: float,
    running: Sequence[RunningJob],
    policy: GatePolicy,
    last_kill: float | None = None,
) -> Decision | None:
    """KILL the newest running job of the lowest priority (``victim``)
    when the machine is above danger, else None.

    Only readings taken after the last kill count, so one overload kills one
    job and the next kill waits to see whether that was enough. CPU alone
    never kills the only running job: on a small machine one job may hold the
    CPU by itself, and killing it would only restart the same load later.
    Memory danger kills even the only job.
    """
    if not running:
        return None
    newest = victim(running)
    last = latest(samples, since=last_kill)
    if last is not None and last.memory >= policy.memory_danger:
        return Decision(
            Action.KILL,
            f"killed by the load gate: memory {last.memory:.1f}% >= danger {policy.memory_danger:g}% "
            f"({victim_words(running, newest)})",
            last.cpu,
            last.memory,
            newest.job_id,
        )
    reading = summarize(samples, now, policy.window_s, since=last_kill)
    if reading is None or reading.cpu < policy.cpu_danger or len(running) < 2:
        return None
    return Decision(
        Action.KILL,
        f"killed by the load gate: cpu {reading.cpu:.1f}% >= danger {policy.cpu_danger:g}% over "
        f"{policy.window_s:g}s ({victim_words(running, newest, 'jobs')})",
        reading.cpu,
        reading.memory,
        newest.job_id,
    )


def expected_unseen(running: Sequence[RunningJob], now: float, policy: GatePolicy) -> float:
    """CPU (machine %) that jobs admitted less than ``settle_s`` ago are
    expected to add beyond what they show now: their thread budget less
    their recent measured load."""
    return sum(
        max(0.0, job.cpu_budget - (job.cpu_share or 0.0))
        for job in running
        if now - job.admitted_at < policy.settle_s
    )


def decide_admission(
    samples: Sequence[Sample],
    now: float,
    running: Sequence[RunningJob],
    candidate: Candidate,
    policy: GatePolicy,
    last_admit: float | None = None,
    last_end: float | None = None,
    last_kill: float | None = None,
) -> Decision:
    """ADMIT the candidate or tell it to WAIT, and why.

    1. Only readings taken after the warm-up of the last admission and after
       the last kill count. A job that ended since the last admission ends
       the warm-up early (there may be nothing left to watch; jobs still
       settling are counted by rule 3), but an end never admits by itself:
       the readings, which still hold the ended job's load for a while, must
       pass rules 2 and 3 like any other. A stale event cannot let a job in
       above normal.
    2. The mean CPU over the window and the memory must both be below normal.
    3. With jobs running, the expected load with the candidate must stay
       below danger: the reading, plus what jobs admitted less than
       ``settle_s`` ago are expected to add beyond what they show (their
       thread budget), plus the candidate's estimate (its recent load on its
       last attempt, else its thread budget). A job that would be killed for
       CPU seconds later is not admitted; a requeued one waits until the load
       that killed it has gone. Its memory estimate must fit below memory
       danger even with no job running (memory danger kills a lone job).
    """
    ended = last_end is not None and (last_admit is None or last_end > last_admit)
    since, after = last_kill, "the last kill"
    if last_admit is not None and not ended:
        settled = last_admit + policy.warmup_s
        if now < settled:
            return Decision(
                Action.WAIT,
                f"warming up: a job was admitted {now - last_admit:.1f}s ago; watching the load for "
                f"{policy.warmup_s:g}s before admitting another",
            )
        if since is None or settled > since:
            since, after = settled, "the last admission's warm-up"
    reading = summarize(samples, now, policy.window_s, since=since)
    if reading is None:
        fresh = f" since {after}" if since is not None else ""
        return Decision(Action.WAIT, f"waiting for a {policy.window_s:g}s load reading{fresh}")
    cpu, memory = reading.cpu, reading.memory
    load = _load(cpu, memory)
    if cpu >= policy.cpu_danger or memory >= policy.memory_danger:
        return Decision(
            Action.WAIT,
            f"load above danger ({load}; danger cpu {policy.cpu_danger:g}%, memory {policy.memory_danger:g}%)",
            cpu,
            memory,
        )
    if cpu >= policy.cpu_normal or memory >= policy.memory_normal:
        return Decision(
            Action.WAIT,
            f"load at or above normal ({load}; normal cpu {policy.cpu_normal:g}%, memory "
            f"{policy.memory_normal:g}%): waiting for it to drop",
            cpu,
            memory,
        )
    expected = _expected_overload(candidate, running, now, cpu, memory, policy)
    if expected:
        return Decision(Action.WAIT, expected, cpu, memory)
    return Decision(Action.ADMIT, f"admitted: load below normal ({load})", cpu, memory, candidate.job_id)


def _expected_overload(
    candidate: Candidate,
    running: Sequence[RunningJob],
    now: float,
    cpu: float,
    memory: float,
    policy: GatePolicy,
) -> str:
    """A reason to wait when the candidate's expected load would push the machine to danger."""
    if candidate.memory_share is not None and memory + candidate.memory_share >= policy.memory_danger:
        return (
            f"its last attempt used {candidate.memory_share:.1f}% memory; with memory at {memory:.1f}% that "
            f"would reach danger {policy.memory_danger:g}%: waiting for the load to drop"
        )
    if not running or policy.cpu_danger > 100:
        return ""  # CPU alone never kills the only job
    unseen = expected_unseen(running, now, policy)
    own = candidate.cpu_estimate
    projected = cpu + unseen + own
    if projected < policy.cpu_danger:
        return ""
    whose = candidate.estimate_source
    settling = f" + {unseen:.0f}% not yet shown by jobs just admitted" if unseen else ""
    return (
        f"expected load with it would reach danger: cpu {cpu:.1f}%{settling} + {own:.0f}% ({whose}) = "
        f"{projected:.0f}% >= danger {policy.cpu_danger:g}%: waiting for the load to drop or a running "
        f"job to end"
    )


class LoadSampler:
    """Samples machine CPU and memory every ``interval_s`` on a daemon thread.

    The reader (``trainer.cgroup_limits``) returns the load since its previous call
    without blocking, relative to the container's cgroup limits where they are
    tighter than the node's; readers get a copy of the recent samples.
    """

    def __init__(
        self, interval_s: float = 0.5, keep_s: float = 60.0, reader: cgroup_limits.LoadReader | None = None
    ) -> None:
        self.interval_s = interval_s
        # Percentages of the container's cgroup limits where they are tighter than the node's.
        self._reader = reader if reader is not None else cgroup_limits.LoadReader.detect()
        self._samples: collections.deque[Sample] = collections.deque(
            maxlen=max(8, int(keep_s / interval_s) + 1)
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def limits(self) -> cgroup_limits.LoadLimits:
        """The CPU and memory the samples' percentages are relative to."""
        return self._reader.limits

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def _run(self) -> None:
        self._reader.read()  # the first call only sets the baseline
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            sample = Sample(last, now, *self._reader.read())
            last = now
            with self._lock:
                self._samples.append(sample)
