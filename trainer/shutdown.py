"""Stopping the scheduler's jobs when the Trainer stops: leave running jobs
to be re-attached by a restarted Trainer, or stop every tree at once and
queue the jobs again; either way end within the shutdown budget. A job whose
stop cannot be confirmed in time stays STOPPING in the store, and a restarted
Trainer records it KILLED (never lost). Kills already under way (the
scheduler's background tasks) finish within what is left of the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time

from trainer.attempts import Attempts
from trainer.lifecycle import StopKind
from trainer.queued_store import QueuedStore

log = logging.getLogger(__name__)


async def stop_all(
    attempts: Attempts, store: QueuedStore, tasks: set[asyncio.Task], budget: float, stop_jobs: bool
) -> None:
    """Leave running jobs to be re-attached, or stop them and queue them
    again (``stop_jobs``); either way end within ``budget`` seconds."""
    config = attempts.config
    deadline = time.monotonic() + budget
    attempts.hurry.set()
    stopping = []
    for live in list(attempts.live.values()):
        if not live.busy:
            attempts.drain(live)
        if not stop_jobs:
            if not live.busy:
                live.log.note(
                    "the Trainer stopped; the job keeps running and a restarted Trainer re-attaches it"
                )
                store.update(live.record, "progress", "resources", "containment")
            continue
        if not live.busy:
            attempts.ask_stop(
                live,
                "shutdown",
                StopKind.SHUTDOWN,
                "the Trainer is stopping: killing the job to queue it again",
            )
        stopping.append(live)
    # Every tree at once: SIGTERM, then SIGKILL in time for the budget
    # (also speeds up kills already under way with the full grace).
    grace = min(config.kill_grace_s, max(0.5, 0.5 * budget))
    kill_wait = max(0.5, 0.3 * budget)
    stops = {
        asyncio.ensure_future(asyncio.to_thread(live.attempt.stop, grace, kill_wait)): live
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
        attempts.stopped(live, StopKind.SHUTDOWN, "", stop.result())
        live.done.set()
    # Kills under way finish (their trees are gone by now), within what is left.
    if tasks:
        await asyncio.wait(list(tasks), timeout=max(0.1, deadline - time.monotonic()))
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    attempts.live.clear()
