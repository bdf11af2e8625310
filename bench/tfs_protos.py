"""Import cost of TF Serving's protobuf modules: ``tfserving.protos`` (the
modules scripts/gen_tfs_protos.py generates) beside the way it was done before
(a placeholder ``tensorflow`` package in sys.modules while importing
``tensorflow_serving.apis`` and ``tensorflow.core.framework`` directly), each
in fresh interpreters, interleaved round by round so the machine's noise hits
both alike.

    .venv/bin/python -m bench.tfs_protos [--rounds 9] [--json]

Each child imports grpc, numpy and protobuf first (the Labeler loads them
anyway), then times the import of the same 13 modules and reads its own RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

MODULES = [
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
    "model_pb2",
    "predict_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "model_management_pb2",
    "prediction_service_pb2_grpc",
    "model_service_pb2_grpc",
    "model_server_config_pb2",
    "status_pb2",
    "prediction_log_pb2",
]
_UPSTREAM = {
    "tensor_pb2": "tensorflow.core.framework",
    "tensor_shape_pb2": "tensorflow.core.framework",
    "types_pb2": "tensorflow.core.framework",
    "model_server_config_pb2": "tensorflow_serving.config",
}

_PRELUDE = """
import sys, time
import grpc, numpy, google.protobuf.message
started = time.perf_counter()
"""
_REPORT = """
elapsed = time.perf_counter() - started
rss = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024
tf = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')
print(elapsed, rss, len(tf))
"""
# The earlier tfserving/protos.py: a bare package object named tensorflow
# while importing the upstream generated modules.
_PLACEHOLDER = """
import importlib, importlib.machinery, importlib.util, types
spec = importlib.util.find_spec("tensorflow")
placeholder = types.ModuleType("tensorflow")
placeholder.__path__ = list(spec.submodule_search_locations)
placeholder.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None, is_package=True)
placeholder.__spec__.submodule_search_locations = placeholder.__path__
sys.modules["tensorflow"] = placeholder
try:
    for name in NAMES:
        importlib.import_module(name)
finally:
    del sys.modules["tensorflow"]
"""

WAYS = {
    "baseline (grpc, numpy, protobuf only)": "",
    "generated (tfserving.protos)": "import tfserving.protos\n",
    "placeholder tensorflow package (before)": "NAMES = %r\n"
    % [f"{_UPSTREAM.get(m, 'tensorflow_serving.apis')}.{m}" for m in MODULES]
    + _PLACEHOLDER,
}


def measure(body: str) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + body + _REPORT], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float, int]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way, body in WAYS.items():
            results[way].append(measure(body))
    base_rss = statistics.median(r[1] for r in results[next(iter(WAYS))])
    rows = []
    for way, runs in results.items():
        rows.append(
            {
                "way": way,
                "import_ms_p50": statistics.median(r[0] for r in runs) * 1000,
                "import_ms_min": min(r[0] for r in runs) * 1000,
                "rss_mib_p50": statistics.median(r[1] for r in runs),
                "rss_over_baseline_mib": statistics.median(r[1] for r in runs) - base_rss,
                "tensorflow_modules": runs[0][2],
            }
        )
    if args.json:
        print(
            json.dumps({"python": platform.python_version(), "rounds": args.rounds, "rows": rows}, indent=1)
        )
        return 0
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}"
    )
    print("| way | import p50 (ms) | min (ms) | RSS p50 (MiB) | over baseline (MiB) | tensorflow.* modules |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['way']} | {r['import_ms_p50']:.0f} | {r['import_ms_min']:.0f} | {r['rss_mib_p50']:.1f} "
            f"| {r['rss_over_baseline_mib']:.1f} | {r['tensorflow_modules']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
