"""A server run as a real subprocess: its stderr is collected and ``start``
waits for the line that names the port it bound. Shared by the conformance,
integration and reliability tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


class ServerProcess:
    """A server subprocess whose stderr is collected; ``start`` waits for the
    line that names its port. ``stop`` sends SIGTERM, ``kill`` SIGKILL."""

    def __init__(
        self,
        argv: list[str],
        serving: re.Pattern,
        start_timeout: float = 180.0,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.argv = argv
        self.cwd = cwd
        self.serving = serving
        self.start_timeout = start_timeout
        self.port = 0
        self.log: list[str] = []
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            self.argv,
            env=ENV,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        def read() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise TimeoutError(f"{self.argv[:4]} did not start:\n{self.output()}") from None
            if line is None:
                raise RuntimeError(f"{self.argv[:4]} exited with {self.proc.wait()}:\n{self.output()}")
            if match := self.serving.search(line):
                self.port = int(match.group(1))
                return self

    def output(self) -> str:
        return "".join(self.log[-60:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
