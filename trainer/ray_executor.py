"""The Ray executor: every Trainer job attempt is a Ray job on a node the
Trainer's cluster gate chose (trainer/cluster_gate.py).

Parts:
- ``RayExecutor`` owns the Jobs API client (trainer/ray_jobs.py) and one
  poller thread that, every ``sample_interval_s``, reads the nodes (the
  dashboard's per-node psutil readings, kept as a sample series per node for
  the gate), the status of every attempt it tracks, and copies each
  attempt's new log bytes from shared storage into the Trainer's own job log
  (so Status, Watch and the report parsing work as for a local job).
  Nothing on the event loop waits for Ray: the scheduler reads the poller's
  latest view; submitting and stopping run on worker threads.
- ``RayAttempt`` is one attempt (trainer.executor.Attempt): ``exited`` and
  ``usage`` answer from the poller's latest view; ``stop`` (idempotent) ends
  the tree through Ray's ``stop_job``, which the node-side wrapper
  trainer/ray_attempt.py turns into the same whole-tree kill as a local
  Kill; ``placement`` is ("ray", node id, node address, submission id), what
  ``attach`` needs after a Trainer restart; ``usage`` is the declared thread
  budget (the Jobs API reports no per-job usage; the gate reads the node).
  ``lost`` says why an attempt ended without an answer from its node (the
  node died, Ray lost or never placed it): the scheduler requeues such a
  job, which resumes from its checkpoint.

Attempts are fenced: each has its own directory under the shared work root
(spec, log, checkpoint, working directory), a job's ``fence`` file names its
current attempt, and the wrapper of any other attempt ends its own tree and
removes what it exported as soon as it sees the fence move. The fence is
moved before a new attempt is submitted, so an old attempt that lives on
(its node declared dead but its processes running) can never race the new
one.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import pathlib
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from trainer.config import TrainerConfig
from trainer.domain import JobContainment, JobRecord, Placement
from trainer.executor import ExecutorUnavailable, LaunchSpec, Usage
from trainer.gate import Sample
from trainer.jobs import PROJECT_ROOT
from trainer.ray_attempt import FENCED_EXIT, unexport
from trainer.ray_jobs import NodeReading, RayJob, RayJobs, RayUnavailable

log = logging.getLogger(__name__)

# An attempt Ray has not started this long after its submit is given up
# (fenced off, requeued): Ray could not place it after all.
PENDING_LIMIT_S = 60.0
KEEP_SAMPLES_S = 60.0
# A storage probe that failed after start (the Trainer already serves) is retried this often.
PROBE_RETRY_S = 30.0
PUMP_CHUNK = 1 << 20


NAME = "ray"


class StorageProbeFailed(ExecutorUnavailable):
    """The nodes cannot see the data root or write under the model root."""


@dataclasses.dataclass
class _Pump:
    """Copies an attempt's log (on shared storage) into the job's own log."""

    source: pathlib.Path
    target: pathlib.Path
    offset_file: pathlib.Path
    offset: int = 0

    def run(self) -> None:
        try:
            with open(self.source, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                if size <= self.offset:
                    return
                src.seek(self.offset)
                data = src.read(min(PUMP_CHUNK, size - self.offset))
        except FileNotFoundError:
            return
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with open(self.target, "ab") as dst:
            dst.write(data)
        self.offset += len(data)
        self.offset_file.write_text(str(self.offset))


class RayAttempt:
    """One attempt of one job as a Ray job (the local JobProcess's shape)."""

    pid = 0
    create_time = 0.0
    cgroup = ""

    def __init__(
        self, executor: RayExecutor, job_id: str, attempt: int, placement: Placement, threads: int
    ) -> None:
        self.executor = executor
        self.job_id = job_id
        self._placement = placement
        self.attempt = attempt
        self.threads = max(1, threads)
        self.marker = f"{job_id}.{attempt}"
        self.submitted_at = time.monotonic()
        self.ray: RayJob | None = None
        self.lost = ""  # why it ended with no word from its node; "" otherwise
        self.running_seen = False
        self._ended = threading.Event()
        log_path = executor.config.log_path(job_id)
        self.pump = _Pump(
            executor.attempt_paths(job_id, attempt)["log"], log_path, log_path.with_suffix(".ray-offset")
        )
        try:
            self.pump.offset = int(self.pump.offset_file.read_text())
        except (FileNotFoundError, ValueError):
            self.pump.offset = 0

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def node_name(self) -> str:
        return f"{self._placement.node[:12]}@{self._placement.address}"

    def identity(self) -> tuple[int, float, JobContainment]:
        return 0, 0.0, JobContainment(marker=self.marker)

    @property
    def submission_id(self) -> str:
        return self._placement.handle

    # -- what the scheduler reads ---------------------------------------------

    def exited(self) -> bool:
        return self._ended.is_set()

    @property
    def alive(self) -> bool:
        return not self.exited()

    def usage(self) -> Usage:
        """What it declared (its thread budget): Ray's Jobs API gives no per-job usage."""
        return Usage(cpu_percent=100.0 * self.threads, rss_bytes=0)

    def discover(self) -> None:
        pass

    @property
    def exit_code(self) -> int | None:
        if self.lost:
            return None
        if self.ray is None:
            return None
        if self.ray.status == "SUCCEEDED":
            return 0
        if self.ray.status == "STOPPED":
            return -15
        return self.ray.exit_code if self.ray.exit_code is not None else 1

    # -- the poller's view ----------------------------------------------------

    def observe(self, job: RayJob | None, nodes: dict[str, NodeReading]) -> None:
        """One poll: Ray's word on the job and on its node."""
        if self._ended.is_set():
            return
        if job is not None:
            self.ray = job
            if job.status == "RUNNING":
                self.running_seen = True
        node = nodes.get(self._placement.node)
        if job is not None and job.ended:
            if job.status == "FAILED" and node is not None and not node.alive:
                self._lose(f"its node {self.node_name} died")
            elif job.status == "FAILED" and job.exit_code is None:
                # Ray's supervisor of the job died (with its node, most often) before it
                # saw an exit: nothing says how the attempt ended, so it is lost.
                self._lose(f"its Ray job failed without an exit code ({job.error_type or job.message[:160]})")
            elif job.exit_code == FENCED_EXIT:
                self._lose("its attempt was fenced off by a newer one")
            else:
                self._ended.set()
            return
        if node is not None and not node.alive:
            self._lose(f"its node {self.node_name} died")
            return
        if job is None and nodes:
            self._lose(f"Ray has no job {self.submission_id} (the head lost it)")
            return
        if (
            job is not None
            and job.status == "PENDING"
            and time.monotonic() - self.submitted_at > PENDING_LIMIT_S
        ):
            self._lose(f"Ray did not start it within {PENDING_LIMIT_S:g}s on node {self.node_name}")

    def _lose(self, why: str) -> None:
        self.lost = why
        # The fence moves on at once: if the old attempt's processes live on
        # (a partitioned node), its wrapper ends them and exports nothing.
        self.executor.advance_fence(self.job_id, self.attempt)
        self._ended.set()

    # -- ending it -------------------------------------------------------------

    def stop(
        self, grace_s: float, kill_wait_s: float = 5.0, hurry: threading.Event | None = None
    ) -> int | None:
        """Stop the Ray job (idempotent) and wait for Ray to say it ended;
        if the head does not answer in time, fence the attempt off (its
        wrapper ends the tree on its node). Returns its exit code."""
        deadline = time.monotonic() + grace_s + kill_wait_s + 10.0
        asked = False
        while not self._ended.is_set() and time.monotonic() < deadline:
            try:
                if not asked:
                    self.executor.jobs.stop(self.submission_id)
                    asked = True
                job = self.executor.jobs.job(self.submission_id)
                self.observe(job, self.executor.node_map())
            except RayUnavailable as exc:
                log.warning("stopping %s: %s", self.submission_id, exc)
            if hurry is not None and hurry.is_set() and time.monotonic() > deadline - kill_wait_s - 10.0:
                break
            self._ended.wait(0.2)
        if not self._ended.is_set():
            self._lose("its stop was not confirmed by Ray in time")
        self.pump.run()
        if not self.lost:
            # Only the current attempt may export: what an earlier, fenced-off
            # attempt managed to export before it was ended is removed.
            for removed in self.executor.remove_stale_exports(self.job_id, self.attempt):
                log.warning("job %s: removed %s, exported by a fenced-off attempt", self.job_id, removed)
        self.executor.untrack(self)
        return self.exit_code


class RayNodeSampler:
    """Per-node sample series from the dashboard's readings (the gate's input)."""

    def __init__(self, keep_s: float = KEEP_SAMPLES_S) -> None:
        self.keep_s = keep_s
        self._series: dict[str, collections.deque[Sample]] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, nodes: Sequence[NodeReading], now: float) -> None:
        with self._lock:
            for node in nodes:
                if node.cpu_percent is None or node.memory_percent is None or not node.alive:
                    continue
                start = self._last.get(node.node_id, now - 0.5)
                series = self._series.setdefault(node.node_id, collections.deque())
                series.append(Sample(start, now, node.cpu_percent, node.memory_percent))
                self._last[node.node_id] = now
                while series and series[0].end < now - self.keep_s:
                    series.popleft()

    def node_samples(self, node_id: str) -> list[Sample]:
        with self._lock:
            return list(self._series.get(node_id, ()))


