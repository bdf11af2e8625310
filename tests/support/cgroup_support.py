"""When the cgroup tests must run: on a machine without a writable cgroup
they skip with the reason; in CI, for each kind of cgroup the machine offers
(.ci/run probes it and sets TEXT_LABELER_REQUIRE_CGROUPS, e.g. ``v1,v2``)
they fail instead, so a containment check can never silently stop running.

Kinds: ``v2`` (a writable cgroup v2 for jobs: trainer.cgroup), ``v2-limits``
(a v2 child whose cpu.max and memory.max may be set: the cpu and memory
controllers delegated), ``v1`` (writable v1 memory, cpu and cpuacct
hierarchies)."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import time

import pytest

REQUIRE_ENV = "TEXT_LABELER_REQUIRE_CGROUPS"


def required(kind: str) -> bool:
    return kind in {k.strip() for k in os.environ.get(REQUIRE_ENV, "").split(",")}


def unavailable(kind: str, why: str) -> None:
    """Skip (or, where CI requires ``kind`` here, fail) saying why."""
    if required(kind):
        pytest.fail(f"{why}; but {REQUIRE_ENV} says this machine offers cgroup {kind} (.ci/run probed it)")
    pytest.skip(why)


def stored_containment(database: pathlib.Path, job_id: str) -> dict:
    """A job's containment record as the Trainer wrote it to its store."""
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT containment FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return json.loads(row[0]) if row else {}


def wait_recorded(database: pathlib.Path, job_id: str, pids, timeout: float = 30.0) -> dict:
    """Until the store records every pid of ``pids`` among the job's descendants."""
    deadline = time.monotonic() + timeout
    while True:
        record = stored_containment(database, job_id)
        seen = {p for p, _ in record.get("descendants", ())}
        if set(pids) <= seen:
            return record
        assert time.monotonic() < deadline, f"the store never recorded {sorted(set(pids) - seen)}: {record}"
        time.sleep(0.05)
