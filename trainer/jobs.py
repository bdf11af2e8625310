"""A job's process tree and its log: spawn an argv list (never a shell) in its
own session, measure it, kill the whole tree, reap it; (the log file
is trainer.joblog's).

A process is identified by pid AND create time (pids are reused), so a
restarted Trainer can re-attach to a job it did not spawn, and never signals
a stranger that inherited a pid.

Containment: a job's processes are found by, in turn, its cgroup v2 (where
the machine allows one: trainer.cgroup), its session and process group, the
descendants seen while it ran (persisted in the job store), and the
environment marker ``TEXT_LABELER_JOB_ID`` every process of the job
inherits, which survives ``setsid`` and daemonising. A process counts only if
it started after the job did.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

from trainer import cgroup
from trainer.domain import JobContainment, TrackedProcess
from trainer.executor import MARKER_ENV, Usage
from trainer.joblog import MAX_LINE_CHARS, JobLog, exit_reason, shown_line

__all__ = [
    "MARKER_ENV",
    "MAX_LINE_CHARS",
    "JobLog",
    "JobProcess",
    "Usage",
    "exit_reason",
    "job_env",
    "shown_line",
]


# psutil create times come from /proc in clock ticks: equal within this.
_SAME_PROCESS_S = 0.05
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def job_env(threads: int | None, marker: str = "") -> dict[str, str]:
    """The job's environment: ours, unbuffered output, quiet TensorFlow, the
    project importable, the thread budget for every runtime that reads one,
    and the job's marker (MARKER_ENV)."""
    env = dict(os.environ)
    env.pop(MARKER_ENV, None)
    if marker:
        env[MARKER_ENV] = marker
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    if threads:
        for name in (
            "OMP_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
            "MKL_NUM_THREADS",
        ):
            env[name] = str(threads)
    return env


