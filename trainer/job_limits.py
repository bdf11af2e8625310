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
  then oldest; at danger the gate stops the lowest-priority newest job first
  (the choice is the gate's: trainer.gate.victim).

What happens to a job that fails, is killed or requeued is trainer.lifecycle's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rpc.errors import InvalidArgument
from trainer import lifecycle
from trainer.domain import JobRecord, JobState, Priority
from trainer.gate import victim, victim_words

if TYPE_CHECKING:
    from trainer.config import TrainerConfig

__all__ = [
    "MAX_DEADLINE_S",
    "MAX_RETRIES",
    "PRIORITY_NAMES",
    "Priority",
    "check_limits",
    "check_priority",
    "deadline_passed",
    "requeue_for_retry",
    "retryable",
    "run_seconds",
    "victim",
    "victim_words",
]

MAX_RETRIES = 10
# A year: longer is surely a mistake (and would overflow nothing, but says so).
MAX_DEADLINE_S = 365 * 24 * 3600.0

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
    """Did the job fail on its own, with retries left? (trainer.lifecycle rule 5)"""
    judged = lifecycle.Change(record.state, record.reason)
    return lifecycle.retryable(record, judged, lifecycle.Exited(code))


def requeue_for_retry(record: JobRecord, config: TrainerConfig, now: float) -> None:
    """Queue a job that failed on its own again (``record.reason`` says why it failed)."""
    lifecycle.requeue_failed(record, lifecycle.RequeuePolicy.from_config(config), now)
