"""Run ``labeler-modelserver`` as a real subprocess and find the port it bound."""

from __future__ import annotations

import os
import pathlib
import re
import sys

from tests.support.server_process import ServerProcess

SERVING = re.compile(r"labeler-modelserver serving on \S+:(\d+)")


def command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "labeler-modelserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "modelserver.cli"]


class ModelServerProcess(ServerProcess):
    """``with ModelServerProcess([...flags]) as p:`` -> ``p.port``; stops with SIGTERM."""

    def __init__(
        self, args: list[str], cwd: str | os.PathLike | None = None, start_timeout: float = 120.0
    ) -> None:
        super().__init__([*command(), *args], SERVING, start_timeout, cwd=cwd)
