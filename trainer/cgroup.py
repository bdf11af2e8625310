"""A cgroup v2 per job, where the machine lets the Trainer make one: every
process the job starts stays in it (a daemon that leaves the session too),
and ``cgroup.kill`` ends them all at once.

Where no cgroup v2 hierarchy is writable (an unprivileged container, cgroup
v1 only) the Trainer falls back to what trainer.jobs tracks without one: the
session, the environment marker and the recorded descendants.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal

log = logging.getLogger(__name__)

# Where cgroup v2 is mounted: alone, or beside v1 ("hybrid").
_MOUNTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
_PARENT = "text-labeler-jobs"

# The job's first process runs this before its recipe: it moves itself into
# its cgroup (so every process it starts is born inside), then execs the
# recipe's argv; a failure leaves a line in the log and runs the job anyway.
ENTER_AND_EXEC = (
    "import os, sys\n"
    "try:\n"
    "    with open(sys.argv[1], 'w') as f: f.write(str(os.getpid()))\n"
    "except OSError as e:\n"
    "    print(f'[trainer] job not contained in its cgroup ({e}); the Trainer tracks its processes instead', flush=True)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _is_cgroup2(path: pathlib.Path) -> bool:
    return (path / "cgroup.controllers").is_file() and (path / "cgroup.procs").is_file()


def _own_cgroup() -> str:
    try:
        for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip().lstrip("/")
    except OSError:
        pass
    return ""


def find_parent(configured: str = "") -> pathlib.Path | None:
    """The directory under which job cgroups are made, created if needed;
    None where cgroups are off (``"none"``) or no cgroup v2 is writable."""
    if configured == "none":
        return None
    candidates: list[pathlib.Path] = []
    if configured:
        candidates.append(pathlib.Path(configured))
    else:
        own = _own_cgroup()
        for mount in _MOUNTS:
            base = pathlib.Path(mount)
            if _is_cgroup2(base):
                candidates.append(base / own / _PARENT if own else base / _PARENT)
    for parent in candidates:
        try:
            parent.mkdir(exist_ok=True)
            probe = parent / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            writable = _is_cgroup2(probe) and os.access(probe / "cgroup.procs", os.W_OK)
            probe.rmdir()
        except OSError as exc:
            log.info("no job cgroups under %s: %s", parent, exc)
            continue
        if writable:
            return parent
    return None


def create(parent: pathlib.Path, name: str) -> pathlib.Path | None:
    path = parent / name
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("could not make cgroup %s: %s", path, exc)
        return None
    return path


def members(path: str) -> list[int]:
    """Pids in the cgroup (and its children); [] if it is gone."""
    pids: list[int] = []
    try:
        for dirpath, _, files in os.walk(path):
            if "cgroup.procs" in files:
                text = pathlib.Path(dirpath, "cgroup.procs").read_text()
                pids += [int(p) for p in text.split()]
    except (OSError, ValueError):
        pass
    return pids


def signal_all(path: str, sig: signal.Signals) -> None:
    """SIGKILL through ``cgroup.kill`` (atomic, races no fork) where the
    kernel has it; otherwise, and for other signals, each member."""
    if sig == signal.SIGKILL:
        try:
            pathlib.Path(path, "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
    for pid in members(path):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def remove(path: str) -> None:
    """Remove an empty job cgroup (left in place while any process is in it)."""
    try:
        os.rmdir(path)
    except OSError:
        pass