class RayExecutor:
    """Runs job attempts as Ray jobs on the cluster at ``config.ray_address``."""

    def __init__(self, config: TrainerConfig, jobs: RayJobs | None = None, node_load: Any = None) -> None:
        self.config = config
        self.jobs = jobs or RayJobs(config.ray_address)
        self.work_root = pathlib.Path(config.ray_work_root)
        self.python = config.ray_python or sys.executable
        self.sampler = RayNodeSampler()
        # Where the gate's per-node readings come from: the dashboard (default)
        # or, in tests, a scripted source with ``node_samples(node_id)``.
        self.node_load = node_load if node_load is not None else self.sampler
        self._nodes: list[NodeReading] = []
        self._unavailable = "not polled yet"
        self._tracked: dict[str, RayAttempt] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polled = threading.Event()
        self._probe_lock = threading.Lock()
        self._probed = False
        self._probe_failure = ""
        self._probe_next = 0.0

    # -- lifecycle -------------------------------------------------------------

    name = NAME

    def prepare(self) -> None:
        """Start the poller; if the head answers, run the storage probe now
        and refuse to serve (StorageProbeFailed) if the nodes cannot use the
        shared storage. A head unreachable now is no reason to refuse: the
        probe then runs before the first job is submitted."""
        if not self.unavailable_now():
            try:
                self.ensure_probed()
            except StorageProbeFailed:
                raise  # the Trainer refuses to serve
            except ExecutorUnavailable as exc:  # the head went away meanwhile: probe later
                log.warning("shared storage probe: %s", exc)
        self.start()
        if self.unavailable():
            log.warning(
                "Ray at %s: %s; jobs queue until it answers", self.config.ray_address, self.unavailable()
            )

    def ensure_probed(self) -> None:
        with self._probe_lock:
            if not self._probed:
                found = self.probe_storage()
                log.info("shared storage probe: %s", found)
                self._probed = True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ray-poller", daemon=True)
            self._thread.start()
            self._polled.wait(timeout=self.jobs.timeout_s + 1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        interval = max(0.25, self.config.sample_interval_s)
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must outlive one bad poll
                log.exception("Ray poll failed")
            self._polled.set()
            self._stop.wait(interval)

    def poll(self) -> None:
        now_mono = time.monotonic()
        try:
            nodes = self.jobs.nodes()
            with self._lock:
                self._nodes, self._unavailable = nodes, ""
            self.sampler.record(nodes, now_mono)
        except RayUnavailable as exc:
            with self._lock:
                self._unavailable = str(exc)
            nodes = []
        if nodes and not self._probed and now_mono >= self._probe_next:
            # The head answers (again): the storage probe runs here, on the
            # poller's thread, before anything is submitted.
            self._probe_next = now_mono + PROBE_RETRY_S
            try:
                self.ensure_probed()
                self._probe_failure = ""
            except ExecutorUnavailable as exc:
                self._probe_failure = str(exc)
                log.error("shared storage probe: %s", exc)
        node_map = {n.node_id: n for n in nodes}
        for attempt in self.tracked():
            attempt.pump.run()
            if not nodes:
                continue  # no word from the head: nothing is judged
            try:
                attempt.observe(self.jobs.job(attempt.submission_id), node_map)
            except RayUnavailable as exc:
                with self._lock:
                    self._unavailable = str(exc)
                break
            if attempt.exited():
                attempt.pump.run()

    # -- views -----------------------------------------------------------------

    def unavailable_now(self) -> str:
        """Ask the head once, now (at start, before the poller runs)."""
        try:
            nodes = self.jobs.nodes()
        except RayUnavailable as exc:
            return str(exc)
        with self._lock:
            self._nodes, self._unavailable = nodes, ""
        return ""

    def unavailable(self) -> str:
        """Why Ray cannot take work now ("" when it can)."""
        with self._lock:
            return self._unavailable

    def alive_nodes(self) -> list[NodeReading]:
        with self._lock:
            return [n for n in self._nodes if n.alive]

    def node_map(self) -> dict[str, NodeReading]:
        with self._lock:
            return {n.node_id: n for n in self._nodes}

    def node_samples(self, node_id: str) -> list[Sample]:
        return list(self.node_load.node_samples(node_id))

    def tracked(self) -> list[RayAttempt]:
        with self._lock:
            return list(self._tracked.values())

    def untrack(self, attempt: RayAttempt) -> None:
        with self._lock:
            if self._tracked.get(attempt.job_id) is attempt:
                del self._tracked[attempt.job_id]

    # -- places on shared storage ---------------------------------------------

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
            _write_atomic(path, str(past + 1))

    def remove_stale_exports(self, job_id: str, current: int) -> list[str]:
        """Versions exported by attempts before ``current`` (read from their logs)."""
        removed: list[str] = []
        spec_path = self.attempt_paths(job_id, current)["spec"]
        try:
            model = json.loads(spec_path.read_text()).get("model", "")
        except (FileNotFoundError, ValueError):
            return removed
        for n in range(1, current):
            removed += unexport(self.attempt_paths(job_id, n)["log"], self.config.model_root, model)
        return removed

    # -- running attempts --------------------------------------------------------

    def spawn(self, spec: LaunchSpec) -> RayAttempt:
        """Fence, write the attempt's spec on shared storage, and submit it
        pinned to ``spec.node`` (the node the cluster gate chose). Blocking
        (HTTP). The submission id is ``trainer-<marker>``: a retried call
        cannot start a second copy."""
        if self.unavailable() and not self.alive_nodes():
            raise ExecutorUnavailable(f"UNAVAILABLE: {self.unavailable()}")
        if not self._probed:
            why = (
                self._probe_failure
                or "the shared storage probe has not run yet (it runs once the head answers)"
            )
            raise ExecutorUnavailable(f"UNAVAILABLE: {why}")
        nodes = self.node_map()
        node = nodes.get(spec.node) if spec.node else None
        if node is None or not node.alive:
            raise ExecutorUnavailable(f"UNAVAILABLE: node {spec.node[:12] or '(none chosen)'} is not alive")
        paths = self.attempt_paths(spec.job_id, spec.attempt)
        paths["dir"].mkdir(parents=True, exist_ok=True)
        paths["cwd"].mkdir(parents=True, exist_ok=True)
        _write_atomic(self.fence_path(spec.job_id), str(spec.attempt))
        earlier = [
            str(self.attempt_paths(spec.job_id, n)["checkpoint"]) for n in range(spec.attempt - 1, 0, -1)
        ]
        argv = list(spec.argv)
        if spec.checkpoint_dir is not None:
            argv = [str(paths["checkpoint"]) if a == str(spec.checkpoint_dir) else a for a in argv]
        argv = [self.python if i == 0 and a == sys.executable else a for i, a in enumerate(argv)]
        model = argv[argv.index("--model") + 1] if "--model" in argv else ""
        attempt_spec = {
            "job_id": spec.job_id,
            "attempt": spec.attempt,
            "argv": argv,
            "cwd": str(paths["cwd"]),
            "threads": spec.threads,
            "log": str(paths["log"]),
            "fence": str(self.fence_path(spec.job_id)),
            "checkpoint_dir": str(paths["checkpoint"]),
            "earlier_checkpoints": earlier,
            "model_root": str(self.config.model_root),
            "model": model,
            "node_id": node.node_id,
            "kill_grace_s": self.config.kill_grace_s,
        }
        _write_atomic(paths["spec"], json.dumps(attempt_spec))
        submission_id = f"trainer-{spec.marker}"
        placement = Placement(NAME, node.node_id, node.address, submission_id)
        handle = RayAttempt(self, spec.job_id, spec.attempt, placement, spec.threads)
        handle.pump.offset = 0
        handle.pump.offset_file.parent.mkdir(parents=True, exist_ok=True)
        handle.pump.offset_file.write_text("0")
        entrypoint = f"{shlex.quote(self.python)} -m trainer.ray_attempt {shlex.quote(str(paths['spec']))}"
        try:
            self.jobs.submit(
                submission_id,
                entrypoint,
                node.node_id,
                num_cpus=float(spec.threads),
                memory_bytes=int(self.config.ray_job_memory_mb) * 2**20,
                env=self.job_env(),
                metadata={"trainer_job_id": spec.job_id, "attempt": str(spec.attempt)},
            )
        except RayUnavailable as exc:
            raise ExecutorUnavailable(f"UNAVAILABLE: {exc}") from None
        with self._lock:
            self._tracked[spec.job_id] = handle
        return handle

    def attach(self, record: JobRecord) -> RayAttempt:
        """After a Trainer restart: follow the attempt by its submission id."""
        threads = int(record.params.get("threads", 1) or 1)
        placement = record.placement
        attempt = record.attempts
        handle = RayAttempt(self, record.job_id, attempt, placement, threads)
        if placement.executor != NAME or not placement.handle:
            handle.lost = "it has no Ray submission id (it was not started by a Ray executor)"
            handle._ended.set()
            return handle
        with self._lock:
            self._tracked[record.job_id] = handle
        return handle

    def job_env(self) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["PYTHONPATH"] = path
        return env

    # -- the storage probe -------------------------------------------------------

    def probe_storage(self, timeout_s: float = 120.0) -> str:
        """Run a probe job on a node: it must read the data root (and see what
        the Trainer sees there) and write under the model root and the work
        root. Returns what it found; raises StorageProbeFailed."""
        try:
            nodes = self.alive_nodes() or [n for n in self.jobs.nodes() if n.alive]
        except RayUnavailable as exc:
            raise ExecutorUnavailable(f"UNAVAILABLE: {exc}") from None
        if not nodes:
            raise StorageProbeFailed(f"no Ray node is alive at {self.config.ray_address}")
        node = max(nodes, key=lambda n: (not n.is_head, n.node_id))
        token = uuid.uuid4().hex[:12]
        probe_dir = self.work_root / "probes" / token
        probe_dir.mkdir(parents=True, exist_ok=True)
        data_root, model_root = self.config.data_root, self.config.model_root
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
        _write_atomic(spec_path, json.dumps(spec))
        submission_id = f"trainer-probe-{token}"
        entrypoint = f"{shlex.quote(self.python)} -m trainer.ray_attempt {shlex.quote(str(spec_path))}"
        try:
            return self._probe_on(node, submission_id, entrypoint, answer, timeout_s)
        except RayUnavailable as exc:
            raise ExecutorUnavailable(f"UNAVAILABLE: {exc}") from None
        finally:
            answer.unlink(missing_ok=True)
            shutil.rmtree(probe_dir, ignore_errors=True)

    def _probe_on(
        self, node: NodeReading, submission_id: str, entrypoint: str, answer: pathlib.Path, timeout_s: float
    ) -> str:
        data_root, model_root = self.config.data_root, self.config.model_root
        self.jobs.submit(submission_id, entrypoint, node.node_id, num_cpus=0, env=self.job_env())
        deadline = time.monotonic() + timeout_s
        job = None
        while time.monotonic() < deadline:
            job = self.jobs.job(submission_id)
            if job is not None and job.ended:
                break
            time.sleep(0.3)
        if job is None or not job.ended:
            self.jobs.stop(submission_id)
            raise StorageProbeFailed(
                f"the storage probe job did not finish on node {node.name} in {timeout_s:g}s"
            )
        if job.status != "SUCCEEDED" or not answer.is_file():
            tail = self.jobs.logs(submission_id).strip().splitlines()[-3:]
            raise StorageProbeFailed(
                f"node {node.name} cannot use the shared storage (data root {data_root}, model root "
                f"{model_root}, work root {self.work_root}): {' | '.join(tail) or job.message}. Every Ray "
                "node must mount them at the same paths as the Trainer (a shared filesystem or volume)"
            )
        return f"node {node.name} reads {data_root} and writes under {model_root} and {self.work_root}"


def _write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
