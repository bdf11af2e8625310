"""Per-job deadlines and retries, and job priorities: the pure rules the
scheduler applies (kept out of scheduler.py and gate.py so their logic
stays in one place).

- **Deadline**: ``deadline_s`` seconds of run time (summed over the job's
  attempts, so a requeued job resumes with what is left) and/or an absolute
  ``deadline_at`` (wall-clock). Passed: a running job is killed and FAILED,
  a queued one FAILED without running; neither is retried.
- **Retries**: a job that fails on its own (a non-zero exit that is not a
  Kill, a gate kill, a deadline or a validation rejection, which exits
  ``push.EXIT_REJECTED``) is queued again, up to ``max_retries`` times, with
  the requeue backoff; it resumes from its checkpoint like a requeued job.
- **Priority**: LOW < NORMAL < HIGH. The queue admits higher priority first,
  then oldest; at danger the gate stops the lowest-priority newest job first.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rpc.errors import InvalidArgument
from trainer import push
from trainer.domain import JobRecord, JobState

if TYPE_CHECKING:
    from trainer.config import TrainerConfig
    from trainer.gate import RunningJob

MAX_RETRIES = 10
# A year: longer is surely a mistake (and would overflow nothing, but says so).
MAX_DEADLINE_S = 365 * 24 * 3600.0


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2


PRIORITY_NAMES = ", ".join(p.name for p in Priority)


def check_limits(deadline_s: float | None, deadline_at: float | None, max_retries: int, now: float) -> None:
    """Raise InvalidArgument naming the Start field that is wrong."""
    if deadline_s is not None and not 0 < deadline_s <= MAX_DEADLINE_S:
        raise InvalidArgument(
            f"deadline_seconds must be 1..{MAX_DEADLINE_S:.0f} seconds of run time, got {deadline_s:g}"
        )
    if deadline_at is not None and deadline_at <= now:
        raise InvalidArgument(
            f"deadline_time {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(deadline_at))} has already passed"
        )
    if not 0 <= max_retries <= MAX_RETRIES:
        raise InvalidArgument(f"max_retries must be 0..{MAX_RETRIES}, got {max_retries}")


def check_priority(value: int, field: str = "priority") -> Priority:
    try:
        return Priority(value)
    except ValueError:
        raise InvalidArgument(f"{field} has an unknown value {value}; use {PRIORITY_NAMES}") from None


def run_seconds(record: JobRecord, now: float) -> float:
    """Run time over all attempts so far, the current one included."""
    current = now - record.start_time if record.state is JobState.RUNNING and record.start_time else 0.0
    return record.run_s + max(0.0, current)


def deadline_passed(record: JobRecord, now: float) -> str:
    """Why the job's deadline has passed ("" if it has not, or it has none)."""
    if record.deadline_at and now >= record.deadline_at:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.deadline_at))
        return f"deadline passed: deadline_time {when}"
    if record.deadline_s and run_seconds(record, now) >= record.deadline_s:
        return f"deadline passed: ran {run_seconds(record, now):.1f}s of its deadline_seconds {record.deadline_s:g}"
    return ""


def retryable(record: JobRecord, code: int | None) -> bool:
    """Did the job fail on its own, with retries left?"""
    return (
        record.state is JobState.FAILED
        and code is not None
        and code != 0
        and code != push.EXIT_REJECTED
        and not push.rejected(record)
        and record.retries < record.max_retries
    )


def requeue_for_retry(record: JobRecord, config: TrainerConfig, now: float) -> None:
    """Queue a job that failed on its own again (``record.reason`` says why it failed)."""
    record.retries += 1
    backoff = config.requeue_backoff(record.retries)
    record.state, record.not_before = JobState.QUEUED, now + backoff
    record.reason = (
        f"{record.reason}; retry {record.retries} of at most {record.max_retries} in {backoff:.0f}s "
        "(resumes from its last epoch)"
    )


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
