"""Network addresses as the servers bind and name them (no gRPC here, so a
tool such as the dev stack can use it too)."""

from __future__ import annotations

import ipaddress


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it: an IPv6 literal goes in brackets
    (``[::1]:50051``); a host already bracketed is kept as it is."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, "" or 0.0.0.0: reachable from elsewhere
