"""The Trainer's client of a Ray cluster: the Jobs API (submit, status, stop,
logs, by submission id) and the dashboard's per-node readings.

Blocking calls over HTTP (``requests``, as Ray's own ``JobSubmissionClient``
uses); the scheduler calls them on a worker thread. Every failure to reach
the head becomes ``RayUnavailable`` with a message that says what was tried,
so the caller can queue work and tell the user why nothing runs.

Ray is imported only when a client is made (it is the ``ray`` extra; the
local executor never loads it).

Placement is decided by the Trainer's gate, not by Ray: a job is submitted
only once a node was chosen, and pinned to it with the label every Ray node
carries (``ray.io/node-id``). Ray's own accounting stays in force underneath
(``entrypoint_num_cpus`` / ``entrypoint_memory``): a job Ray cannot place would
sit PENDING and could not be stopped (ray-project/ray#58353), so the gate
checks room first from what it placed itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import requests

NODE_ID_LABEL = "ray.io/node-id"
# What Ray calls the states a job ends in, and the ones that still hold a node.
ENDED = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayUnavailable(Exception):
    """The Ray head (its dashboard / Jobs API) could not be reached or answered wrongly."""


@dataclasses.dataclass(frozen=True)
class NodeReading:
    """One Ray node as its dashboard agent reports it (psutil on that node)."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpu_percent: float | None  # machine-wide on that node; None before its first report
    memory_percent: float | None
    cpus: float  # Ray's CPU resource on the node
    memory_bytes: float  # Ray's memory resource on the node
    at: float  # time.time() of the reading

    @property
    def name(self) -> str:
        return f"{self.node_id[:12]}@{self.address}"


@dataclasses.dataclass(frozen=True)
class RayJob:
    submission_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str
    node_id: str
    exit_code: int | None
    error_type: str = ""

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def _pct(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def parse_nodes(reply: Mapping[str, Any], now: float | None = None) -> list[NodeReading]:
    """The nodes of a dashboard ``GET /nodes?view=summary`` reply."""
    now = time.time() if now is None else now
    out = []
    for node in reply.get("data", {}).get("summary", []):
        raylet = node.get("raylet") or {}
        if not raylet.get("nodeId"):
            continue
        mem = node.get("mem")
        resources = raylet.get("resourcesTotal") or {}
        out.append(
            NodeReading(
                node_id=raylet["nodeId"],
                address=str(raylet.get("nodeManagerAddress") or node.get("ip") or ""),
                alive=raylet.get("state") == "ALIVE",
                is_head=bool(raylet.get("isHeadNode")),
                cpu_percent=_pct(node.get("cpu")),
                memory_percent=_pct(mem[2]) if isinstance(mem, list) and len(mem) > 2 else None,
                cpus=float(resources.get("CPU", 0.0)),
                memory_bytes=float(resources.get("memory", 0.0)),
                at=now,
            )
        )
    return out


class RayJobs:
    """The Jobs API and node readings of one cluster, at ``address`` (the
    dashboard, as for ``ray job submit --address``)."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self._client: Any = None

    def _jobs(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError or RuntimeError
                raise RayUnavailable(
                    f"the Ray head at {self.address} does not answer: {_short(exc)}"
                ) from None
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        client = self._jobs()
        try:
            return fn(client, *args, **kwargs)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                raise
            self._client = None
            raise RayUnavailable(f"Ray {what} at {self.address} failed: {_short(exc)}") from None
        except (requests.RequestException, ConnectionError, OSError) as exc:
            self._client = None
            raise RayUnavailable(
                f"the Ray head at {self.address} does not answer ({what}): {_short(exc)}"
            ) from None

    def nodes(self) -> list[NodeReading]:
        try:
            reply = requests.get(f"{self.address}/nodes?view=summary", timeout=self.timeout_s)
            reply.raise_for_status()
            return parse_nodes(reply.json())
        except (requests.RequestException, ValueError) as exc:
            raise RayUnavailable(
                f"the Ray head at {self.address} does not answer (node readings): {_short(exc)}"
            ) from None

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        node_id: str,
        *,
        num_cpus: float,
        memory_bytes: int = 0,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Submit on ``node_id`` (pinned by its node-id label). Idempotent by
        submission id: a second submit of the same id is refused by Ray and
        reported here as already submitted."""

        def do(client):
            return client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                entrypoint_num_cpus=num_cpus,
                entrypoint_memory=int(memory_bytes) or None,
                entrypoint_label_selector={NODE_ID_LABEL: node_id},
                runtime_env={"env_vars": dict(env or {})},
                metadata=dict(metadata or {}),
            )

        try:
            return self._call("submit", do)
        except RayUnavailable as exc:
            if "already exists" in str(exc):
                return submission_id
            raise

    def job(self, submission_id: str) -> RayJob | None:
        """The job as Ray knows it; None when Ray has no such submission."""
        try:
            info = self._call("status", lambda c: c.get_job_info(submission_id))
        except RuntimeError:
            return None
        status = getattr(info.status, "value", str(info.status))
        return RayJob(
            submission_id=submission_id,
            status=status,
            message=info.message or "",
            node_id=info.driver_node_id or "",
            exit_code=info.driver_exit_code,
            error_type=str(info.error_type or ""),
        )

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM to its entrypoint, SIGKILL after
        Ray's grace). False when it had already ended or is unknown."""
        try:
            return bool(self._call("stop", lambda c: c.stop_job(submission_id)))
        except RuntimeError:
            return False

    def logs(self, submission_id: str) -> str:
        try:
            return str(self._call("logs", lambda c: c.get_job_logs(submission_id)))
        except RuntimeError:
            return ""


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
