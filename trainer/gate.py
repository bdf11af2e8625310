"""The load gate: when to admit the next queued job, and which job to kill.

The decisions are pure functions of load samples, the running jobs and a few
event times, so every branch is tested with scripted readings. The only
impure part is ``LoadSampler``, a background thread that reads psutil's
non-blocking counters; nothing that answers an RPC ever waits for a sample.

The policy keeps the old launcher's intent (normal 55%, danger 95%, watch a
new job before starting the next) without its flaws: nothing blocks, the
machine is watched for the whole run, and every decision has a reason.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import threading
import time
from collections.abc import Sequence

from trainer import cgroup, job_limits


class Action(enum.Enum):
    ADMIT = "ADMIT"
    WAIT = "WAIT"
    KILL = "KILL"


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """Thresholds are machine-wide percentages; a danger above 100 never fires."""

    cpu_normal: float = 55.0
    cpu_danger: float = 95.0
    memory_normal: float = 55.0
    memory_danger: float = 95.0
    # After an admission, admit nothing more for this long (the new job's load
    # is not visible yet); the danger watch runs all the time.
    warmup_s: float = 3.0
    # CPU is judged on its mean over this window (the old launcher sampled 3 s).
    window_s: float = 3.0

    def __post_init__(self) -> None:
        for kind in ("cpu", "memory"):
            normal, danger = getattr(self, f"{kind}_normal"), getattr(self, f"{kind}_danger")
            if not 0 < normal <= danger:
                raise ValueError(
                    f"{kind} thresholds need 0 < normal <= danger, got normal {normal} and danger {danger}"
                )
        if self.warmup_s < 0 or self.window_s <= 0:
            raise ValueError(
                f"warm-up must be >= 0 and window > 0 seconds, got {self.warmup_s} and {self.window_s}"
            )


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
    job_id: str
    admitted_at: float  # monotonic
    priority: int = 1  # trainer.job_limits.Priority: the lowest is stopped first


@dataclasses.dataclass(frozen=True)
class Candidate:
    """The queued job at the head of the queue. ``cpu_share`` and
    ``memory_share`` are the machine percentages it used on an earlier attempt
    (None on its first), so a requeued job is not re-admitted into the same
    overload it was killed for."""

    job_id: str
    cpu_share: float | None = None
    memory_share: float | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    cpu: float = 0.0
    memory: float = 0.0
    job_id: str = ""


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
    """KILL the newest running job of the lowest priority (trainer.job_limits.victim)
    when the machine is above danger, else None.

    Only readings taken after the last kill count, so one overload kills one
    job and the next kill waits to see whether that was enough. CPU alone
    never kills the only running job: on a small machine one job may hold the
    CPU by itself, and killing it would only restart the same load later.
    Memory danger kills even the only job.
    """
    if not running:
        return None
    newest = job_limits.victim(running)
    last = latest(samples, since=last_kill)
    if last is not None and last.memory >= policy.memory_danger:
        return Decision(
            Action.KILL,
            f"killed by the load gate: memory {last.memory:.1f}% >= danger {policy.memory_danger:g}% "
            f"({job_limits.victim_words(running, newest)})",
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
        f"{policy.window_s:g}s ({job_limits.victim_words(running, newest, 'jobs')})",
        reading.cpu,
        reading.memory,
        newest.job_id,
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

    Admit only while CPU and memory are both below normal, on readings taken
    after the warm-up of the last admission and after the last kill. Between
    normal and danger nothing more is admitted until the load drops below
    normal or a job ends (a job that ended since the last admission frees its
    place, as in the old launcher, provided the load is below danger).
    """
    ended = last_end is not None and (last_admit is None or last_end > last_admit)
    since = last_kill
    if last_admit is not None and not ended:
        settled = last_admit + policy.warmup_s
        if now < settled:
            return Decision(
                Action.WAIT,
                f"warming up: a job was admitted {now - last_admit:.1f}s ago; watching the load for "
                f"{policy.warmup_s:g}s before admitting another",
            )
        since = settled if since is None else max(since, settled)
    reading = summarize(samples, now, policy.window_s, since=since)
    if reading is None:
        return Decision(Action.WAIT, f"waiting for a {policy.window_s:g}s load reading")
    cpu, memory = reading.cpu, reading.memory
    load = _load(cpu, memory)
    if cpu >= policy.cpu_danger or memory >= policy.memory_danger:
        return Decision(
            Action.WAIT,
            f"load above danger ({load}; danger cpu {policy.cpu_danger:g}%, memory {policy.memory_danger:g}%)",
            cpu,
            memory,
        )
    below_normal = cpu < policy.cpu_normal and memory < policy.memory_normal
    if not below_normal and not ended:
        return Decision(
            Action.WAIT,
            f"load at or above normal ({load}; normal cpu {policy.cpu_normal:g}%, memory "
            f"{policy.memory_normal:g}%): waiting for it to drop or for a running job to end",
            cpu,
            memory,
        )
    if below_normal and running and not ended:
        expected = _expected_overload(candidate, cpu, memory, policy)
        if expected:
            return Decision(Action.WAIT, expected, cpu, memory)
    why = "load below normal" if below_normal else "a running job ended and the load is below danger"
    return Decision(Action.ADMIT, f"admitted: {why} ({load})", cpu, memory, candidate.job_id)


def _expected_overload(candidate: Candidate, cpu: float, memory: float, policy: GatePolicy) -> str:
    """A reason to wait when the candidate's earlier load would push the machine over danger."""
    if candidate.cpu_share is not None and cpu + candidate.cpu_share >= policy.cpu_danger:
        return (
            f"its last attempt used {candidate.cpu_share:.0f}% cpu; with cpu at {cpu:.1f}% that would reach "
            f"danger {policy.cpu_danger:g}%: waiting for a running job to end"
        )
    if candidate.memory_share is not None and memory + candidate.memory_share >= policy.memory_danger:
        return (
            f"its last attempt used {candidate.memory_share:.1f}% memory; with memory at {memory:.1f}% that "
            f"would reach danger {policy.memory_danger:g}%: waiting for a running job to end"
        )
    return ""


class LoadSampler:
    """Samples machine CPU and memory every ``interval_s`` on a daemon thread.

    The reader (``trainer.cgroup``) returns the load since its previous call
    without blocking, relative to the container's cgroup limits where they are
    tighter than the node's; readers get a copy of the recent samples.
    """

    def __init__(
        self, interval_s: float = 0.5, keep_s: float = 60.0, reader: cgroup.LoadReader | None = None
    ) -> None:
        self.interval_s = interval_s
        # Percentages of the container's cgroup limits where they are tighter than the node's.
        self._reader = reader if reader is not None else cgroup.LoadReader.detect()
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

    def limits(self) -> cgroup.LoadLimits:
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
