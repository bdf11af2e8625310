"""``labeler serve --workers N`` (issue 27): N Labeler processes on one port.

One Python process runs one event loop on one core; a node with more cores
runs more processes. The parent:

1. takes the port: a lock file (``text-labeler-port-<port>.lock`` in the
   temporary directory, held with ``flock`` for its whole life, so a second
   ``labeler serve --workers`` on the port fails at once) and a probe bind
   without SO_REUSEPORT (fails while anything else listens there);
2. forks the N workers, before any gRPC server, channel or thread exists in
   it; each worker builds its own server with ``grpc.so_reuseport`` on, so
   the kernel spreads new connections over them. A server that does not ask
   for SO_REUSEPORT (every server of this project, and a Labeler started
   without ``--workers``) still gets "port in use";
3. forwards SIGHUP (reload the config), SIGTERM and SIGINT (drain and stop)
   to every worker, and waits for them. A worker that dies stops the others
   and the parent exits 1, so a supervisor restarts the whole set.

Health is per worker (each loads the same config, so they agree once ready;
a probe reaches whichever worker its connection lands on). Metrics: worker i
serves its own endpoint on ``--metrics-port + i`` (one scrape target per
worker; sum them in queries, as for replicas).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO

log = logging.getLogger(__name__)

_STOP_GRACE_S = 30.0


class PortTaken(OSError):
    """Another server (or another ``labeler serve --workers``) holds the port."""


def lock_path(port: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"text-labeler-port-{port}.lock")


def take_port(host: str, port: int) -> tuple[int, IO[bytes]]:
    """The port to serve (port 0: a free one) and the held lock file.
    Raises PortTaken when the port is held."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no holder
        probe.bind((host, port))
        port = probe.getsockname()[1]
    except OSError as exc:
        raise PortTaken(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server already running "
            "there?); stop the other server or choose another --port"
        ) from exc
    finally:
        probe.close()
    lock = open(lock_path(port), "ab")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise PortTaken(
                f"port {port} is held by another `labeler serve --workers` (lock {lock_path(port)}); "
                "stop it or choose another --port"
            ) from exc
        raise
    return port, lock


def run_workers(count: int, host: str, port: int, worker: Callable[[int, int], int]) -> int:
    """Take the port, fork ``count`` processes running ``worker(index, port)``
    (its return value is the process's exit status), relay signals and wait.
    The parent's exit status: 0 when every worker stopped cleanly after a
    signal, else 1."""
    port, lock = take_port(host, port)
    children: dict[int, int] = {}  # pid -> worker index
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                status = worker(index, port)
            except BaseException:  # noqa: BLE001 - reported, then the worker exits
                log.exception("worker %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children[pid] = index
    log.info("Labeler workers %s on port %d", sorted(children), port)
    stopping = False

    def relay(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, relay)
    failed = False
    try:
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid not in children:
                continue
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0 or not stopping:
                failed = True
                if not stopping:
                    log.error("worker %d (pid %d) exited with %d: stopping the others", index, pid, code)
                    stopping = True
                    _stop(children)
    finally:
        lock.close()
    return 1 if failed else 0


def _stop(children: dict[int, int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + _STOP_GRACE_S
    while children and time.monotonic() < end:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.05)
            continue
        children.pop(pid, None)
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        children.pop(pid, None)
