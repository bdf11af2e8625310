"""The Ray executor's shared storage: where each attempt of a job keeps its
spec, log, checkpoint and working directory under the work root, the job's
``fence`` (the attempt allowed to run and export), and the storage probe, a
job run on a node at start to show that every node sees the data root and
can write under the model root and the work root as the Trainer does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import threading
import time
import uuid

from trainer.config import TrainerConfig
from trainer.executor import ExecutorUnavailable
from trainer.ray_attempt import unexport
from trainer.ray_jobs import NodeReading, RayJobs, RayUnavailable


class StorageProbeFailed(ExecutorUnavailable):
    """The nodes cannot see the data root or write under the model root."""


@dataclasses.dataclass(frozen=True)
class AttemptPlaces:
    """The places of jobs' attempts under ``work_root`` (on shared storage)."""

    work_root: pathlib.Path
    model_root: pathlib.Path

    def job_dir(self, job_id: str) -> pathlib.Path:
        return self.work_root / "jobs" / job_id

    def attempt_paths(self, job_id: str, attempt: int) -> dict[str, pathlib.Path]:
        base = self.job_dir(job_id) / f"attempt-{attempt}"
        return {
            "dir": base,
            "spec": base / "spec.json",
            "log": base / "job.log",
            "checkpoint": base / "checkpoint",
            "cwd": base / "work",
        }

    def fence_path(self, job_id: str) -> pathlib.Path:
        return self.job_dir(job_id) / "fence"

    def advance_fence(self, job_id: str, past: int) -> None:
        """Make ``past`` (and every earlier attempt) stale: the fence names a later one."""
        path = self.fence_path(job_id)
        try:
            current = int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            current = 0
        if current <= past:
            write_atomic(path, str(past + 1))

    def remove_stale_exports(self, job_id: str, current: int) -> list[str]:
        """Versions exported by attempts before ``current`` (read from their logs)."""
        removed: list[str] = []
        spec_path = self.attempt_paths(job_id, current)["spec"]
        try:
            model = json.loads(spec_path.read_text()).get("model", "")
        except (FileNotFoundError, ValueError):
            return removed
        for n in range(1, current):
            removed += unexport(self.attempt_paths(job_id, n)["log"], self.model_root, model)
        return removed


def probe_storage(
    config: TrainerConfig,
    jobs: RayJobs,
    nodes: list[NodeReading],
    python: str,
    env: dict[str, str],
    timeout_s: float = 120.0,
) -> str:
    """Run a probe job on a node (one of ``nodes``, the alive ones; the head
    is asked when there are none): it must read the data root (and see what
    the Trainer sees there) and write under the model root and the work
    root. Returns what it found; raises StorageProbeFailed. Blocking (HTTP)."""
    try:
        nodes = nodes or [n for n in jobs.nodes() if n.alive]
    except RayUnavailable as exc:
        raise ExecutorUnavailable(f"UNAVAILABLE: {exc}") from None
    if not nodes:
        raise StorageProbeFailed(f"no Ray node is alive at {config.ray_address}")
    node = max(nodes, key=lambda n: (not n.is_head, n.node_id))
    token = uuid.uuid4().hex[:12]
    work_root = pathlib.Path(config.ray_work_root)
    probe_dir = work_root / "probes" / token
    probe_dir.mkdir(parents=True, exist_ok=True)
    data_root, model_root = config.data_root, config.model_root
    seen = sorted(p.name for p in data_root.iterdir())[:20] if data_root.is_dir() else []
    answer = model_root / f".trainer-probe-{token}"
    spec = {
        "probe": True,
        "data_root": str(data_root),
        "expect": seen,
        "model_root": str(model_root),
        "answer": str(answer),
    }
    spec_path = probe_dir / "spec.json"
    write_atomic(spec_path, json.dumps(spec))
    submission_id = f"trainer-probe-{token}"
    entrypoint = f"{shlex.quote(python)} -m trainer.ray_attempt {shlex.quote(str(spec_path))}"
    try:
        jobs.submit(submission_id, entrypoint, node.node_id, num_cpus=0, env=env)
        return _probe_answer(config, jobs, node, submission_id, answer, timeout_s)
    except RayUnavailable as exc:
        raise ExecutorUnavailable(f"UNAVAILABLE: {exc}") from None
    finally:
        answer.unlink(missing_ok=True)
        shutil.rmtree(probe_dir, ignore_errors=True)


def _probe_answer(
    config: TrainerConfig,
    jobs: RayJobs,
    node: NodeReading,
    submission_id: str,
    answer: pathlib.Path,
    timeout_s: float,
) -> str:
    data_root, model_root, work_root = config.data_root, config.model_root, pathlib.Path(config.ray_work_root)
    deadline = time.monotonic() + timeout_s
    job = None
    while time.monotonic() < deadline:
        job = jobs.job(submission_id)
        if job is not None and job.ended:
            break
        time.sleep(0.3)
    if job is None or not job.ended:
        jobs.stop(submission_id)
        raise StorageProbeFailed(
            f"the storage probe job did not finish on node {node.name} in {timeout_s:g}s"
        )
    if job.status != "SUCCEEDED" or not answer.is_file():
        tail = jobs.logs(submission_id).strip().splitlines()[-3:]
        raise StorageProbeFailed(
            f"node {node.name} cannot use the shared storage (data root {data_root}, model root "
            f"{model_root}, work root {work_root}): {' | '.join(tail) or job.message}. Every Ray "
            "node must mount them at the same paths as the Trainer (a shared filesystem or volume)"
        )
    return f"node {node.name} reads {data_root} and writes under {model_root} and {work_root}"


def write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
