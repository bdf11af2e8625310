"""A throw-away PKI made at test time with the ``openssl`` command (argv lists,
no shell): a CA, a server certificate for 127.0.0.1/localhost, a client
certificate it signed, and a second, untrusted CA with its own client
certificate (an impostor)."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

from rpc.security import ClientSecurity, ServerSecurity, TlsFiles

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: pathlib.Path, name: str) -> None:
    _openssl(
        cwd,
        "req",
        "-x509",
        *_EC,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def _leaf(cwd: pathlib.Path, name: str, ca: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(cwd, "req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
    )


@dataclasses.dataclass(frozen=True)
class Pki:
    dir: pathlib.Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def server(self) -> TlsFiles:
        """The server identity, requiring clients signed by the CA (mutual TLS)."""
        return TlsFiles(cert=self.path("server.pem"), key=self.path("server.key"), ca=self.path("ca.pem"))

    @property
    def server_tls_only(self) -> TlsFiles:
        return TlsFiles(cert=self.path("server.pem"), key=self.path("server.key"))

    @property
    def client(self) -> TlsFiles:
        return TlsFiles(cert=self.path("client.pem"), key=self.path("client.key"), ca=self.path("ca.pem"))

    @property
    def impostor(self) -> TlsFiles:
        """A client certificate from another CA (trusting the right server CA)."""
        return TlsFiles(cert=self.path("impostor.pem"), key=self.path("impostor.key"), ca=self.path("ca.pem"))

    def client_security(self, token: str = "", tls: TlsFiles | None = None) -> ClientSecurity:
        return ClientSecurity(tls=tls or self.client, token=token)

    def server_security(self, tokens=(), mutual: bool = True, **limits) -> ServerSecurity:
        return ServerSecurity(
            tls=self.server if mutual else self.server_tls_only, tokens=frozenset(tokens), **limits
        )


def make_pki(directory: pathlib.Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(
        directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _leaf(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _leaf(directory, "impostor", "other-ca", "extendedKeyUsage=clientAuth\n")
    return Pki(directory)
