"""Tracing settings, free of gRPC and OpenTelemetry so that configuration
code (``labeler.config``) can build them; ``rpc.tracing`` turns them into a
tracer provider and interceptors."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# OTEL_TRACES_EXPORTER values this project understands ("none": no exporter).
SUPPORTED_EXPORTERS = ("otlp", "none")


@dataclasses.dataclass(frozen=True)
class TracingSettings:
    """Validated tracing settings; ``enabled=False`` means no tracing at all."""

    enabled: bool = False
    service_name: str = "text-labeler"
    otlp_endpoint: str | None = None  # None: OTEL_EXPORTER_OTLP_ENDPOINT or the exporter's default
    sample_ratio: float = 1.0


def settings_from_env(service_name: str, environ: Mapping[str, str] = os.environ) -> TracingSettings:
    """Tracing as the standard OpenTelemetry variables ask for it."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporters = {e.strip() for e in environ.get("OTEL_TRACES_EXPORTER", "").lower().split(",")} - {""}
    unknown = sorted(exporters - set(SUPPORTED_EXPORTERS))
    if unknown:
        log.warning(
            "OTEL_TRACES_EXPORTER=%s: %s not supported and ignored; supported: %s",
            environ.get("OTEL_TRACES_EXPORTER", ""),
            ", ".join(unknown) + (" is" if len(unknown) == 1 else " are"),
            ", ".join(SUPPORTED_EXPORTERS),
        )
    return TracingSettings(
        enabled=not disabled and "otlp" in exporters,
        service_name=environ.get("OTEL_SERVICE_NAME") or service_name,
    )