class JobProcess:
    """The root process of one job attempt, spawned here or re-attached, and
    every process that belongs to the attempt."""

    def __init__(
        self,
        pid: int,
        create_time: float,
        proc: psutil.Process | None,
        popen: subprocess.Popen | None = None,
        containment: JobContainment | None = None,
    ) -> None:
        self.pid = pid
        self.create_time = create_time
        self.proc = proc  # None: the root is gone (only strays may be left)
        self.popen = popen
        containment = containment or JobContainment(session=pid)
        self.marker = containment.marker
        self.cgroup = containment.cgroup
        # Every descendant seen so far, kept so a stray that left the session
        # is still found; the same objects keep cpu_percent's baselines.
        self._tracked: dict[int, psutil.Process] = {pid: proc} if proc is not None else {}
        for known in containment.descendants:
            found = _same_process(known.pid, known.create_time)
            if found is not None:
                self._tracked.setdefault(known.pid, found)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: pathlib.Path,
        env: Mapping[str, str],
        log_path: pathlib.Path,
        cgroup_dir: pathlib.Path | None = None,
    ) -> JobProcess:
        """Start ``argv`` in its own session; with ``cgroup_dir`` its first
        process enters that cgroup before it execs the recipe."""
        cwd.mkdir(parents=True, exist_ok=True)
        argv = list(argv)
        if cgroup_dir is not None:
            procs = str(cgroup_dir / "cgroup.procs")
            argv = [sys.executable, "-S", "-c", cgroup.ENTER_AND_EXEC, procs, *argv]
        with open(log_path, "ab") as log:  # O_APPEND: the Trainer may trim it while the job writes
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,  # its own session and process group: killed as one
                close_fds=True,
            )
        proc = psutil.Process(popen.pid)
        containment = JobContainment(
            marker=env.get(MARKER_ENV, ""),
            cgroup=str(cgroup_dir) if cgroup_dir is not None else "",
            session=popen.pid,
        )
        return cls(popen.pid, proc.create_time(), proc, popen, containment)

    @classmethod
    def attach(cls, pid: int, create_time: float, containment: JobContainment | None = None) -> JobProcess:
        """Re-attach to a job's root process; ``alive`` tells whether ``pid``
        still is the process that started at ``create_time``. ``containment``
        (as recorded) finds the rest of the job, the root gone or not."""
        proc = _same_process(pid, create_time) if pid else None
        if proc is not None and not _alive(proc):
            proc = None
        return cls(pid, create_time, proc, None, containment)

    def containment(self) -> JobContainment:
        """The record a restarted Trainer needs to find this attempt's processes."""
        descendants = []
        for pid, proc in sorted(self._tracked.items()):
            if pid == self.pid:
                continue
            try:
                descendants.append(TrackedProcess(pid, proc.create_time()))
            except psutil.Error:
                continue
        return JobContainment(self.marker, self.cgroup, self.pid, tuple(descendants))

    @property
    def alive(self) -> bool:
        return not self.exited()

    def exited(self) -> bool:
        """Has the root process ended? Our own child is left unreaped (its pid
        stays reserved, so its process group can still be signalled safely)."""
        if self.popen is not None:
            if self.popen.returncode is not None:
                return True
            try:
                return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True
        return self.proc is None or not _alive(self.proc)

    def usage(self) -> Usage:
        """CPU and memory of the whole tree (and remember its members)."""
        try:
            if self.proc is not None:
                for child in self.proc.children(recursive=True):
                    self._tracked.setdefault(child.pid, child)
        except psutil.Error:
            pass
        for proc in self._contained():
            self._tracked.setdefault(proc.pid, proc)
        cpu, rss = 0.0, 0
        for pid, proc in list(self._tracked.items()):
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
            except psutil.Error:
                if pid != self.pid:
                    del self._tracked[pid]
        return Usage(cpu, rss)

    def discover(self) -> None:
        """Look for processes that carry the job's marker (a daemon that left
        the session and its parent): a scan of every process, so call it now
        and then, not per sample."""
        for proc in self._marked():
            self._tracked.setdefault(proc.pid, proc)

    def terminate(
        self, grace_s: float, kill_wait_s: float = 5.0, hurry: threading.Event | None = None
    ) -> int | None:
        """SIGTERM the whole tree, SIGKILL what is left after ``grace_s`` (at
        once when ``hurry`` is set: the Trainer is shutting down), and reap
        the root. Returns the root's exit code (None if not our child). Also
        used after a natural exit, to clear strays the job left behind."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
            targets = self._tree()
            if not targets and self._root_gone():
                break
            if not self._root_reaped():
                try:
                    os.killpg(self.pid, sig)  # safe: an unreaped root keeps its pid (and group id) reserved
                except (ProcessLookupError, PermissionError):
                    pass
            if self.cgroup:
                cgroup.signal_all(self.cgroup, sig)
            for proc in targets:
                try:
                    proc.send_signal(sig)  # psutil refuses a reused pid
                except psutil.Error:
                    pass
            deadline = time.monotonic() + wait_s
            others = [p for p in targets if p.pid != self.pid]
            while True:
                _, others = psutil.wait_procs(others, timeout=0.05)
                self._wait_root(0.01)
                if not others and self._root_gone():
                    break
                if time.monotonic() >= deadline or (hurry is not None and hurry.is_set()):
                    break
            if not self._tree() and self._root_gone():
                break
        self._wait_root(1.0)
        if self.cgroup and not cgroup.members(self.cgroup):
            cgroup.remove(self.cgroup)
        return self.popen.returncode if self.popen is not None else None

    def _root_reaped(self) -> bool:
        return self.popen is not None and self.popen.returncode is not None

    def _root_gone(self) -> bool:
        if self.popen is not None:
            return self.popen.returncode is not None
        return self.exited()

    def _wait_root(self, timeout: float) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            return
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except (psutil.TimeoutExpired, psutil.Error):
                pass

    def _tree(self) -> list[psutil.Process]:
        """Every live process of the job: the root, its descendants, its
        cgroup's and its session's members, every process with its marker, and
        any tracked descendant that left the session."""
        found: dict[int, psutil.Process] = {}
        if not self._root_gone() and self.proc is not None:
            found[self.pid] = self.proc
            try:
                for child in self.proc.children(recursive=True):
                    found.setdefault(child.pid, child)
            except psutil.Error:
                pass
        for proc in [*self._contained(), *self._session_members(), *self._marked()]:
            found.setdefault(proc.pid, proc)
        for pid, proc in self._tracked.items():
            if pid != self.pid and pid not in found and proc.is_running():
                found[pid] = proc
        for proc in found.values():
            self._tracked.setdefault(proc.pid, proc)
        return [p for p in found.values() if _alive(p)]

    def _contained(self) -> list[psutil.Process]:
        if not self.cgroup:
            return []
        out = []
        for pid in cgroup.members(self.cgroup):
            if pid == self.pid and self._root_gone():
                continue
            try:
                out.append(self._tracked.get(pid) or psutil.Process(pid))
            except psutil.Error:
                continue
        return out

    def _marked(self) -> list[psutil.Process]:
        """Processes whose environment carries this attempt's marker and that
        started after the job (a reused pid cannot match both)."""
        if not self.marker:
            return []
        needle = f"\0{MARKER_ENV}={self.marker}\0".encode()
        out = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self.pid:
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if needle not in b"\0" + f.read() + b"\0":
                        continue
                proc = psutil.Process(int(entry.name))
                if proc.create_time() >= self.create_time - _SAME_PROCESS_S:
                    out.append(proc)
            except (OSError, psutil.Error):
                continue
        return out

    def _session_members(self) -> list[psutil.Process]:
        # A session id stays reserved while any member lives; if its number
        # now belongs to another process, the session is not ours any more.
        try:
            leader = psutil.Process(self.pid)
            if abs(leader.create_time() - self.create_time) > _SAME_PROCESS_S:
                return []
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:
            return []
        members = []
        for proc in psutil.process_iter():
            if proc.pid == self.pid:
                continue
            try:
                if (
                    os.getsid(proc.pid) == self.pid
                    and proc.create_time() >= self.create_time - _SAME_PROCESS_S
                ):
                    members.append(proc)
            except (OSError, psutil.Error):
                continue
        return members


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    """``pid`` if it still is the process that started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _SAME_PROCESS_S:
            return None
        return proc
    except psutil.Error:
        return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
