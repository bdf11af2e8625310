"""TLS, mutual TLS, bearer tokens and per-connection limits, shared by the
three servers, their command-line clients and the Labeler's client to TF
Serving.

Certificates and tokens come from files (or, for tokens, an environment
variable), never from requests. Servers call ``add_server_security_flags``
and ``server_security_from_args``; clients ``add_client_security_flags``,
``client_security_from_args`` and ``open_channel``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import logging
import os
import pathlib
from collections.abc import Iterable

import grpc

from rpc.addresses import is_loopback

log = logging.getLogger(__name__)

# Health checks must work for probes that carry no token (Kubernetes, Compose).
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)
# Messages up to 64 MiB instead of gRPC's 4 MiB receive limit: a batch of
# 1,024 documents of 119 int32 features is ~0.5 MB per model, but metadata
# answers and large batches can exceed the default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# HTTP/2 streams one client connection may have open at once (gRPC's own
# default is unlimited): one client cannot pin every handler of the server.
DEFAULT_MAX_CONCURRENT_STREAMS = 256


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files of a server (or client) identity and the CA it trusts."""

    cert: str = ""
    key: str = ""
    # Server side: when set, clients must present a certificate signed by this CA
    # (mutual TLS). Client side: the CA that signed the server's certificate.
    ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path!r}: {exc.strerror or exc}") from exc


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials | None:
    """Server TLS (mutual when ``tls.ca`` is set); None when TLS is off."""
    if not tls.enabled:
        return None
    if not (tls.cert and tls.key):
        raise ValueError("TLS needs both --tls-cert and --tls-key (--tls-client-ca alone is not enough)")
    pair = (_read(tls.key, "TLS key"), _read(tls.cert, "TLS certificate"))
    ca = _read(tls.ca, "client CA") if tls.ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(tls: TlsFiles, required: bool = False) -> grpc.ChannelCredentials | None:
    """Client TLS to a server (with a client certificate for mutual TLS);
    None when TLS is off (no file given and not ``required``). An empty
    ``ca`` trusts the system's roots."""
    if not (tls.enabled or required):
        return None
    if bool(tls.cert) != bool(tls.key):
        raise ValueError("a client certificate needs both its certificate and its key file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "server CA") if tls.ca else None,
        private_key=_read(tls.key, "client key") if tls.key else None,
        certificate_chain=_read(tls.cert, "client certificate") if tls.cert else None,
    )


def load_tokens(path: str = "", env_var: str = "") -> frozenset[str]:
    """Bearer tokens: one per line in ``path`` (``#`` starts a comment line)
    and/or comma-separated in ``$env_var``. A token file without a token is an
    error: it would silently turn authentication off."""
    tokens: set[str] = set()
    if path:
        lines = _read(path, "token file").decode("utf-8", errors="replace").splitlines()
        from_file = {line.strip() for line in lines if not line.strip().startswith("#")} - {""}
        if not from_file:
            raise ValueError(f"the token file {path!r} holds no token; put one token per line")
        tokens |= from_file
    if env_var and os.environ.get(env_var):
        tokens.update(t.strip() for t in os.environ[env_var].split(","))
    tokens.discard("")
    for token in tokens:
        if not token.isprintable() or " " in token:
            raise ValueError("bearer tokens must be printable and contain no spaces")
    return frozenset(tokens)


