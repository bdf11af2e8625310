"""The Labeler's client retry policy (docs/clients.md, issue 27): gRPC's own
retries (gRFC A6) for RESOURCE_EXHAUSTED and UNAVAILABLE, spaced by the
server's ``grpc-retry-pushback-ms`` trailer, and ``retryThrottling`` so a
client whose calls keep failing stops retrying instead of multiplying an
overload. The Python CLI uses it; docs/clients.md shows the same JSON for Go,
Java and Python (a test holds the two equal).
"""

from __future__ import annotations

import json

SERVICE_CONFIG: dict = {
    "methodConfig": [
        {
            "name": [{"service": "labeler.v1.Labeler"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.2},
}


def service_config_json() -> str:
    return json.dumps(SERVICE_CONFIG)


def channel_options() -> list[tuple[str, object]]:
    """Channel options that turn the policy on (sync and aio channels alike)."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config_json())]
