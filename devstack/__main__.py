"""`make run`: the whole stack on one machine, on the embedded model server.

Starts the Trainer (:50052), labeler-modelserver (:8500) and the Labeler
(:50051) as child processes; when a sample model has no version yet, generates
the sample corpus and trains the missing models *through the Trainer* (gated
like any job), printing their progress; then prints a grpcurl example and
serves until Ctrl-C, stopping the children gracefully.

Usage: python -m devstack [--root var] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelspec.versions import version_dirs
from rpc.addresses import host_port
from trainer import background
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE_MODELS = {"movie": "影视", "beauty": "美妆", "star": "明星", "fashion": "时尚"}
EXAMPLE_WORDS = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]


@dataclasses.dataclass
class StackPaths:
    root: pathlib.Path

    @property
    def models(self) -> pathlib.Path:
        return self.root / "models"

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def corpus(self) -> pathlib.Path:
        return self.data / "sample"

    @property
    def trainer_state(self) -> pathlib.Path:
        return self.root / "trainer"

    @property
    def background(self) -> pathlib.Path:
        """Real background text (trainer.background): the sample corpus's
        background negatives and the held-out slice every job scores. Set-up
        data like the virtual environment, not stack state: the one fetched
        for the repository (var/background, `make background`) whatever --root."""
        return background.background_dir()


def _has_version(model_dir: pathlib.Path) -> bool:
    return bool(version_dirs(model_dir))


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``: a bind that only a
    listener can refuse (SO_REUSEADDR lets it past connections left in TIME_WAIT)."""
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def taken_ports(host: str, ports: dict[str, int]) -> dict[str, int]:
    """The servers (by name) whose port something already listens on."""
    return {name: port for name, port in ports.items() if port_in_use(host, port)}


