"""Sweep messages of ``trainer.v1``: kept for imports; the conversions,
jobs' and sweeps' alike, are in trainer.converters."""

from __future__ import annotations

from trainer.converters import sweep_proto, sweep_spec, sweep_states

__all__ = ["sweep_proto", "sweep_spec", "sweep_states"]
