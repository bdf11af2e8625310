"""Helpers for the observability tests: the Prometheus tools (Debian's
``prometheus`` package; skipped where missing, failing instead in CI where
TEXT_LABELER_REQUIRE_INTEROP=1), a Labeler whose /metrics can be scraped, and
the metric names a scrape exports."""

from __future__ import annotations

import os
import shutil
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.interop_support import REQUIRE_ENV

# What each exported family's samples are called, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def require_prometheus_tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; skip (CI: fail) if missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (Debian package prometheus; .ci/run installs it)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    return path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode("utf-8")


def exported_names(text: str) -> set[str]:
    """Every sample name the exposition ``text`` declares, with or without samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names
