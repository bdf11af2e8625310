"""After a restart: find the attempts a previous Trainer left, through the
executor (trainer.executor.Executor.attach), and decide each job's fate
through the lifecycle.

- A RUNNING job whose attempt lives on is re-attached (its log read from
  where the attempt began).
- A RUNNING job whose attempt ended while the Trainer was down is judged by
  its log (trainer.lifecycle rule 1-4, ``while_down``); what it left behind
  (strays) is cleared by the scheduler once it runs.
- A STOPPING job (the Trainer ended while it killed it) is killed for good by
  the scheduler, and recorded KILLED.

Quick: nothing here waits for a process; runs on a worker thread.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time

from modelspec.report import ResultReport, parse_line
from trainer import lifecycle, push
from trainer.attempts import RECENT_LINES, Attempts, LiveJob, where
from trainer.domain import JobState
from trainer.executor import Attempt
from trainer.joblog import JobLog, shown_line

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Recovered:
    """What the scheduler finishes once it runs."""

    strays: list[Attempt] = dataclasses.field(default_factory=list)  # attempts that ended: clear them
    stopping: list[tuple[LiveJob, str]] = dataclasses.field(default_factory=list)  # kills to finish
    last_admit: float | None = None  # monotonic: the newest re-attached job's start


def reconcile(attempts: Attempts, records: list) -> Recovered:
    """Re-attach or judge every job in ``records`` (the RUNNING and STOPPING ones)."""
    cfg = attempts.config
    out = Recovered()
    for rec in records:
        attempt = attempts.executor.attach(rec)
        job_log = JobLog(cfg.log_path(rec.job_id), cfg.max_log_bytes)
        alive = not attempt.exited()
        lines = job_log.read_lines(final=not alive)
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
            live = LiveJob(rec, attempt, job_log, admitted_at, recent, version=version, busy="killing")
            attempts.live[rec.job_id] = live
            why = rec.reason.removeprefix("stopping: ")
            out.stopping.append((live, f"{why} (finished by a restarted Trainer)"))
            continue
        if alive:
            rec.reason = f"re-attached to {where(rec.placement, rec.pid)} after a Trainer restart"
            attempts.live[rec.job_id] = LiveJob(
                rec, attempt, job_log, admitted_at, recent, version=version, cpu_budget=attempts.budget(rec)
            )
            out.last_admit = max(out.last_admit or admitted_at, admitted_at)
            job_log.note(rec.reason)
            attempts.store.update(rec)
            continue
        out.strays.append(attempt)
        exported = bool(version) and (cfg.model_root / rec.model / str(version)).is_dir()
        new = attempts.change(rec, lifecycle.Exited(None, version, exported, while_down=True))
        if new is not None:
            job_log.note(new.reason)
            log.warning("job %s: %s", new.job_id, new.reason)
    return out
