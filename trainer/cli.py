"""trainer: run the Trainer server, or talk to one.

  trainer serve --port 50052 --data-root var/data --model-root var/models --state-dir var/trainer
  trainer start movie --label 影视 [--corpus sample/train.jsonl] [--epochs 5] [--wait]
  trainer status JOB_ID | trainer kill JOB_ID | trainer watch JOB_ID
  trainer list [--state running --state queued] [--model movie] [--sweep SWEEP_ID]
  trainer sweep start|status|list|kill ...   (see trainer/sweep_cli.py)

Client commands reach ``--target`` (or $TRAINER_TARGET, default
localhost:50052), with TLS given ``--tls-ca`` (mutual TLS: ``--tls-cert``/``--tls-key``)
and a bearer token from ``--token`` or $TRAINER_TOKEN. ``serve`` takes
``--tls-cert``/``--tls-key``/``--tls-client-ca`` and tokens from
``--auth-tokens-file`` or $TRAINER_AUTH_TOKENS; it refuses to bind a
non-loopback ``--host`` without tokens. Exit status: 0 on success; 1 when the call fails (the
message says why) or, for ``watch`` and ``start --wait``, when the job ends
other than SUCCEEDED; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import pathlib
import sys

import grpc
from google.protobuf import json_format

from trainer import sweep_cli
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

DEFAULT_TARGET = "localhost:50052"
TOKEN_ENV = "TRAINER_TOKEN"
_HYPERPARAMETERS = [f.name for f in trainer_pb2.Hyperparameters.DESCRIPTOR.fields]
_STATES = [
    n.removeprefix("JOB_STATE_").lower() for n in trainer_pb2.JobState.keys() if not n.endswith("UNSPECIFIED")
]


# The exit status of a command whose reader went away (a shell's 128 + SIGPIPE).
EXIT_CLOSED_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that stops reading (``trainer list | head -1``)
    ends it quietly with EXIT_CLOSED_PIPE, as a closed pipe ends other tools."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be shown: point stdout at /dev/null so the
        # interpreter's last flush at exit cannot complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    return code


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    from rpc import security

    try:
        channel = security.open_channel(args.target, security.client_security_from_args(args, TOKEN_ENV))
    except ValueError as exc:
        print(f"trainer: {exc}", file=sys.stderr)
        return 2
    try:
        with channel:
            return args.run(trainer_pb2_grpc.TrainerStub(channel), args)
    except grpc.RpcError as err:
        print(f"trainer: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    from rpc import security

    parser = argparse.ArgumentParser(prog="trainer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the Trainer server")
    _serve_flags(serve)
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the flags, tokens (off loopback) and TLS files as a start would, bind nothing, exit 0 if good",
    )

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--target",
        default=os.environ.get("TRAINER_TARGET", DEFAULT_TARGET),
        help="host:port of the Trainer (default: $TRAINER_TARGET or %(default)s)",
    )
    client.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default %(default)s)")
    client.add_argument("--json", action="store_true", help="print the replies as JSON")
    security.add_client_security_flags(client, TOKEN_ENV)

    start = sub.add_parser("start", parents=[client], help="queue a training job")
    start.add_argument("model", help="model to train, e.g. movie")
    start.add_argument(
        "--label",
        required=True,
        action="append",
        help="label the model predicts, e.g. 影视; repeat it to train one multi-label model (a bundle)",
    )
    start.add_argument("--recipe", default="", help="recipe from the server's registry (default: fasttext)")
    start.add_argument("--corpus", default="", help="corpus path relative to the server's data root")
    start.add_argument(
        "--idempotency-key", default="", help="a retried start with this key returns the same job"
    )
    for name in _HYPERPARAMETERS:
        start.add_argument("--" + name.replace("_", "-"), type=int, help=f"hyperparameter {name}")
    start.add_argument(
        "--priority", choices=["low", "normal", "high"], default="normal", help="queue priority"
    )
    start.add_argument("--deadline", type=int, help="seconds of run time before the job is killed and failed")
    start.add_argument("--max-retries", type=int, default=0, help="retries of a job that fails on its own")
    start.add_argument("--wait", action="store_true", help="watch the job until it ends")
    start.set_defaults(run=_start)

    status = sub.add_parser("status", parents=[client], help="show a job and the end of its log")
    status.add_argument("job_id")
    status.add_argument("--lines", type=int, default=20, help="log lines to show (default %(default)s)")
    status.set_defaults(run=_status)

    kill = sub.add_parser("kill", parents=[client], help="kill a job and its whole process tree")
    kill.add_argument("job_id")
    kill.set_defaults(run=_kill)

    listing = sub.add_parser("list", parents=[client], help="list jobs, newest first")
    listing.add_argument(
        "--state", action="append", default=[], choices=_STATES, help="only this state (repeatable)"
    )
    listing.add_argument("--model", default="", help="only jobs for this model")
    listing.add_argument("--sweep", default="", help="only the jobs of this sweep")
    listing.add_argument("--limit", type=int, default=0, help="most jobs to list (default 100)")
    listing.set_defaults(run=_list)

    watch = sub.add_parser("watch", parents=[client], help="follow a job's state and log until it ends")
    watch.add_argument("job_id")
    watch.set_defaults(run=_watch)

    sweep_cli.add_parser(sub, client)
    return parser


def _serve_flags(p: argparse.ArgumentParser) -> None:
    from rpc import security
    from trainer.config_flags import add_config_flags  # a flag per TrainerConfig field
    from trainer.server import TOKENS_ENV

    add_config_flags(p)
    p.add_argument("--port-file", help="write the bound port to this file once serving")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown")
    security.add_server_security_flags(p, TOKENS_ENV)
    p.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")


def _serve(args: argparse.Namespace) -> int:
    from rpc import security
    from rpc import server as rpc_server
    from rpc.addresses import host_port
    from trainer.config_flags import config_from_args
    from trainer.executor import ExecutorUnavailable
    from trainer.server import TOKENS_ENV, create_server
    from trainer.service import StateDirInUse

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        server_security = security.server_security_from_args(args, TOKENS_ENV)
    except ValueError as exc:
        print(f"trainer serve: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return _check(config, server_security)

    async def run() -> None:
        handle = await create_server(config, security=server_security)
        print(
            f"trainer listening on {host_port(config.host, handle.port)} (state {config.state_dir})",
            flush=True,
        )
        if args.port_file:
            pathlib.Path(args.port_file).write_text(f"{handle.port}\n")
        await rpc_server.serve_until_signal(handle, args.grace)

    try:
        asyncio.run(run())
    except security.TokensRequired as exc:  # a usage error: the message says which flag
        print(f"trainer serve: {exc}", file=sys.stderr)
        return 2
    except ExecutorUnavailable as exc:  # the Ray nodes cannot use the shared storage
        print(f"trainer serve: refusing to serve: {exc}", file=sys.stderr)
        return 1
    except (StateDirInUse, OSError, ValueError) as exc:  # a port in use, unreadable TLS files
        print(f"trainer serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(config, server_security) -> int:
    """``serve --check``: what ``create_server`` validates before it binds or
    touches a job (tokens off loopback, readable TLS files), nothing started."""
    from rpc import security
    from rpc.addresses import host_port
    from trainer.server import TOKENS_ENV

    try:
        security.require_tokens_off_loopback(config.host, server_security, "the Trainer", TOKENS_ENV)
        server_security.credentials()
    except security.TokensRequired as exc:
        print(f"trainer serve: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"trainer serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"trainer serve --check: OK: {host_port(config.host, config.port)}, state {config.state_dir}, "
        f"tokens {'on' if server_security.tokens else 'off'}, TLS {'on' if server_security.tls.enabled else 'off'}"
    )
    return 0


# -- client commands ------------------------------------------------------------


def _start(stub, args) -> int:
    hp = {name: getattr(args, name) for name in _HYPERPARAMETERS if getattr(args, name) is not None}
    request = trainer_pb2.StartRequest(
        recipe=args.recipe,
        model=args.model,
        label=args.label[0] if len(args.label) == 1 else "",
        labels=args.label if len(args.label) > 1 else [],
        corpus=args.corpus,
        hyperparameters=trainer_pb2.Hyperparameters(**hp),
        idempotency_key=args.idempotency_key,
        priority=trainer_pb2.Priority.Value("PRIORITY_" + args.priority.upper()),
        deadline_seconds=args.deadline,
        max_retries=args.max_retries,
    )
    job = stub.Start(request, timeout=args.timeout).job
    _print_job(job, args)
    if args.wait:
        return _follow(stub, job.job_id, args)
    return 0


def _status(stub, args) -> int:
    reply = stub.Status(
        trainer_pb2.StatusRequest(job_id=args.job_id, log_lines=args.lines), timeout=args.timeout
    )
    if args.json:
        print(json_format.MessageToJson(reply, ensure_ascii=False))
        return 0
    _print_job(reply.job, args)
    if reply.log_tail:
        print("  log:")
        for line in reply.log_tail:
            print(f"    {line}")
    return 0


def _kill(stub, args) -> int:
    _print_job(stub.Kill(trainer_pb2.KillRequest(job_id=args.job_id), timeout=args.timeout).job, args)
    return 0


def _list(stub, args) -> int:
    states = [trainer_pb2.JobState.Value("JOB_STATE_" + s.upper()) for s in args.state]
    reply = stub.List(
        trainer_pb2.ListRequest(states=states, model=args.model, limit=args.limit, sweep_id=args.sweep),
        timeout=args.timeout,
    )
    if args.json:
        print(json_format.MessageToJson(reply, ensure_ascii=False))
        return 0
    for job in reply.jobs:
        print(
            f"{job.job_id:24s} {_state(job):9s} {job.model:10s} {job.label:6s} {_progress(job):24s} {job.reason[:80]}"
        )
    return 0


def _watch(stub, args) -> int:
    return _follow(stub, args.job_id, args)


def _follow(stub, job_id: str, args) -> int:
    """Print the job's changes and log lines until it ends; 0 if it succeeded."""
    last = None
    for event in stub.Watch(trainer_pb2.WatchRequest(job_id=job_id)):
        if args.json:
            print(json_format.MessageToJson(event, ensure_ascii=False, indent=None), flush=True)
        elif event.HasField("log_line"):
            print(f"  | {event.log_line}", flush=True)
        else:
            job = event.job
            # While queued, the gate's word says more than "queued".
            why = (
                job.gate.reason
                if job.state == trainer_pb2.JOB_STATE_QUEUED and job.gate.reason
                else job.reason
            )
            print(f"{job.job_id} {_state(job)} {_progress(job)} {why}".replace("  ", " "), flush=True)
        if event.HasField("job"):
            last = event.job
    return 0 if last is not None and last.state == trainer_pb2.JOB_STATE_SUCCEEDED else 1