def _spawn(
    name: str, argv: list[str], log_dir: pathlib.Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    print(f"  starting {name}: {' '.join(argv[2:] if argv[1] == '-m' else argv)}  (log: {log.name})")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        **(extra_env or {}),
    }
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_serving(target: str, service: str, procs: dict[str, subprocess.Popen], timeout: float) -> None:
    """Wait until ``target`` reports SERVING for ``service`` (a child dying ends the wait)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited with code {proc.returncode}; see var/logs/{name}.log")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"{service or target} did not become SERVING within {timeout:.0f}s")


def _train_missing(paths: StackPaths, trainer_target: str, procs: dict[str, subprocess.Popen]) -> None:
    missing = [m for m in SAMPLE_MODELS if not _has_version(paths.models / m)]
    if not missing:
        return
    if not (paths.corpus / "train.jsonl").exists():
        print(f"generating the sample corpus into {paths.corpus}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer.corpus",
                "--out",
                str(paths.corpus),
                "--seed",
                "0",
                "--background",
                str(background.train_path(paths.background)),
            ],
            check=True,
            cwd=REPO,
        )
    print(f"training the sample models through the Trainer: {', '.join(missing)}")
    corpus = str((paths.corpus / "train.jsonl").relative_to(paths.data))
    with grpc.insecure_channel(trainer_target) as channel:
        stub = trainer_pb2_grpc.TrainerStub(channel)
        jobs = {}
        for model in missing:
            reply = stub.Start(
                trainer_pb2.StartRequest(
                    model=model,
                    label=SAMPLE_MODELS[model],
                    corpus=corpus,
                    idempotency_key=f"make-run-sample-{model}-{int(time.time()) // 86400}",
                ),
                timeout=10,
            )
            jobs[model] = reply.job.job_id
        done: dict[str, trainer_pb2.Job] = {}
        last_line: dict[str, str] = {}
        while len(done) < len(jobs):
            if procs["trainer"].poll() is not None:
                raise SystemExit("the Trainer exited; see var/logs/trainer.log")
            for model, job_id in jobs.items():
                if model in done:
                    continue
                job = stub.Status(trainer_pb2.StatusRequest(job_id=job_id), timeout=10).job
                state = trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
                p = job.progress
                line = f"  {model:8s} {state:9s}"
                if p.epoch:
                    line += f" epoch {p.epoch}/{p.epochs} loss {p.loss:.3f} val_acc {p.val_accuracy:.3f}"
                elif job.gate.reason and job.state == trainer_pb2.JOB_STATE_QUEUED:
                    line += f" ({job.gate.reason})"
                if line != last_line.get(model):
                    print(line, flush=True)
                    last_line[model] = line
                if job.state in (
                    trainer_pb2.JOB_STATE_SUCCEEDED,
                    trainer_pb2.JOB_STATE_FAILED,
                    trainer_pb2.JOB_STATE_KILLED,
                ):
                    done[model] = job
            time.sleep(1)
    failed = {m: j for m, j in done.items() if j.state != trainer_pb2.JOB_STATE_SUCCEEDED}
    for model, job in done.items():
        if model not in failed:
            print(f"  {model}: version {job.model_version}, held-out F1 {job.progress.f1:.3f}")
    if failed:
        reasons = "; ".join(f"{m}: {j.reason}" for m, j in failed.items())
        raise SystemExit(f"training failed ({reasons}); `trainer status <id>` shows the log")


def _stop(procs: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="var", help="state directory (models, data, trainer state, logs)")
    parser.add_argument("--host", default="127.0.0.1", help="address the three servers bind")
    parser.add_argument("--labeler-port", type=int, default=50051)
    parser.add_argument("--trainer-port", type=int, default=50052)
    parser.add_argument("--modelserver-port", type=int, default=8500)
    args = parser.parse_args(argv)
    host = args.host

    # Checked before anything starts: a second stack must not half-start and
    # then stop, or share ports with the first.
    ports = {
        "Labeler": args.labeler_port,
        "Trainer": args.trainer_port,
        "model server": args.modelserver_port,
    }
    taken = taken_ports(host, ports)
    if taken:
        listed = ", ".join(f"{host_port(host, port)} ({name})" for name, port in taken.items())
        print(
            f"make run: the stack is already running: something listens on {listed}. Stop the running "
            "stack first (Ctrl-C where it runs), or give other ports with --labeler-port, "
            "--trainer-port and --modelserver-port.",
            file=sys.stderr,
        )
        return 1

    paths = StackPaths(REPO / args.root)
    for model in SAMPLE_MODELS:
        (paths.models / model).mkdir(parents=True, exist_ok=True)
    paths.data.mkdir(parents=True, exist_ok=True)
    # Fetched once (make run's `background` target does it first; here for a
    # stack started without make): the sample corpus's background negatives.
    background.ensure(paths.background)
    logs = paths.root / "logs"
    py = sys.executable
    print("text-labeler: starting the stack")
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["trainer"] = _spawn(
            "trainer",
            [
                py,
                "-m",
                "trainer.cli",
                "serve",
                "--host",
                host,
                "--port",
                str(args.trainer_port),
                "--data-root",
                str(paths.data),
                "--model-root",
                str(paths.models),
                "--state-dir",
                str(paths.trainer_state),
                # Ctrl-C stops training too; an unfinished job is
                # requeued and resumes from its checkpoint next time.
                "--stop-jobs-on-exit",
            ],
            logs,
            # Every job scores this held-out background slice (its result line).
            {background.DIR_ENV: str(paths.background)},
        )
        procs["modelserver"] = _spawn(
            "modelserver",
            [
                py,
                "-m",
                "modelserver.cli",
                f"--port={args.modelserver_port}",
                f"--host={host}",
                "--model_config_file=deploy/models.config",
                "--file_system_poll_wait_seconds=2",
            ],
            logs,
        )
        procs["labeler"] = _spawn(
            "labeler",
            [
                py,
                "-m",
                "labeler.cli",
                "serve",
                "--config",
                "deploy/labeler.textproto",
                "--host",
                host,
                "--port",
                str(args.labeler_port),
            ],
            logs,
        )
        trainer_target = host_port(host, args.trainer_port)
        _wait_serving(trainer_target, "trainer.v1.Trainer", procs, timeout=120)
        _train_missing(paths, trainer_target, procs)
        print("waiting for the Labeler to load every model ...")
        _wait_serving(host_port(host, args.labeler_port), "labeler.v1.Labeler", procs, timeout=300)
        words = ", ".join(f'"{w}"' for w in EXAMPLE_WORDS)
        print(
            "\nThe stack is up:\n"
            f"  Labeler      {host_port(host, args.labeler_port)}  (labeler.v1.Labeler)\n"
            f"  Trainer      {host_port(host, args.trainer_port)}  (trainer.v1.Trainer)\n"
            f"  Model server {host_port(host, args.modelserver_port)}  (tensorflow.serving.PredictionService)\n\n"
            "Try it:\n"
            f"  .venv/bin/grpcurl -plaintext -d '{{\"words\": [{words}]}}' {host_port(host, args.labeler_port)} labeler.v1.Labeler/Classify\n"
            f"  .venv/bin/labeler classify {' '.join(EXAMPLE_WORDS)}\n\n"
            "Serving until Ctrl-C.",
            flush=True,
        )
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        while not stop["now"]:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SystemExit(
                        f"{name} exited with code {proc.returncode}; see {logs / (name + '.log')}"
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        _stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
