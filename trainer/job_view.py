"""What Status, List and Watch show of a job: the stored record with what
only the running Trainer knows (a running job's latest readings, the gate's
latest word on the queue: a job behind the head is told why the head waits)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from trainer.domain import GateAction, GateDecision, JobRecord, JobState


def current(
    record: JobRecord, live: Mapping[str, JobRecord], head: tuple[str, GateDecision] | None
) -> JobRecord:
    """``record`` as a client should see it now. ``live``: the running jobs'
    records by id; ``head``: the job at the head of the queue and the gate's
    word on it."""
    running = live.get(record.job_id)
    if running is not None:
        return running.copy()
    if record.state is not JobState.QUEUED or head is None:
        return record
    head_id, decision = head
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
        GateAction.WAIT, why + decision.reason, decision.cpu, decision.memory, "", decision.decided_at
    )
    return record
