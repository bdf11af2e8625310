"""Run the deploy files without a container engine (the deploy smoke test,
tests/integration/test_deploy_smoke.py). tests/support/deploy_manifests.py
reads them into ``Workload`` records; ``Stack`` runs those as processes on
this machine:

- each container gets a directory as its root file system; its mounts are
  links in it to the volumes (one directory per named volume or claim,
  shared between the workloads that mount it), the ConfigMap's or Secret's
  files, or the bind-mounted files; absolute paths in the command, the
  environment and the probes are taken under that root;
- the image's programs map to this project's console scripts (``labeler``,
  ``trainer``, ``python``); the tensorflow/serving image's
  ``/usr/bin/tensorflow_model_server`` to tests/support/tf_serving_shim.py,
  which runs ``labeler-modelserver`` with the same flags;
- ``check`` runs every command as written (hosts and ports included) with
  ``--check``: the server validates and binds nothing;
- ``start`` maps hosts (0.0.0.0, localhost, service names) to 127.0.0.1 and
  every container port to a free loopback port, and starts all workloads
  together; ``wait_healthy`` probes as the orchestrator would and fails with
  the workload's name when a probe does not pass within its window.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.deploy_manifests import (
    BIN,
    PROGRAMS,
    REPO,
    TF_SERVING_IMAGE,
    DeployError,
    Probe,
    Workload,
    repository,
)

# -- running --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Container:
    """One workload's process, its root directory and its port map."""

    def __init__(self, workload: Workload, root: pathlib.Path, volumes: pathlib.Path) -> None:
        self.workload = workload
        self.root = root
        self.ports = {port: free_port() for port in workload.ports}
        self.proc: subprocess.Popen | None = None
        self.log_path = root.parent / f"{root.name}.log"
        self._make_root(volumes)

    def _make_root(self, volumes: pathlib.Path) -> None:
        for path in ("tmp", "usr/bin"):  # what every image has
            (self.root / path).mkdir(parents=True, exist_ok=True)
        if repository(self.workload.image) == TF_SERVING_IMAGE:
            shim = self.host_path("/usr/bin/tensorflow_model_server")
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tests.support.tf_serving_shim "$@"\n')
            shim.chmod(0o755)
        for m in self.workload.mounts:
            where = self.host_path(m.path)
            if where.is_symlink() or where.exists():
                if where.is_dir() and not where.is_symlink() and not any(where.iterdir()):
                    where.rmdir()
                else:
                    shutil.rmtree(where) if where.is_dir() and not where.is_symlink() else where.unlink()
            where.parent.mkdir(parents=True, exist_ok=True)
            if m.kind == "volume":
                source = volumes / re.sub(r"\W+", "-", m.source)
                source.mkdir(parents=True, exist_ok=True)
                where.symlink_to(source)
            elif m.kind == "file":
                where.symlink_to(m.source)
            elif m.kind == "emptyDir":
                where.mkdir()
            else:  # configMap, secret: a directory of files
                where.mkdir()
                for name, content in m.items:
                    (where / name).write_text(content)

    def host_path(self, path: str) -> pathlib.Path:
        return self.root / path.lstrip("/")

    def translate_paths(self, text: str) -> str:
        """Absolute container paths (a whole value or after ``--flag=``) under the root."""
        if text.startswith("/"):
            return str(self.host_path(text))
        match = re.fullmatch(r"(--[\w-]+=)(/.*)", text)
        return match.group(1) + str(self.host_path(match.group(2))) if match else text

    def program(self, argv: list[str]) -> list[str]:
        first = argv[0]
        if first in PROGRAMS:
            return [str(PROGRAMS[first]), *argv[1:]]
        raise DeployError(f"{self.workload.name}: the image's program {first!r} is not mapped to one here")

    def base_env(self) -> dict[str, str]:
        env = {
            "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "PYTHONPATH": str(REPO),
            "HOME": str(self.host_path("/tmp")),
            "LANG": "C.UTF-8",
        }
        if repository(self.workload.image) == TF_SERVING_IMAGE:
            # tf-serving-start.sh's defaults name the image's files; these are the root's.
            env.update(
                TFS_SERVER=str(self.host_path("/usr/bin/tensorflow_model_server")),
                TFS_RENDERED_CONFIG=str(self.host_path("/tmp/models.config")),
                TFS_SHIM_CONTAINER_ROOT=str(self.root),
            )
        return env

    def env(self, network: Network | None) -> dict[str, str]:
        env = self.base_env()
        for key, value in self.workload.env:
            value = self.translate_paths(value)
            env[key] = network.rewrite(self, value) if network else value
        return env

    def argv(self, network: Network | None, extra: tuple[str, ...] = ()) -> list[str]:
        args = [self.translate_paths(a) for a in self.workload.argv]
        if network is not None:
            args = [network.rewrite(self, a) for a in args]
        return self.program(args + list(extra))

    # -- the two runs

    def check(self) -> subprocess.CompletedProcess:
        """The command exactly as written (paths under the root) with --check."""
        return subprocess.run(
            self.argv(None, ("--check",)),
            cwd=self.host_path(self.workload.workdir),
            env=self.env(None),
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )

    def start(self, network: Network) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv(network),
            cwd=self.host_path(self.workload.workdir),
            env=self.env(network),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def output(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # the whole group: tf-serving-start.sh's watcher, the shim's model server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class Network:
    """Hosts and ports as the containers see them -> 127.0.0.1 and free ports."""

    def __init__(
        self, containers: dict[str, Container], names: dict[str, tuple[str, dict[int, int]]]
    ) -> None:
        self.containers = containers
        self.names = names

    def address(self, own: Container, host: str, port: int) -> str | None:
        if host in ("localhost", "127.0.0.1", "0.0.0.0", "[::]", "::"):
            mapped = own.ports.get(port)
            return f"127.0.0.1:{mapped}" if mapped else None
        if host in self.names:
            workload, ports = self.names[host]
            container = self.containers[workload]
            mapped = container.ports.get(ports.get(port, port))
            if mapped is None:
                raise DeployError(f"{own.workload.name}: {host}:{port} names no port of {workload}")
            return f"127.0.0.1:{mapped}"
        return None

    def rewrite(self, own: Container, text: str) -> str:
        def host_port(m: re.Match) -> str:
            found = self.address(own, m.group(1), int(m.group(2)))
            return found if found else m.group(0)

        text = re.sub(r"(?<![\w.-])([A-Za-z0-9][\w.-]*|\[::\]):(\d+)\b", host_port, text)
        if text in ("0.0.0.0", "::", "[::]"):
            return "127.0.0.1"
        flag = re.fullmatch(r"(--[\w-]+=)(.*)", text)
        if flag:
            value = flag.group(2)
            if value in ("0.0.0.0", "::", "[::]"):
                return flag.group(1) + "127.0.0.1"
            if value.isdigit() and int(value) in own.ports:
                return flag.group(1) + str(own.ports[int(value)])
            return text
        if text.isdigit() and int(text) in own.ports:
            return str(own.ports[int(text)])
        return text


class Stack:
    """The workloads of one deployment, run together."""

    def __init__(self, workloads: list[Workload], names: dict, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.containers: dict[str, Container] = {}
        for i, w in enumerate(workloads):
            slug = re.sub(r"\W+", "-", w.name)
            self.containers[w.name] = Container(w, tmp / f"pod{i}-{slug}", tmp / "volumes")
        self.network = Network(self.containers, names)

    def volume(self, name: str) -> pathlib.Path:
        path = self.tmp / "volumes" / re.sub(r"\W+", "-", name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check(self) -> None:
        for c in self.containers.values():
            proc = c.check()
            if proc.returncode != 0:
                raise DeployError(
                    f"{c.workload.name}: its command refuses to start (--check exited {proc.returncode}):\n"
                    f"  {shlex.join(c.workload.argv)}\n{proc.stdout}{proc.stderr}"
                )

    def start(self) -> None:
        for c in self.containers.values():
            c.start(self.network)
        self.started = time.monotonic()

    def stop(self) -> None:
        for c in self.containers.values():
            c.stop()

    def probe_once(self, c: Container, probe: Probe) -> str | None:
        """None when the probe passes, else why not."""
        if probe.kind == "grpc":
            target = f"127.0.0.1:{c.ports[probe.port]}"
            with grpc.insecure_channel(target) as channel:  # no metadata, as the kubelet
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=probe.service),
                        timeout=max(probe.timeout_s, 1.0),
                    )
                except grpc.RpcError as err:
                    return f"{err.code().name}: {err.details()}"
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return None if status == "SERVING" else status
        if probe.kind == "tcp":
            try:
                with socket.create_connection(("127.0.0.1", c.ports[probe.port]), timeout=probe.timeout_s):
                    return None
            except OSError as exc:
                return str(exc)
        argv = [c.translate_paths(a) for a in probe.command]
        argv = c.program([self.network.rewrite(c, a) for a in argv])
        try:
            proc = subprocess.run(
                argv,
                cwd=c.host_path(c.workload.workdir),
                env=c.env(self.network),
                capture_output=True,
                text=True,
                timeout=max(probe.timeout_s, 10.0),  # a Python start-up on a busy machine
            )
        except subprocess.TimeoutExpired:
            return "timed out"
        return (
            None
            if proc.returncode == 0
            else f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
        )

    def wait_healthy(self) -> dict[str, float]:
        """Probe every workload until each of its probes has passed once;
        raise DeployError naming the workload when one has not within its
        window or the process exited. Seconds to healthy per probe."""
        pending = {
            (c.workload.name, p.what): (c, p) for c in self.containers.values() for p in c.workload.probes
        }
        passed: dict[str, float] = {}
        last: dict[tuple[str, str], str] = {}
        while pending:
            for key, (c, probe) in list(pending.items()):
                if c.proc.poll() is not None:
                    raise DeployError(
                        f"{c.workload.name}: exited with {c.proc.returncode} before its {probe.what} passed:\n"
                        f"{c.output()}"
                    )
                why = self.probe_once(c, probe)
                elapsed = time.monotonic() - self.started
                if why is None:
                    passed[f"{c.workload.name} {probe.what}"] = elapsed
                    del pending[key]
                    continue
                last[key] = why
                if elapsed > probe.window_s:
                    raise DeployError(
                        f"{c.workload.name}: its {probe.what} did not pass within {probe.window_s:.0f}s "
                        f"(last: {why}):\n{c.output()}"
                    )
            time.sleep(1.0)
        return passed
