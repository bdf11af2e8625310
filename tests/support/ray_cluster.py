"""A real multi-node Ray cluster on loopback for tests and benchmarks.

Started only through ``ray.cluster_utils.Cluster`` (never ``ray start``: it
rewrites 127.0.0.1 to the host address and listens on 0.0.0.0), with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``RAY_TMPDIR`` in the caller's own
directory (with a ``ray/`` folder in it), every port chosen free. Each node
gets one CPU and a custom resource named after it (``tl_node_<name>``): on
one machine every node's address is 127.0.0.1, so ``node:<ip>`` cannot pin a
job to one node; the Trainer's Ray executor pins with the custom resource.

``stop`` removes every node and reaps its processes (a SIGKILLed raylet left
as a zombie counts as alive).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import requests

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
NODE_RESOURCE_PREFIX = "tl_node_"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A head and ``workers`` worker nodes, one CPU each, on 127.0.0.1."""

    def __init__(self, root: pathlib.Path, workers: int = 2, head_cpus: int = 1) -> None:
        self.root = pathlib.Path(root)
        self.workers = workers
        self.head_cpus = head_cpus
        self.cluster: Any = None
        self.dashboard_port = 0
        self.nodes: dict[str, Any] = {}  # name -> ray._private.node.Node
        self._saved_tmpdir: str | None = None

    @property
    def address(self) -> str:
        """The Jobs API address (as for ``ray job submit --address``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> LoopbackCluster:
        tmp = self.root / "ray"
        tmp.mkdir(parents=True, exist_ok=True)
        self._saved_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = str(self.root)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        from ray.cluster_utils import Cluster

        self.dashboard_port = free_port()
        self.cluster = Cluster(
            initialize_head=True,
            shutdown_at_exit=True,
            head_node_args={
                "node_ip_address": "127.0.0.1",
                "gcs_server_port": free_port(),
                "ray_client_server_port": free_port(),
                "dashboard_agent_listen_port": free_port(),
                "runtime_env_agent_port": free_port(),
                "metrics_export_port": free_port(),
                "num_cpus": self.head_cpus,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "temp_dir": str(tmp),
                "resources": {NODE_RESOURCE_PREFIX + "head": 1},
                # A dead node is declared dead after about 3 s (Ray's default: 5 missed
                # checks 3 s apart), so the node-death tests do not wait 15 s.
                "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
            },
        )
        self.nodes["head"] = self.cluster.head_node
        for i in range(1, self.workers + 1):
            self.add_worker(f"w{i}")
        self.wait_dashboard()
        return self

    def add_worker(self, name: str) -> Any:
        node = self.cluster.add_node(
            node_ip_address="127.0.0.1",
            num_cpus=1,
            temp_dir=str(self.root / "ray"),
            dashboard_agent_listen_port=free_port(),
            runtime_env_agent_port=free_port(),
            metrics_export_port=free_port(),
            resources={NODE_RESOURCE_PREFIX + name: 1},
        )
        self.nodes[name] = node
        return node

    def kill_worker(self, name: str) -> None:
        """The worker node dies at once (SIGKILL to its Ray processes, which
        are reaped); processes its jobs started live on, as on a partitioned
        machine."""
        node = self.nodes.pop(name)
        self.cluster.remove_node(node, allow_graceful=False)

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def wait_dashboard(self, timeout: float = 60.0) -> None:
        """Until the dashboard answers and lists every node alive."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                reply = requests.get(f"{self.address}/nodes?view=summary", timeout=2).json()
                alive = [n for n in reply["data"]["summary"] if n.get("raylet", {}).get("state") == "ALIVE"]
                if len(alive) == len(self.nodes):
                    return
                last = f"{len(alive)} of {len(self.nodes)} nodes alive"
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"the Ray dashboard at {self.address} is not ready: {last}")

    def stop(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = None
            self.nodes.clear()
        saved = getattr(self, "_saved_tmpdir", None)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


@contextlib.contextmanager
def loopback_cluster(root: pathlib.Path, workers: int = 2) -> Iterator[LoopbackCluster]:
    cluster = LoopbackCluster(root, workers)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