def _deny(message: str) -> grpc.RpcMethodHandler:
    async def abort(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Raw bytes in and out: it never parses the (unauthenticated) request. Works
    # for every method kind: the caller gets the status before any message.
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` with one of ``tokens``.

    Tokens are compared in constant time; health checks stay open.
    """

    def __init__(self, tokens: Iterable[str], exempt: Iterable[str] = UNAUTHENTICATED_PREFIXES) -> None:
        self._tokens = [t.encode() for t in tokens]
        if not self._tokens:
            raise ValueError("a bearer-token interceptor needs at least one token")
        self._exempt = tuple(exempt)

    def _allowed(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                value = value if isinstance(value, str) else value.decode(errors="replace")
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer":
                    presented = token.strip().encode()
                    # Compare with every token (no early exit) so timing says nothing.
                    matched = False
                    for known in self._tokens:
                        matched |= hmac.compare_digest(presented, known)
                    return matched
        return False

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self._exempt) or self._allowed(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        return _deny(
            "missing or invalid bearer token: send metadata 'authorization: Bearer <token>' "
            "with a token from the server's token file"
        )


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """What a server's flags say about TLS, tokens and per-connection limits."""

    tls: TlsFiles = TlsFiles()
    tokens: frozenset[str] = frozenset()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [BearerTokenInterceptor(self.tokens)] if self.tokens else []

    def credentials(self) -> grpc.ServerCredentials | None:
        return server_credentials(self.tls)

    def server_options(self) -> list[tuple[str, int]]:
        """Server channel arguments besides the message sizes (rpc.server
        adds those from ``max_message_bytes``)."""
        if not self.max_concurrent_streams:
            return []  # gRPC's own default: no limit
        return [("grpc.max_concurrent_streams", self.max_concurrent_streams)]


class TokensRequired(ValueError):
    """A server that must never be open was asked to bind off loopback
    without bearer tokens (a usage error: the message says what to pass)."""


def require_tokens_off_loopback(host: str, security: ServerSecurity, server: str, token_env: str) -> None:
    """Refuse to serve ``host`` when it is reachable from other machines and
    no bearer token is configured (for servers that must never be open).
    The one check: servers call it from their ``create_server``."""
    if is_loopback(host):
        return
    if not security.tokens:
        raise TokensRequired(
            f"refusing to bind {host or 'every interface'}: {server} accepts calls from other machines there, "
            f"so it requires bearer tokens. Pass --auth-tokens-file FILE (one token per line) or set "
            f"${token_env}, and preferably --tls-cert/--tls-key; or bind 127.0.0.1"
        )
    if not security.tls.enabled:
        log.warning(
            "%s binds %s with bearer tokens but without TLS: tokens travel in clear text", server, host
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def add_server_security_flags(
    parser: argparse.ArgumentParser,
    token_env: str | None,
    default_max_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
) -> None:
    """TLS, limit and (unless ``token_env`` is None) bearer-token flags."""
    group = parser.add_argument_group("security")
    group.add_argument("--tls-cert", default="", help="PEM certificate chain; enables TLS")
    group.add_argument("--tls-key", default="", help="PEM private key for --tls-cert")
    group.add_argument(
        "--tls-client-ca",
        default="",
        help="PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
    )
    if token_env is not None:
        group.add_argument(
            "--auth-tokens-file",
            default="",
            help=f"require bearer tokens, one per line (also ${token_env}, comma-separated)",
        )
    group.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest request or response message (default %(default)s)",
    )
    group.add_argument(
        "--max-concurrent-streams",
        type=_non_negative_int,
        default=default_max_streams,
        help="most concurrent calls on one client connection; 0: no limit (default %(default)s)",
    )


def server_security_from_args(args: argparse.Namespace, token_env: str | None) -> ServerSecurity:
    """Raises ValueError for an unreadable or empty token file."""
    tokens = (
        load_tokens(getattr(args, "auth_tokens_file", ""), token_env or "")
        if token_env is not None
        else frozenset()
    )
    return ServerSecurity(
        tls=TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_client_ca),
        tokens=tokens,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_streams=args.max_concurrent_streams,
    )


# -- clients -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a server: TLS files, the name to verify, a token."""

    tls: TlsFiles = TlsFiles()
    token: str = ""
    # Verify this name in the server's certificate instead of the target's host.
    server_name: str = ""

    def channel_options(self) -> list[tuple[str, str]]:
        return (
            [("grpc.ssl_target_name_override", self.server_name)]
            if self.server_name and self.tls.enabled
            else []
        )


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def open_channel(target: str, security: ClientSecurity = ClientSecurity(), options=()) -> grpc.Channel:
    """A sync channel to ``target``: TLS when configured, the token on every call.
    Raises ValueError when a TLS file cannot be read."""
    options = [*options, *security.channel_options()]
    credentials = channel_credentials(security.tls)
    channel = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(target, options=options)
    )
    return grpc.intercept_channel(channel, _TokenInterceptor(security.token)) if security.token else channel


def add_client_security_flags(parser: argparse.ArgumentParser, token_env: str) -> None:
    group = parser.add_argument_group("security")
    group.add_argument(
        "--tls-ca",
        "--ca",
        dest="tls_ca",
        default="",
        help="PEM CA that signed the server's certificate; enables TLS",
    )
    group.add_argument(
        "--tls-cert", default="", help="PEM client certificate (servers that require mutual TLS)"
    )
    group.add_argument("--tls-key", default="", help="PEM key of --tls-cert")
    group.add_argument("--tls-server-name", default="", help="name to verify in the server's certificate")
    group.add_argument("--token", default=None, help=f"bearer token to send (default: ${token_env})")


def client_security_from_args(args: argparse.Namespace, token_env: str) -> ClientSecurity:
    token = args.token if args.token is not None else os.environ.get(token_env, "")
    return ClientSecurity(
        tls=TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca),
        token=token.strip(),
        server_name=args.tls_server_name,
    )
