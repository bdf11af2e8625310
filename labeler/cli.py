"""The ``labeler`` command.

    labeler serve --config deploy/labeler.textproto [--host 127.0.0.1] [--port 50051] [--metrics-port 9101]
                  [--workers N]
    labeler classify 霸王别姬 是一部 非常 值得 看的 电影 [--target localhost:50051] [--labels 影视,美妆] [--threshold 0.5]
    labeler labels [--target localhost:50051]
    labeler shadow-report [--metrics-url http://localhost:9101/metrics] [--max-disagreement 0.02]

``serve`` reloads its config on SIGHUP (and when the file changes) and drains
on SIGINT/SIGTERM; with ``--workers N`` it forks N servers sharing the port
and relays those signals to each (labeler.workers). ``classify`` prints one line per label found and exits 3
when the call fails (2 on a usage error); labels that could not be scored are
listed on stderr. Clients send ``--token`` (default ``$TEXT_LABELER_TOKEN``) as a
bearer token and use TLS with ``--tls-ca`` (mutual TLS: ``--tls-cert``/``--tls-key``);
``serve`` takes ``--tls-cert``/``--tls-key``/``--tls-client-ca`` and requires
tokens with ``--auth-tokens-file`` or ``$LABELER_AUTH_TOKENS``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

EXIT_USAGE = 2
EXIT_RPC_ERROR = 3
TOKEN_ENV = "TEXT_LABELER_TOKEN"
SERVER_TOKENS_ENV = "LABELER_AUTH_TOKENS"


def _parser() -> argparse.ArgumentParser:
    from rpc import security

    parser = argparse.ArgumentParser(
        prog="labeler", description="Label segmented Chinese texts with TF Serving models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the Labeler gRPC server")
    serve.add_argument(
        "--config", default="deploy/labeler.textproto", help="LabelerConfig file (.textproto or .json)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (off by default)",
    )
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight requests get on shutdown")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="Labeler processes sharing the port, one event loop each (use up to the node's cores); "
        "worker i serves metrics on --metrics-port + i (default %(default)s)",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    security.add_server_security_flags(serve, SERVER_TOKENS_ENV)
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the flags, config, tokens and TLS files as a start would, bind nothing, exit 0 if good",
    )

    report = commands.add_parser(
        "shadow-report",
        help="compare each label's shadow candidate with its served version (from the Labeler's metrics)",
    )
    report.add_argument(
        "--metrics-url", default="http://localhost:9101/metrics", help="the Labeler's Prometheus endpoint"
    )
    report.add_argument(
        "--max-disagreement",
        type=float,
        default=None,
        help="exit 4 when a label's candidate disagrees on more than this share of documents (e.g. 0.02)",
    )

    for name, help_text in (("classify", "label one document"), ("labels", "list the configured labels")):
        client = commands.add_parser(name, help=help_text)
        client.add_argument("--target", default="localhost:50051", help="the Labeler's host:port")
        client.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        security.add_client_security_flags(client, TOKEN_ENV)
        if name == "classify":
            client.add_argument("words", nargs="+", help="the document's words, already segmented")
            client.add_argument(
                "--labels",
                action="append",
                default=[],
                help="only these labels (comma-separated, repeatable)",
            )
            client.add_argument(
                "--threshold", type=float, default=None, help="minimum probability, in [0, 1]"
            )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "shadow-report":
        return _shadow_report(args)
    return _client(args)


EXIT_DISAGREEMENT = 4


def _shadow_report(args: argparse.Namespace) -> int:
    from labeler.shadow_report import fetch_metrics, format_report, summarize

    try:
        summaries = summarize(fetch_metrics(args.metrics_url))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.metrics_url}: {exc}", file=sys.stderr)
        return EXIT_RPC_ERROR
    print(format_report(summaries))
    if args.max_disagreement is not None:
        over = [s.label for s in summaries if s.documents and s.disagreement > args.max_disagreement]
        if over:
            print(f"disagreement above {args.max_disagreement:g}: {', '.join(over)}", file=sys.stderr)
            return EXIT_DISAGREEMENT
    return 0


# -- serve ---------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from labeler.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"labeler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        return _check(args, settings)
    if args.workers > 1:
        return _serve_workers(args, settings)
    try:
        asyncio.run(_run_server(args, settings))
    except (ValueError, OSError) as exc:  # bad TLS files, a port in use (rpc.server.PortInUse)
        print(f"labeler serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace, settings) -> int:
    """``serve --check``: everything a start validates before it binds (the
    config above, the tokens, the TLS files), without binding or calling anyone."""
    from rpc import security
    from rpc.addresses import host_port

    try:
        server_security = security.server_security_from_args(args, SERVER_TOKENS_ENV)
        server_security.credentials()
    except ValueError as exc:
        print(f"labeler serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"labeler serve --check: OK: {len(settings.labels)} label(s) on {host_port(args.host, args.port)}, "
        f"tokens {'on' if server_security.tokens else 'off'}, TLS {'on' if server_security.tls.enabled else 'off'}"
    )
    return 0


def _serve_workers(args: argparse.Namespace, settings) -> int:
    """``--workers N``: N processes on one port (labeler.workers)."""
    from labeler.workers import PortTaken, run_workers

    def worker(index: int, port: int) -> int:
        metrics_port = args.metrics_port + index if args.metrics_port else args.metrics_port
        try:
            asyncio.run(_run_server(args, settings, port=port, metrics_port=metrics_port, worker=index))
        except (ValueError, OSError) as exc:
            print(f"labeler serve (worker {index}): {exc}", file=sys.stderr)
            return 1
        return 0

    try:
        return run_workers(args.workers, args.host, args.port, worker)
    except PortTaken as exc:
        print(f"labeler serve: {exc}", file=sys.stderr)
        return 1


async def _run_server(
    args: argparse.Namespace,
    settings,
    port: int | None = None,
    metrics_port: int | None = None,
    worker: int | None = None,
) -> None:
    from labeler.server import create_server
    from rpc import security
    from rpc import server as rpc_server
    from rpc.addresses import host_port

    handle = await create_server(
        settings,
        host=args.host,
        port=args.port if port is None else port,
        metrics_port=args.metrics_port if worker is None else metrics_port,
        config_path=args.config,
        security=security.server_security_from_args(args, SERVER_TOKENS_ENV),
        shared_port=worker is not None,
    )
    app = handle.app
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(app.reload_from_file())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    metrics = f", metrics on :{app.metrics_port}" if app.metrics_port else ""
    who = "Labeler" if worker is None else f"Labeler worker {worker} (pid {os.getpid()})"
    logging.getLogger("labeler").info(
        "%s serving on %s with %d label(s)%s",
        who,
        host_port(args.host, handle.port),
        len(settings.labels),
        metrics,
    )
    await rpc_server.serve_until_signal(handle, args.grace)


# -- clients -------------------------------------------------------------------


def _client(args: argparse.Namespace) -> int:
    import grpc

    from labeler import retry_policy
    from labeler.v1 import labeler_pb2, labeler_pb2_grpc
    from rpc import security

    try:
        # docs/clients.md's retry policy: backs off on the server's pushback.
        channel = security.open_channel(
            args.target,
            security.client_security_from_args(args, TOKEN_ENV),
            options=retry_policy.channel_options(),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with channel:
        stub = labeler_pb2_grpc.LabelerStub(channel)
        try:
            if args.command == "labels":
                reply = stub.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=args.timeout)
                for info in reply.labels:
                    state = labeler_pb2.LabelState.Name(info.state).removeprefix("LABEL_STATE_")
                    note = f"\t{info.message}" if info.message else ""
                    for mode in ("canary", "shadow"):
                        if info.HasField(mode):
                            c = getattr(info, mode)
                            note += f"\t{mode}=version {c.model_version or '-'} at {c.percent:g}%"
                    print(
                        f"{info.label}\t{info.model}\tversion={info.model_version}\t{state}\t"
                        f"threshold={info.threshold:g}\t{info.target}{note}"
                    )
                return 0
            request = labeler_pb2.ClassifyRequest(
                words=args.words, labels=[name for item in args.labels for name in item.split(",") if name]
            )
            if args.threshold is not None:
                request.threshold = args.threshold
            reply = stub.Classify(request, timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return EXIT_RPC_ERROR
    for score in reply.labels:
        print(f"{score.label}\t{score.probability:.4f}\t{score.model}\tversion={score.model_version}")
    for failure in reply.failures:
        print(
            f"failed: {failure.label} ({failure.model}): {failure.code_name}: {failure.message}",
            file=sys.stderr,
        )
    if not reply.labels:
        print("(no label at or above the threshold)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
