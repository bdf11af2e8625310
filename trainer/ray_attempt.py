"""What a Ray job runs on its node: one attempt of one Trainer job.

``python -m trainer.ray_attempt SPEC.json`` (the Ray job's whole entrypoint;
the spec file is written by the Trainer on shared storage, so nothing from a
request reaches Ray's shell). It:

1. checks the attempt's fence (``fence`` file: the number of the job's
   current attempt) and exits ``FENCED_EXIT`` if a newer attempt owns the job;
2. seeds its own checkpoint place from the newest earlier attempt's, so it
   resumes where the job got to (each attempt has its own place: an old
   attempt that lives on cannot write into the new one's);
3. runs the recipe's argv in its own session, as the local executor does
   (trainer.jobs: marker environment, whole-tree kill), its output appended
   to the attempt's log file on shared storage, and bound to this wrapper's
   life (it gets SIGKILL if the wrapper dies with Ray's processes);
4. until the recipe ends, watches for SIGTERM (Ray's ``stop_job``: the whole
   tree is ended, daemons included, by the same code as a local Kill) and
   for the fence moving on (the Trainer gave the job to a newer attempt, e.g.
   after this node was declared dead): then it ends the tree and removes any
   version this attempt exported, so only the current attempt's export stays.

Exit code: the recipe's, ``FENCED_EXIT`` when fenced off, 128 + SIGTERM when stopped.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import sys
import threading
import time

from modelspec.report import ResultReport, parse_line
from trainer.jobs import JobProcess, job_env

FENCED_EXIT = 75
# The recipe's first process asks the kernel for SIGKILL when this wrapper
# dies (PR_SET_PDEATHSIG, kept across exec): when Ray's processes on the node
# are killed, the wrapper with them, the recipe cannot train on unfenced.
PDEATHSIG_EXEC = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(75)\n"
    "os.execv(sys.argv[2], sys.argv[2:])"
)
POLL_S = 0.2
KILL_GRACE_S = 5.0


def read_fence(path: pathlib.Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def seed_checkpoint(own: pathlib.Path, earlier: list[str]) -> str:
    """Copy the newest non-empty earlier checkpoint into ``own`` (when empty)."""
    own.mkdir(parents=True, exist_ok=True)
    if any(own.iterdir()):
        return ""
    for path in earlier:
        src = pathlib.Path(path)
        if src.is_dir() and any(src.iterdir()):
            shutil.copytree(src, own, dirs_exist_ok=True)
            return str(src)
    return ""


def unexport(log_path: pathlib.Path, model_root: pathlib.Path, model: str) -> list[str]:
    """Remove every version directory of ``model`` this attempt's log says it exported."""
    removed: list[str] = []
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return removed
    root = model_root.resolve()
    for line in lines:
        report = parse_line(line)
        if isinstance(report, ResultReport) and report.version:
            candidate = root / model / str(int(report.version))
            if candidate.resolve().parent.parent == root and candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(str(candidate))
    return removed


def note(log_path: pathlib.Path, text: str) -> None:
    with open(log_path, "ab") as f:
        f.write(f"[ray] {text}\n".encode())


def run(spec: dict) -> int:
    attempt = int(spec["attempt"])
    fence = pathlib.Path(spec["fence"])
    log_path = pathlib.Path(spec["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if read_fence(fence) != attempt:
        note(log_path, f"attempt {attempt} is fenced off (current attempt {read_fence(fence)}): not started")
        return FENCED_EXIT
    seeded = seed_checkpoint(pathlib.Path(spec["checkpoint_dir"]), list(spec.get("earlier_checkpoints", [])))
    node = os.environ.get("RAY_NODE_ID", "") or spec.get("node_id", "")
    note(
        log_path,
        f"attempt {attempt} on node {node[:12]} pid {os.getpid()}"
        + (f", resuming from {seeded}" if seeded else ""),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    process = JobProcess.spawn(
        [sys.executable, "-S", "-c", PDEATHSIG_EXEC, str(os.getpid()), *spec["argv"]],
        cwd=pathlib.Path(spec["cwd"]),
        env=job_env(spec.get("threads"), f"{spec['job_id']}.{attempt}"),
        log_path=log_path,
    )
    while True:
        if process.exited():
            code = process.terminate(1.0, 2.0)  # reap; clear any strays it left
            if read_fence(fence) != attempt:
                removed = unexport(log_path, pathlib.Path(spec["model_root"]), spec["model"])
                note(
                    log_path,
                    f"attempt {attempt} ended after it was fenced off; removed {removed or 'nothing'}",
                )
                return FENCED_EXIT
            return 0 if code is None else code
        if stop.is_set():
            code = process.terminate(float(spec.get("kill_grace_s", KILL_GRACE_S)), 5.0)
            note(log_path, f"attempt {attempt} stopped (exit {code})")
            return 128 + signal.SIGTERM
        if read_fence(fence) != attempt:
            process.terminate(0.5, 5.0)
            removed = unexport(log_path, pathlib.Path(spec["model_root"]), spec["model"])
            note(
                log_path,
                f"attempt {attempt} fenced off by attempt {read_fence(fence)}: ended; removed {removed or 'nothing'}",
            )
            return FENCED_EXIT
        time.sleep(POLL_S)


def run_probe(spec: dict) -> int:
    """The node side of the Trainer's storage probe (trainer.ray_executor.probe_storage)."""
    data_root = pathlib.Path(spec["data_root"])
    if not data_root.is_dir():
        print(f"probe: data root {data_root} is not a directory on this node", flush=True)
        return 3
    seen = sorted(p.name for p in data_root.iterdir())[:20]
    if seen != spec["expect"]:
        print(
            f"probe: data root {data_root} holds {seen[:5]} here, the Trainer sees {spec['expect'][:5]}",
            flush=True,
        )
        return 3
    try:
        pathlib.Path(spec["answer"]).write_text(os.environ.get("RAY_NODE_ID", "node"))
    except OSError as exc:
        print(f"probe: cannot write under the model root {spec['model_root']}: {exc}", flush=True)
        return 3
    print("probe: ok", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m trainer.ray_attempt SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(pathlib.Path(args[0]).read_text())
    return run_probe(spec) if spec.get("probe") else run(spec)


if __name__ == "__main__":
    sys.exit(main())
