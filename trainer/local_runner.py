"""The local executor (trainer.executor): every attempt is a process tree on
this machine, spawned in its own session (and its own cgroup v2 where the
machine lets the Trainer make one), found again after a restart by pid and
create time, session, recorded descendants and the environment marker
(trainer.jobs.JobProcess does the process work)."""

from __future__ import annotations

import logging
import pathlib
import socket
import threading

from trainer import cgroup
from trainer.domain import JobContainment, JobRecord, Placement
from trainer.executor import Attempt, LaunchSpec, Usage
from trainer.jobs import JobProcess

log = logging.getLogger(__name__)

NAME = "local"


class LocalAttempt:
    """One attempt's process tree on this machine."""

    def __init__(self, process: JobProcess, node: str) -> None:
        self.process = process
        self._placement = Placement(NAME, node, "127.0.0.1", str(process.pid))

    @property
    def placement(self) -> Placement:
        return self._placement

    def identity(self) -> tuple[int, float, JobContainment]:
        return self.process.pid, self.process.create_time, self.process.containment()

    def exited(self) -> bool:
        return self.process.exited()

    def usage(self) -> Usage:
        return self.process.usage()

    def discover(self) -> None:
        self.process.discover()

    def stop(
        self, grace_s: float, kill_wait_s: float = 5.0, hurry: threading.Event | None = None
    ) -> int | None:
        return self.process.terminate(grace_s, kill_wait_s, hurry)


class LocalExecutor:
    """Attempts as local process trees. ``cgroup_root``: the cgroup v2
    directory under which each attempt gets its own cgroup ("" looks for a
    writable one, "none" never uses one)."""

    name = NAME

    def __init__(self, cgroup_root: str = "") -> None:
        self.cgroup_root = cgroup_root
        self.cgroup_parent: pathlib.Path | None = None
        self.node = socket.gethostname()

    def prepare(self) -> None:
        """Look for a writable cgroup v2 once (a few file operations)."""
        self.cgroup_parent = cgroup.find_parent(self.cgroup_root)
        if self.cgroup_parent is not None:
            log.info("each job runs in its own cgroup under %s", self.cgroup_parent)
        else:
            log.info("no writable cgroup v2: jobs are tracked by session, marker and recorded descendants")

    def spawn(self, spec: LaunchSpec) -> Attempt:
        cgroup_dir = (
            cgroup.create(self.cgroup_parent, spec.marker) if self.cgroup_parent is not None else None
        )
        process = JobProcess.spawn(
            spec.argv, cwd=spec.cwd, env=spec.env, log_path=spec.log_path, cgroup_dir=cgroup_dir
        )
        return LocalAttempt(process, self.node)

    def attach(self, record: JobRecord) -> Attempt:
        process = JobProcess.attach(record.pid, record.pid_create_time, record.containment)
        return LocalAttempt(process, record.placement.node or self.node)
