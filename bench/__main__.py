"""``python -m bench [--quick]`` (``make bench``): the fan-out benchmark, then
every other runnable module of bench/ (features, model server, trainer,
Labeler memory, ...), each as ``python -m bench.<name> [--quick]`` in its own
process, one after another. Modules that take ``--model-root`` get the bench's
trained sample models so they need not train their own; a full run passes
``--update-docs`` to those that take it."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

from bench import fanout, models

# Helpers, not benchmarks.
NOT_RUNNABLE = {
    "__init__",
    "__main__",
    "fanout",
    "flood_load",
    "designs",
    "load",
    "models",
    "old_design",
    "procs",
    "profile",
    "report",
}


def runnable_modules() -> list[str]:
    here = pathlib.Path(__file__).parent
    found = []
    for path in sorted(here.glob("*.py")):
        if path.stem not in NOT_RUNNABLE and 'if __name__ == "__main__"' in path.read_text():
            found.append(path.stem)
    return found


def _takes(source: str, flag: str) -> bool:
    """Whether a module's argument parser declares ``flag``."""
    return re.search(r"add_argument\(\s*['\"]" + re.escape(flag) + "['\"]", source) is not None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv not in ([], ["--quick"]):
        print("usage: python -m bench [--quick]", file=sys.stderr)
        return 2
    quick = argv == ["--quick"]
    started = time.perf_counter()
    status = fanout.main(argv)
    root = str(models.trained_root())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    failed = []
    for name in runnable_modules():
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
        source = (pathlib.Path(__file__).parent / f"{name}.py").read_text()
        if _takes(source, "--model-root"):
            cmd += ["--model-root", root]
        if _takes(source, "--update-docs") and not quick:
            cmd += ["--update-docs"]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=models.REPO, env=env).returncode != 0:
            failed.append(name)
    print(
        f"\nall benchmarks finished in {time.perf_counter() - started:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed or status else 0


if __name__ == "__main__":
    sys.exit(main())
