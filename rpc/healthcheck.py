"""A gRPC health check for container health checks (the standard
``grpc.health.v1.Health/Check``), since grpc_health_probe is not in our images.

    python -m rpc.healthcheck localhost:50051
    python -m rpc.healthcheck localhost:50052 --service trainer.v1.Trainer

Exits 0 when the server answers SERVING, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpc import security


def check(
    target: str,
    service: str = "",
    timeout: float = 3.0,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> str | None:
    """None when ``service`` on ``target`` is SERVING, else why not. A
    certificate and key are for servers that require mutual TLS."""
    channel = security.open_channel(
        target, security.ClientSecurity(security.TlsFiles(cert_file, key_file, ca_file))
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as err:
            return f"{err.code().name}: {err.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpc.healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="host:port of the server, e.g. localhost:50051")
    parser.add_argument(
        "--service", default="", help='service name to check; "" (default) is the whole server'
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument(
        "--tls-ca", default="", help="PEM CA that signed the server's certificate (TLS servers)"
    )
    parser.add_argument(
        "--tls-cert", default="", help="PEM client certificate (servers that require mutual TLS)"
    )
    parser.add_argument("--tls-key", default="", help="PEM key of --tls-cert")
    args = parser.parse_args(argv)
    try:
        why = check(args.target, args.service, args.timeout, args.tls_ca, args.tls_cert, args.tls_key)
    except ValueError as exc:  # unreadable TLS files
        why = str(exc)
    if why is not None:
        print(f"{args.target} {args.service or '(server)'}: not serving: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
