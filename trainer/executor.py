"""The runner seam: where a job's attempts run, behind one small protocol.

The scheduler decides *when* (admission through the load gate, deadlines,
which job the gate stops); an ``Executor`` decides *where and how* an
attempt runs: it starts it, finds it again after a Trainer restart, measures
it, and ends its whole process tree. The local runner (``trainer.local_runner``,
psutil, process groups, markers and cgroup v2) is the one implementation
today; a cluster executor (Ray Jobs, Kubernetes) implements the same calls
without touching the scheduler, the lifecycle or the store.

Contract
--------
Threads: every call may be made from a worker thread; ``spawn``,
``attach``, ``Attempt.stop`` and ``Attempt.discover`` may block (seconds at
most, ``stop`` up to its grace) and are never called on the event loop;
``Attempt.exited``, ``Attempt.usage``, ``Attempt.placement`` and
``Attempt.identity`` must answer quickly (a cached reading is fine), since
the scheduler calls them every tick for every running attempt.

``Executor.prepare()``
    Once, before the first ``spawn`` or ``attach``: find what the executor
    needs (a writable cgroup, the cluster's address). Raise
    ``ExecutorUnavailable`` with a message saying what is missing to refuse
    to serve; a cluster that is only unreachable *now* is not a reason to
    refuse (``spawn`` raises ``ExecutorUnavailable`` then, see below).

``Executor.spawn(spec) -> Attempt``
    Start attempt ``spec.attempt`` of ``spec.job_id``: run ``spec.argv`` (a
    list, never a shell) with ``spec.env`` (which carries ``spec.marker``
    in ``MARKER_ENV``) in ``spec.cwd``, its stdout and stderr appended to
    ``spec.log_path`` as they come (a cluster executor copies its log there:
    the Trainer reads report lines and log tails only from that file). It
    returns once the attempt is started (or accepted by the cluster) and the
    attempt's ``identity()`` is known, so the Trainer can record it before it
    does anything else. Not idempotent by itself: the scheduler calls it
    once per attempt number, and a cluster executor should use
    ``f"{job_id}.{attempt}"`` (the marker) as its submission id so a retried
    call cannot start a second copy. Raises ``ExecutorUnavailable`` when it
    cannot start anything right now (the job stays QUEUED and the gate's
    message says why); any other exception fails the job ("could not start").

``Executor.attach(record) -> Attempt``
    After a restart, the attempt a stored RUNNING or STOPPING record names
    (by ``record.placement``, ``record.pid`` / ``pid_create_time`` and
    ``record.containment``, as ``identity()`` gave them). Idempotent, never
    raises for an attempt that is gone: ``exited()`` then says True and
    ``stop()`` clears whatever it left behind (its strays). It must never
    adopt a stranger (a reused pid, another attempt's submission).

``Attempt.exited() -> bool``
    Has the attempt's main process ended by itself (or been ended)? Cheap,
    idempotent. After True, ``stop()`` still runs to clear strays and
    collect the exit code.

``Attempt.usage() -> Usage``
    The whole tree's CPU (percent of one core, summed) and resident memory
    now. Cheap; an executor that cannot measure returns zeros (the gate
    then falls back on the job's thread budget).

``Attempt.discover()``
    Look harder for the attempt's processes (a scan of the node); called
    every few seconds, not per sample. May be a no-op.

``Attempt.identity() -> tuple[int, float, JobContainment]`` and ``Attempt.placement``
    What the store keeps so ``attach`` finds the attempt again: the root pid
    and its create time (0, 0.0 where the Trainer cannot see the process),
    the containment record (marker, cgroup, session, descendants seen), and
    the placement (executor name, node id, node address, the executor's
    handle such as a submission id). The scheduler persists them when the
    attempt starts and whenever ``identity()`` changes.

``Attempt.stop(grace_s, kill_wait_s, hurry) -> int | None``
    End the whole tree, wherever it runs: SIGTERM (or the cluster's stop),
    then SIGKILL what is left after ``grace_s`` (at once when ``hurry`` is
    set), then wait up to ``kill_wait_s``; reap what the Trainer started.
    Also called after a natural exit, to clear strays. Idempotent (a second
    call on a gone tree returns at once). Returns the main process's exit
    status where known (None otherwise); a signal is ``-signum``.

Where a job runs: ``placement`` is shown to clients as the job's node and
is the executor's business; the scheduler never interprets it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from trainer.domain import JobContainment, JobRecord, Placement

# Set in every job's environment to "<job id>.<attempt>": how a process of
# the job is recognised after it left the session (setsid, daemons).
MARKER_ENV = "TEXT_LABELER_JOB_ID"


class ExecutorUnavailable(RuntimeError):
    """The executor cannot start anything right now (a cluster unreachable);
    the message says why and is shown in the queued job's gate message."""


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_percent: float  # of one core, summed over the tree
    rss_bytes: int


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """One attempt to start: everything the executor needs, nothing it must look up."""

    job_id: str
    attempt: int  # 1 for the first attempt, +1 for each requeue or retry
    argv: tuple[str, ...]
    cwd: pathlib.Path
    env: Mapping[str, str]
    log_path: pathlib.Path
    threads: int = 1  # the job's thread budget (CPUs it may use)
    # The node the Trainer's cluster gate chose (trainer.cluster_gate); "" on
    # an executor without nodes (the local one).
    node: str = ""
    # The job's checkpoint directory as it appears in ``argv``: a cluster
    # executor gives each attempt its own copy (fencing) and rewrites it.
    checkpoint_dir: pathlib.Path | None = None

    @property
    def marker(self) -> str:
        """The attempt's name, unique across attempts: ``<job id>.<attempt>``."""
        return f"{self.job_id}.{self.attempt}"


@runtime_checkable
class Attempt(Protocol):
    """One running (or ended, not yet cleared) attempt of a job."""

    @property
    def placement(self) -> Placement: ...

    def identity(self) -> tuple[int, float, JobContainment]: ...

    def exited(self) -> bool: ...

    def usage(self) -> Usage: ...

    def discover(self) -> None: ...

    def stop(
        self, grace_s: float, kill_wait_s: float = 5.0, hurry: threading.Event | None = None
    ) -> int | None: ...


@runtime_checkable
class Executor(Protocol):
    """Where jobs run. See the module docstring for the contract."""

    name: str

    def prepare(self) -> None: ...

    def spawn(self, spec: LaunchSpec) -> Attempt: ...

    def attach(self, record: JobRecord) -> Attempt: ...
