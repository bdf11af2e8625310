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


class TcpProxy:
    """A loopback TCP forwarder to ``target_port`` that can be switched off and
    on: the Ray head as the Trainer sees it, unreachable while off (new
    connections are refused: nothing listens on the port)."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self) -> None:
        import socket

        self._stop.clear()
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.2)
        self._server = server
        thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def off(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _accept(self, server) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst) -> None:
        try:
            src.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass
