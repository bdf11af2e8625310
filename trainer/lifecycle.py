"""A job's lifecycle: its states, the transitions allowed between them, and
the one function that decides them. Pure: no I/O, no clock (callers pass
``now``), no process.

Every state change of a job is decided here and written through one store
call (``trainer.store.JobStore.transition``) that re-checks the table
against the stored state, refuses what it does not allow (leaving an ended
state, above all) and stamps the times, as Ray's ``JobInfoStorage`` does.

The states::

    QUEUED --admit--> RUNNING --exit--> SUCCEEDED | FAILED
      |                  |  \\--exit, retries left--> QUEUED
      |                  \\--stop asked--> STOPPING --tree gone--> KILLED | FAILED | QUEUED
      \\--kill / deadline / could not start--> KILLED | FAILED

``decide(record, event, policy, now)`` turns what happened (an ``Event``:
an attempt started or could not, its root exited, a stop was asked, its
tree is gone, a restarted Trainer found it dead) into a ``Change`` (the new
state, the reason, the fields that go with it), or None when the event does
not apply to the job as it is (a Kill of an ended job, for one).
``apply(record, change, now)`` makes the new record: it refuses a change the
table does not allow (``IllegalTransition``), and it alone stamps
``start_time`` / ``end_time``, adds an attempt's run time to ``run_s`` and
clears the ended attempt's process identity.

Rules of judgement, numbered as the gate's are:

1. An exit with an exported version whose directory exists: SUCCEEDED.
2. Else a validation verdict that rejected the version: FAILED with it.
3. Else a sweep trial (no_push) that exited 0 and reported a held-out
   metric: SUCCEEDED.
4. Else exit 0: FAILED (no result); any other exit: FAILED with its code.
5. A FAILED exit is retried (QUEUED with backoff) while retries are left,
   unless it was a rejection or exited with one of the recipe's
   deterministic codes (bad corpus, bad arguments: running it again gives
   the same answer).
6. A gate kill requeues the job with backoff while it has been killed at
   most ``max_requeues`` times under the REQUEUE policy; else FAILED.
   Watch shows the attempt's end as KILLED on the way (as it always has);
   the store never records that KILLED, so no ended state is left.
7. A shutdown that stops jobs puts them back in the queue at once.
8. An attempt lost where it ran (a cluster node died mid-job) puts the job
   back in the queue at once; its next attempt resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

from trainer.domain import METRICS, JobContainment, JobRecord, JobState, Placement

QUEUED, RUNNING, STOPPING = JobState.QUEUED, JobState.RUNNING, JobState.STOPPING
SUCCEEDED, FAILED, KILLED = JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED

# The exit status a recipe uses when validation rejected its model (trainer.push).
EXIT_REJECTED = 3

# Every transition allowed, with what takes it. Nothing leaves an ended state.
TRANSITIONS: Mapping[tuple[JobState, JobState], str] = {
    (QUEUED, RUNNING): "admitted: an attempt started",
    (QUEUED, FAILED): "could not start, or its deadline passed while queued",
    (QUEUED, KILLED): "killed while queued",
    (RUNNING, STOPPING): "a Kill, a gate kill, a deadline or a shutdown began ending its tree",
    (RUNNING, SUCCEEDED): "exited with its model exported (or a trial scored)",
    (RUNNING, FAILED): "exited without a model, or ended while the Trainer was down",
    (RUNNING, QUEUED): "failed on its own with retries left",
    (STOPPING, KILLED): "its tree is gone after a Kill",
    (STOPPING, FAILED): "its tree is gone after a deadline, or a gate kill it may not survive",
    (STOPPING, QUEUED): "its tree is gone after a gate kill it survives, or a shutdown",
}

ATTEMPT_STATES = (RUNNING, STOPPING)


class IllegalTransition(ValueError):
    """A state change the table does not allow."""


def allowed(old: JobState, new: JobState) -> bool:
    return (old, new) in TRANSITIONS


def check(old: JobState, new: JobState, job_id: str = "") -> None:
    if not allowed(old, new):
        raise IllegalTransition(
            f"job {job_id}: {old.value} -> {new.value} is not an allowed transition"
            + (" (an ended job stays ended)" if old.ended else "")
        )


# -- what happened (events) -------------------------------------------------------


class StopKind(enum.Enum):
    KILL = "KILL"  # a Kill request (or a kill a restarted Trainer finishes)
    GATE = "GATE"  # the load gate at danger
    DEADLINE = "DEADLINE"  # deadline_seconds / deadline_time passed
    SHUTDOWN = "SHUTDOWN"  # the Trainer stops with stop_jobs_on_exit


@dataclasses.dataclass(frozen=True)
class Admitted:
    """An attempt of the job started (the executor spawned it)."""

    reason: str
    pid: int
    pid_create_time: float
    containment: JobContainment
    placement: Placement = Placement()


@dataclasses.dataclass(frozen=True)
class StartFailed:
    error: str


@dataclasses.dataclass(frozen=True)
class Exited:
    """The attempt's root exited by itself (its strays cleared).
    ``version``: the version its log reported (0 none); ``exported``: that
    version's directory exists; ``failure``: why it failed in words (exit
    code and last line), used when it did; ``deterministic_codes``: the
    recipe's exit codes that are not worth a retry; ``while_down``: it
    ended while the Trainer was down (found by a restarted one)."""

    code: int | None
    version: int = 0
    exported: bool = False
    failure: str = ""
    deterministic_codes: frozenset[int] = frozenset()
    while_down: bool = False


@dataclasses.dataclass(frozen=True)
class StopAsked:
    kind: StopKind
    reason: str


@dataclasses.dataclass(frozen=True)
class Stopped:
    """The tree of an attempt asked to stop is gone (``code``: its root's exit status)."""

    kind: StopKind
    reason: str
    code: int | None = None


@dataclasses.dataclass(frozen=True)
class Lost:
    """The attempt ended with no word from where it ran (a cluster node died,
    the cluster lost or never started it); its processes were fenced off."""

    why: str


Event = Admitted | StartFailed | Exited | StopAsked | Stopped | Lost


@dataclasses.dataclass(frozen=True)
class RequeuePolicy:
    """What the Trainer's settings say about requeues and retries."""

    overload_policy: str = "requeue"  # trainer.config.OverloadPolicy
    max_requeues: int = 3
    backoff: Callable[[int], float] = lambda n: 0.0  # seconds before the n-th requeue or retry may run

    @classmethod
    def from_config(cls, config: Any) -> RequeuePolicy:
        return cls(config.overload_policy, config.max_requeues, config.requeue_backoff)


# -- what changes (decisions) -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    """A decided state change: the new state, the reason, the other fields
    that change with it. ``passing``: a state Watch shows on the way that the
    store does not keep (rule 6)."""

    state: JobState
    reason: str
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    passing: JobState | None = None
    passing_reason: str = ""


def decide(record: JobRecord, event: Event, policy: RequeuePolicy, now: float) -> Change | None:
    """The change ``event`` makes to ``record`` (None: none, the event does not apply)."""
    state = record.state
    if state.ended:
        return None
    if isinstance(event, Admitted):
        if state is not QUEUED:
            return None
        return Change(
            RUNNING,
            event.reason,
            {
                "pid": event.pid,
                "pid_create_time": event.pid_create_time,
                "containment": event.containment,
                "placement": event.placement,
                "attempts": record.attempts + 1,
                "exit_code": None,
            },
        )
    if isinstance(event, StartFailed):
        return Change(FAILED, f"could not start: {event.error}") if state is QUEUED else None
    if isinstance(event, StopAsked):
        if state is QUEUED:
            if event.kind not in (StopKind.KILL, StopKind.DEADLINE):
                return None
            to = FAILED if event.kind is StopKind.DEADLINE else KILLED
            return Change(to, f"{event.reason} while queued", {"gate": None})
        if state is RUNNING:
            return Change(STOPPING, f"stopping: {event.reason}")
        return None  # already stopping: the stop under way records the end
    if isinstance(event, Stopped):
        if state is not STOPPING:  # a stop is always asked first
            return None
        return _after_stop(record, event, policy, now)
    if isinstance(event, Exited):
        if state is not RUNNING:
            return None
        return _after_exit(record, event, policy, now)
    if isinstance(event, Lost):
        if state is not RUNNING:
            return None  # a stop under way records the end
        return Change(
            QUEUED,
            f"requeued: attempt {record.attempts} was lost ({event.why}); it resumes from its last checkpoint",
            {"exit_code": None, "not_before": now},
        )
    raise TypeError(f"not a lifecycle event: {event!r}")


def _after_stop(record: JobRecord, event: Stopped, policy: RequeuePolicy, now: float) -> Change:
    code = {"exit_code": event.code}
    if event.kind is StopKind.KILL:
        return Change(KILLED, event.reason, code)
    if event.kind is StopKind.DEADLINE:
        return Change(FAILED, event.reason, code)
    if event.kind is StopKind.SHUTDOWN:
        return Change(
            QUEUED,
            "requeued: the Trainer stopped while it ran; it resumes from its last epoch",
            {**code, "not_before": 0.0},
        )
    kills = record.overload_kills + 1
    fields = {**code, "overload_kills": kills}
    if policy.overload_policy == "requeue" and kills <= policy.max_requeues:
        backoff = policy.backoff(kills)
        outcome = (
            f"requeued (overload kill {kills} of at most {policy.max_requeues}), may run "
            f"again in {backoff:.0f}s once its expected load fits, and resumes from its last epoch"
        )
        return Change(
            QUEUED,
            f"{event.reason}; {outcome}",
            {**fields, "not_before": now + backoff},
            passing=KILLED,
            passing_reason=event.reason,
        )
    why = (
        "the overload policy is 'fail'"
        if policy.overload_policy != "requeue"
        else f"it was killed {kills} times (limit {policy.max_requeues} requeues)"
    )
    return Change(
        FAILED, f"{event.reason}; not requeued: {why}", fields, passing=KILLED, passing_reason=event.reason
    )


def judge_exit(record: JobRecord, event: Exited) -> Change:
    """Rules 1-4: how an attempt that exited by itself came out."""
    code = event.code
    down = " (it finished while the Trainer was down)" if event.while_down else ""
    fields: dict[str, Any] = {"exit_code": code}
    verdict = record.push
    if event.version and event.exported and code in (0, None):
        return Change(
            SUCCEEDED, f"exported version {event.version}{down}", {**fields, "model_version": event.version}
        )
    if verdict is not None and verdict.outcome.value == "REJECTED":
        return Change(FAILED, verdict.reason, fields)
    scored = trial_scored(record)
    if code in (0, None) and scored:
        return Change(
            SUCCEEDED, scored + (" (while the Trainer was down)" if event.while_down else ""), fields
        )
    if event.while_down:
        return Change(
            FAILED,
            f"lost: its process (pid {record.pid}) ended while the Trainer was down and its log "
            "names no exported version",
            fields,
        )
    if code == 0:
        return Change(
            FAILED,
            "exited 0 but reported no exported version (no result line, or its version directory is missing)",
            fields,
        )
    return Change(FAILED, event.failure or f"exited with code {code}", fields)


def retryable(record: JobRecord, judged: Change, event: Exited) -> bool:
    """Rule 5: did the job fail on its own, with retries left, in a way a retry may mend?"""
    code = event.code
    return (
        judged.state is FAILED
        and not event.while_down
        and code is not None
        and code != 0
        and code != EXIT_REJECTED
        and code not in event.deterministic_codes
        and not (record.push is not None and record.push.outcome.value == "REJECTED")
        and record.retries < record.max_retries
    )


def _after_exit(record: JobRecord, event: Exited, policy: RequeuePolicy, now: float) -> Change:
    judged = judge_exit(record, event)
    if not retryable(record, judged, event):
        if judged.state is FAILED and event.code in event.deterministic_codes and record.max_retries:
            return dataclasses.replace(
                judged, reason=f"{judged.reason}; not retried: the recipe says this exit is deterministic"
            )
        return judged
    return retry_change(record, judged.reason, policy, now, judged.fields)


def retry_change(
    record: JobRecord, why: str, policy: RequeuePolicy, now: float, fields: Mapping[str, Any] | None = None
) -> Change:
    """Rule 5's requeue: back to the queue with backoff, one retry more."""
    retries = record.retries + 1
    backoff = policy.backoff(retries)
    return Change(
        QUEUED,
        f"{why}; retry {retries} of at most {record.max_retries} in {backoff:.0f}s (resumes from its last epoch)",
        {**(fields or {}), "retries": retries, "not_before": now + backoff},
    )


def requeue_failed(record: JobRecord, policy: RequeuePolicy, now: float) -> None:
    """The older in-place form of rule 5 (trainer.job_limits.requeue_for_retry):
    a FAILED record not written anywhere yet, requeued in place."""
    change = retry_change(record, record.reason, policy, now)
    for name, value in change.fields.items():
        setattr(record, name, value)
    record.state, record.reason = change.state, change.reason


def trial_scored(record: JobRecord) -> str:
    """Why a ``no_push`` job that exited 0 succeeded ("" if it reported no
    held-out metric, so it did not)."""
    scored = [f"{m} {value:.3f}" for m in METRICS if (value := getattr(record.progress, m)) is not None]
    if not record.no_push or not scored:
        return ""
    return f"trial finished: held-out {', '.join(scored)} (a sweep trial exports nothing)"


# -- the one place a record's state changes --------------------------------------------


def apply(record: JobRecord, change: Change, now: float) -> JobRecord:
    """The record after ``change`` (a new object; ``record`` is left as it
    was). Raises IllegalTransition for a change the table does not allow."""
    check(record.state, change.state, record.job_id)
    out = record.copy()
    for name, value in change.fields.items():
        if name in ("state", "start_time", "end_time", "run_s"):
            raise ValueError(f"{name} is stamped by the lifecycle, not given in a change")
        setattr(out, name, value)
    old, new = record.state, change.state
    out.state, out.reason = new, change.reason
    if new is RUNNING:
        out.start_time, out.end_time = now, None
        out.resources = type(record.resources)()
    if old in ATTEMPT_STATES and new not in ATTEMPT_STATES:
        # The attempt is over: its run time counts (deadline_seconds spans attempts).
        started = record.start_time if record.start_time is not None else now
        out.run_s = record.run_s + max(0.0, now - started)
        out.pid, out.pid_create_time = 0, 0.0
        out.containment = JobContainment()
    if new.ended:
        out.end_time = now
    elif new is QUEUED:
        out.end_time = None
    return out


def passing_record(record: JobRecord, change: Change, now: float) -> JobRecord | None:
    """What Watch shows on the way for ``change`` (rule 6), never stored; None if nothing."""
    if change.passing is None:
        return None
    return apply(record, Change(change.passing, change.passing_reason, change.fields), now)
