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
  job, which resumes from its checkpoint. It lives in trainer/ray_handles.py
  with the log pump and the per-node sample series (``RayNodeSampler``).
- trainer/ray_storage.py: the attempts' places on shared storage, the fence,
  and the storage probe run at start.

Attempts are fenced: each has its own directory under the shared work root
(spec, log, checkpoint, working directory), a job's ``fence`` file names its
current attempt, and the wrapper of any other attempt ends its own tree and
removes what it exported as soon as it sees the fence move. The fence is
moved before a new attempt is submitted, so an old attempt that lives on
(its node declared dead but its processes running) can never race the new
one.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shlex
import sys
import threading
import time
from typing import Any

from trainer.config import TrainerConfig
from trainer.domain import JobRecord, Placement
from trainer.executor import ExecutorUnavailable, LaunchSpec
from trainer.gate import Sample
from trainer.jobs import PROJECT_ROOT
from trainer.ray_handles import RayAttempt, RayNodeSampler
from trainer.ray_jobs import NodeReading, RayJobs, RayUnavailable
from trainer.ray_storage import AttemptPlaces, StorageProbeFailed, probe_storage, write_atomic

__all__ = ["NAME", "RayAttempt", "RayExecutor", "RayNodeSampler", "StorageProbeFailed"]

log = logging.getLogger(__name__)

# A storage probe that failed after start (the Trainer already serves) is retried this often.
PROBE_RETRY_S = 30.0

NAME = "ray"


class RayExecutor:
    """Runs job attempts as Ray jobs on the cluster at ``config.ray_address``."""

    def __init__(self, config: TrainerConfig, jobs: RayJobs | None = None, node_load: Any = None) -> None:
        self.config = config
        self.jobs = jobs or RayJobs(config.ray_address)
        self.work_root = pathlib.Path(config.ray_work_root)
        self.places = AttemptPlaces(self.work_root, pathlib.Path(config.model_root))
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

    # -- places on shared storage (trainer.ray_storage) ------------------------

    def job_dir(self, job_id: str) -> pathlib.Path:
        return self.places.job_dir(job_id)

    def attempt_paths(self, job_id: str, attempt: int) -> dict[str, pathlib.Path]:
        return self.places.attempt_paths(job_id, attempt)

    def fence_path(self, job_id: str) -> pathlib.Path:
        return self.places.fence_path(job_id)

    def advance_fence(self, job_id: str, past: int) -> None:
        """Make ``past`` (and every earlier attempt) stale: the fence names a later one."""
        self.places.advance_fence(job_id, past)

    def remove_stale_exports(self, job_id: str, current: int) -> list[str]:
        """Versions exported by attempts before ``current`` (read from their logs)."""
        return self.places.remove_stale_exports(job_id, current)

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
        write_atomic(self.fence_path(spec.job_id), str(spec.attempt))
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
        write_atomic(paths["spec"], json.dumps(attempt_spec))
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
            handle.mark_lost("it has no Ray submission id (it was not started by a Ray executor)")
            return handle
        with self._lock:
            self._tracked[record.job_id] = handle
        return handle

    def job_env(self) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["PYTHONPATH"] = path
        return env

    # -- the storage probe (trainer.ray_storage) ---------------------------------

    def probe_storage(self, timeout_s: float = 120.0) -> str:
        """Run a probe job on a node: it must read the data root (and see what
        the Trainer sees there) and write under the model root and the work
        root. Returns what it found; raises StorageProbeFailed."""
        return probe_storage(
            self.config, self.jobs, self.alive_nodes(), self.python, self.job_env(), timeout_s
        )
