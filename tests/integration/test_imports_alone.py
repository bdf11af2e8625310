"""Every module of every package imports on its own, in a fresh
interpreter (issue 25: `python -c "import trainer.sweep_protos"` failed, a
circle that only showed when that module was imported first)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)
PACKAGES = ["labeler", "trainer", "modelserver", "rpc", "modelspec", "tfserving", "devstack"]


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    root = pathlib.Path(__file__).resolve().parents[2]
    modules = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    # One interpreter per module, a few at a time (each import alone, nothing shared).
    failures, running = [], []
    for module in modules:
        running.append(
            (module, subprocess.Popen([sys.executable, "-c", f"import {module}"], stderr=subprocess.PIPE))
        )
        if len(running) >= 4 or module == modules[-1]:
            for name, proc in running:
                _, err = proc.communicate(timeout=120)
                if proc.returncode != 0:
                    failures.append(f"{name}: {err.decode().strip().splitlines()[-1:]}")
            running = []
    assert failures == []
