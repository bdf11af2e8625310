"""Sample a server process with py-spy while load runs, and summarize where
its CPU time goes (self and inclusive time per function)."""

from __future__ import annotations

import collections
import pathlib
import shutil
import subprocess
import sys


def py_spy() -> str | None:
    here = pathlib.Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, raw_out: pathlib.Path, rate: int = 250) -> subprocess.Popen:
    """py-spy record in the background; ``--nonblocking`` so the server is never paused."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(raw_out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Frames every stack passes through: left out of the inclusive list.
_PLUMBING = (
    "asyncio/",
    "threading.py",
    "<frozen",
    "runpy",
    "concurrent/futures/thread.py",
    "labeler/cli.py",
    "modelserver/cli.py",
)


def _function(frame: str) -> str:
    # "name (/path/to/pkg/file.py:123)" -> "name (pkg/file.py)"
    name, _, where = frame.partition(" (")
    file = "/".join(where.rsplit(":", 1)[0].split("/")[-2:]) if where else ""
    return f"{name} ({file})" if file else name


def summarize(raw: pathlib.Path, top: int = 20) -> str:
    """A text table of the functions with the most self and inclusive samples."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]  # outermost first
        if not frames:
            continue
        total += n
        self_time[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples of busy Python threads", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in self_time.most_common(top)]
    lines += ["", "incl %  function (event-loop, thread and start-up frames left out)"]
    kept = [(f, n) for f, n in inclusive.most_common() if not any(p in f for p in _PLUMBING)]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in kept[:top]]
    return "\n".join(lines) + "\n"
