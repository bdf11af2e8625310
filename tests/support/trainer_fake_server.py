"""A Trainer server with the fake recipe as a process of its own, for tests
that SIGKILL or SIGTERM it: ``python -m tests.support.trainer_fake_server DIR
PORT_FILE [CONFIG_JSON]``. The config is ``make_config(DIR, **CONFIG_JSON)``
(a ``gate`` object becomes a GatePolicy); it serves until SIGTERM."""

from __future__ import annotations

import json
import pathlib
import signal
import sys
import threading

from tests.support.trainer_support import make_config, running_trainer
from trainer.gate import GatePolicy


def main(argv: list[str]) -> int:
    root, port_file = pathlib.Path(argv[0]), pathlib.Path(argv[1])
    overrides = json.loads(argv[2]) if len(argv) > 2 else {}
    overrides.pop("node_loads", None)
    if "gate" in overrides:
        overrides["gate"] = GatePolicy(**overrides["gate"])
    config = make_config(root, **overrides)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # not a blocked mask: jobs would inherit it
    executor = None
    if overrides.get("executor") == "ray" and "node_loads" in json.loads(argv[2]):
        # Scripted per-node readings (every node shares this machine's real ones).
        from tests.support.ray_support import FixedNodeLoad
        from trainer.ray_executor import RayExecutor

        executor = RayExecutor(config, node_load=FixedNodeLoad(json.loads(argv[2])["node_loads"]))
    with running_trainer(config, executor=executor) as trainer:
        port_file.write_text(f"{trainer.port}\n")
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
