"""A job's log file and the lines the Trainer shows of it: the job appends
to the file directly (so it keeps logging across a Trainer restart); the
Trainer reads new lines from its offset (``progress`` / ``result`` lines are
modelspec.report's) and trims the file when it grows too large."""

from __future__ import annotations

import os
import pathlib
import signal
from collections.abc import Iterable

MAX_LINE_CHARS = 4096


class JobLog:
    """A job's log file: the job appends to it directly (so it keeps logging
    across a Trainer restart); the Trainer reads new lines from its offset and
    trims the file to its newest half when it grows past ``max_bytes``."""

    def __init__(self, path: pathlib.Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.offset = 0
        self._partial = b""
        path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, text: str) -> None:
        """A line from the Trainer itself (attempt started, killed, ...)."""
        with open(self.path, "ab") as f:
            f.write(f"[trainer] {text}\n".encode())

    def skip_to_end(self) -> None:
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self._partial = b""

    def read_lines(self, final: bool = False) -> list[str]:
        """New complete lines since the last call (``final``: the last partial one too),
        whole: a report line (a bundle's result names every label) may be far
        longer than a line shown to people (``shown_line``)."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # trimmed (by us) or replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [_decode(line) for line in lines]

    def trim(self) -> None:
        """Keep the newest half when the file is over its limit. Call right
        after read_lines, so only lines already read are dropped (a line the
        job writes in the same instant may be lost: the price of letting the
        job write its file directly)."""
        try:
            size = self.path.stat().st_size
            if size <= self.max_bytes:
                return
            with open(self.path, "r+b") as f:
                f.seek(size - self.max_bytes // 2)
                kept = f.read()
                kept = kept[kept.find(b"\n") + 1 :]
                header = f"[trainer] ... log trimmed to its newest {len(kept)} bytes (limit {self.max_bytes})\n".encode()
                f.seek(0)
                f.truncate()
                f.write(header + kept)
            self.offset, self._partial = len(header) + len(kept), b""
        except FileNotFoundError:
            pass

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines of the file (reads only its end)."""
        if lines <= 0:
            return []
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                chunk = max(8192, lines * 256)
                while True:
                    chunk = min(size, chunk)
                    f.seek(size - chunk)
                    parts = f.read(chunk).split(b"\n")
                    if parts and parts[-1] == b"":
                        parts.pop()
                    if chunk < size:
                        parts = parts[1:]  # the first one may be cut
                    if len(parts) >= lines or chunk >= size or chunk >= 4 * self.max_bytes:
                        break
                    chunk *= 4
        except FileNotFoundError:
            return []
        return [shown_line(_decode(p)) for p in parts[-lines:]]


def shown_line(text: str) -> str:
    """A line as events and status show it: at most MAX_LINE_CHARS characters."""
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + " ..."


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


def exit_reason(code: int | None, recent: Iterable[str]) -> str:
    """Why a job that exported nothing failed, with its last line of output."""
    last = next(
        (line for line in reversed(list(recent)) if line.strip() and not line.startswith("[trainer]")), ""
    )
    tail = f"; last line: {last[:300]}" if last else ""
    if code is None:
        return f"ended while re-attached with no exported version in its log{tail}"
    if code < 0:
        return f"killed by signal {_signal_name(-code)} (not by the Trainer; out of memory?){tail}"
    return f"exited with code {code}{tail}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