def _state(job) -> str:
    return trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def _progress(job) -> str:
    p = job.progress
    if job.model_version:
        return f"v{job.model_version} f1 {p.f1:.3f}"
    if p.epoch:
        return f"epoch {p.epoch}/{p.epochs} loss {p.loss:.3f}"
    return ""


def _when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9).isoformat(sep=" ", timespec="seconds")


def _print_job(job, args) -> None:
    if args.json:
        print(json_format.MessageToJson(job, ensure_ascii=False))
        return
    p, g, r = job.progress, job.gate, job.resources
    print(f"job {job.job_id}  {_state(job)}  {job.recipe} {job.model} ({job.label})  corpus {job.corpus}")
    print(f"  reason:   {job.reason}")
    if g.reason:
        print(f"  gate:     {trainer_pb2.GateAction.Name(g.action).removeprefix('GATE_ACTION_')}: {g.reason}")
    print(
        f"  created:  {_when(job.create_time)}  started: {_when(job.start_time)}  ended: {_when(job.end_time)}"
        f"  attempts: {job.attempts}"
    )
    if job.pid:
        print(
            f"  process:  pid {job.pid}, cpu {r.cpu_percent:.0f}%, rss {r.rss_bytes / 2**20:.0f} MiB "
            f"(machine cpu {r.machine_cpu_percent:.0f}%, memory {r.machine_memory_percent:.0f}%)"
        )
    if job.placement.executor == "ray":
        w = job.placement
        print(f"  runs on:  Ray node {w.node} ({w.address}), submission {w.handle}")
    if job.HasField("exit_code"):
        print(f"  exit code: {job.exit_code}")
    if p.epoch:
        print(
            f"  progress: epoch {p.epoch}/{p.epochs} loss {p.loss:.4f} accuracy {p.accuracy:.4f} "
            f"val_loss {p.val_loss:.4f} val_accuracy {p.val_accuracy:.4f}"
        )
    if job.model_version:
        print(
            f"  result:   version {job.model_version}: precision {p.precision:.3f} recall {p.recall:.3f} f1 {p.f1:.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
