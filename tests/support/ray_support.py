"""Per-node readings for the cluster gate as a test scripts them: on one
machine every Ray node reports the same host-wide CPU and memory, so tests
of placement by load say each node's load themselves (the real cluster
still runs, places, kills and loses the jobs)."""

from __future__ import annotations

import threading
import time

from trainer.gate import Sample


class ScriptedNodeLoad:
    """``set(node_id, cpu, memory)``; a node not set reads ``default``."""

    def __init__(self, default: tuple[float, float] = (10.0, 10.0), step: float = 0.05) -> None:
        self.default = default
        self.step = step
        self._levels: dict[str, list[tuple[float, float, float]]] = {}
        self._lock = threading.Lock()

    def set(self, node_id: str, cpu: float, memory: float = 10.0) -> None:
        with self._lock:
            self._levels.setdefault(node_id, []).append((time.monotonic(), cpu, memory))

    def node_samples(self, node_id: str) -> list[Sample]:
        now = time.monotonic()
        with self._lock:
            levels = [(now - 3600, *self.default), *self._levels.get(node_id, [])]
        out, t = [], now - 10.0
        while t + self.step <= now:
            level = next(lv for lv in reversed(levels) if lv[0] <= t)
            out.append(Sample(t, t + self.step, level[1], level[2]))
            t += self.step
        return out


class FixedNodeLoad(ScriptedNodeLoad):
    """Levels given once as ``{node_id: [cpu, memory]}`` (for a Trainer in a process of its own)."""

    def __init__(self, levels: dict[str, list[float]]) -> None:
        super().__init__()
        for node_id, (cpu, memory) in levels.items():
            self.set(node_id, cpu, memory)
