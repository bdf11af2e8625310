"""A small real recipe for Trainer tests: the fastText recipe's argv contract
and output lines, without TensorFlow.

``python -m tests.support.trainer_fake_recipe --model M --label L --corpus SPEC.json
--model-root DIR --epochs N --threads N [--checkpoint-dir DIR] [--seed N]``

The "corpus" is a JSON object that scripts the run (every key optional):
``epoch_s`` (seconds per epoch, default 0.05), ``grandchildren`` (spawn a
sleeping child in the job's session and one that leaves it with setsid),
``ignore_sigterm`` (this process and its children ignore SIGTERM),
``burn_memory_mb`` + ``burn_when`` (a file path: once it exists, hold that
much memory for ``burn_s`` seconds, at most 30), ``exit_code`` (fail with it
after the epochs), ``no_result`` (exit 0 without a result line),
``result_labels`` (the result carries ``label_metrics`` for that many labels,
as a bundle's does: a long line),
``daemon`` (start a daemon with ``setsid -f``: a new session, reparented away
from the job; it ignores SIGTERM with ``ignore_sigterm``), ``burn_cpu_s``
(spin one core that long before the epochs), ``reject`` (validation rejects
the version: a ``validation`` line, exit 3), ``f1_peak_epochs`` (the held-out
f1 the result reports is highest, 0.9, at that many epochs:
0.9 - 0.1 * |epochs - peak|, so a sweep has a best trial), ``fail_times``
(with --checkpoint-dir: the first that many attempts exit 2 after their
epochs; later ones succeed), ``bad_above_threads`` (a trial whose --threads
is above it is bad on purpose: held-out f1 0.05 after every epoch and in its
result). With ``--no-push`` (a sweep trial) the result line reports the
metrics and no version, and each progress line carries the held-out metrics
after that epoch (``held_out``): f1 rises to the result's by the last epoch.

It prints ``pids {json}`` with the pids it made, ``progress {json}`` per epoch
and ``result {json}`` after writing a fake version directory. With
``--checkpoint-dir`` it resumes after the last epoch it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from modelspec.report import format_progress, format_result, format_validation

SLEEPER = "import signal, sys, time\nif sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"
# A daemon writes its own pid (its parent, setsid, is gone by then).
DAEMON = (
    "import os, pathlib, signal, sys, time\n"
    "if sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))\n"
    "time.sleep(600)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--model", "--label", "--corpus", "--model-root"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-push", action="store_true")
    args = parser.parse_args(argv)
    spec = json.loads(pathlib.Path(args.corpus).read_text())
    if spec.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = {"root": os.getpid()}
    if spec.get("grandchildren"):
        ignore = "1" if spec.get("ignore_sigterm") else "0"
        pids["grandchild"] = subprocess.Popen([sys.executable, "-c", SLEEPER, ignore]).pid
        pids["escapee"] = subprocess.Popen(
            [sys.executable, "-c", SLEEPER, ignore], start_new_session=True
        ).pid
    if spec.get("daemon"):
        ignore = "1" if spec.get("ignore_sigterm") else "0"
        pid_file = pathlib.Path(f"daemon-{os.getpid()}.pid").resolve()
        subprocess.run(["setsid", "-f", sys.executable, "-c", DAEMON, ignore, str(pid_file)], check=True)
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.02)
        pids["daemon"] = int(pid_file.read_text())
    print("pids " + json.dumps(pids), flush=True)
    if spec.get("burn_cpu_s"):
        end = time.monotonic() + float(spec["burn_cpu_s"])
        while time.monotonic() < end:
            pass
    print(f"threads budget: {args.threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)

    checkpoint = pathlib.Path(args.checkpoint_dir) / "epoch" if args.checkpoint_dir else None
    first = 1
    if checkpoint is not None and checkpoint.exists():
        first = int(checkpoint.read_text()) + 1
        print(f"resumed after epoch {first - 1}", flush=True)
    for epoch in range(first, args.epochs + 1):
        _maybe_burn(spec)
        time.sleep(float(spec.get("epoch_s", 0.05)))
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            # Whole or not at all (a SIGTERM mid-write left an empty file: the resumed attempt failed).
            partial = checkpoint.with_suffix(".partial")
            partial.write_text(str(epoch))
            os.replace(partial, checkpoint)
        loss = 1.0 / epoch
        report = {
            "epoch": epoch,
            "epochs": args.epochs,
            "loss": loss,
            "accuracy": 1 - loss / 2,
            "val_loss": loss * 1.1,
            "val_accuracy": 1 - loss / 1.8,
        }
        if args.no_push:
            report["held_out"] = {"precision": 0.9, "recall": 0.8, "f1": _epoch_f1(spec, args, epoch)}
        print(format_progress(report), flush=True)
    if spec.get("fail_times") and checkpoint is not None:
        failures = checkpoint.parent / "failures"
        failed = int(failures.read_text()) if failures.exists() else 0
        if failed < int(spec["fail_times"]):
            failures.write_text(str(failed + 1))
            print(
                f"fake: failure {failed + 1} of {spec['fail_times']} on purpose", file=sys.stderr, flush=True
            )
            return 2
    if spec.get("exit_code"):
        print(f"fake: failing on purpose with code {spec['exit_code']}", file=sys.stderr, flush=True)
        return int(spec["exit_code"])
    if spec.get("no_result"):
        return 0
    if spec.get("reject"):
        return _reject(args)
    f1 = _final_f1(spec, args)
    if args.no_push:
        print(format_result({"version": 0, "precision": 0.9, "recall": 0.8, "f1": f1}), flush=True)
        return 0
    version = time.time_ns() // 1000
    version_dir = pathlib.Path(args.model_root) / args.model / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "fake_model.json").write_text(json.dumps({"label": args.label}, ensure_ascii=False))
    result = {
        "version": version,
        "version_dir": str(version_dir),
        "precision": 0.9,
        "recall": 0.8,
        "f1": f1,
    }
    if spec.get("result_labels"):
        scores = {"precision": 0.9, "recall": 0.8, "f1": f1}
        result["label_metrics"] = {f"label-{i:04d}": scores for i in range(int(spec["result_labels"]))}
    print(format_result(result), flush=True)
    return 0


def _bad(spec: dict, args: argparse.Namespace) -> bool:
    return "bad_above_threads" in spec and args.threads > int(spec["bad_above_threads"])


def _final_f1(spec: dict, args: argparse.Namespace) -> float:
    if _bad(spec, args):
        return 0.05
    if "f1_peak_epochs" in spec:
        return round(0.9 - 0.1 * abs(args.epochs - int(spec["f1_peak_epochs"])), 6)
    return 0.847


def _epoch_f1(spec: dict, args: argparse.Namespace, epoch: int) -> float:
    if _bad(spec, args):
        return 0.05
    return round(_final_f1(spec, args) - 0.02 * (args.epochs - epoch), 6)


def _reject(args: argparse.Namespace) -> int:
    """What the fastText recipe does when validation rejects its version."""
    version = time.time_ns() // 1000
    kept = pathlib.Path(args.model_root) / args.model / "rejected" / str(version)
    kept.mkdir(parents=True)
    metrics = {"candidate": (0.3, 0.4, 0.343), "served": (0.9, 0.8, 0.847)}
    reason = (
        f"not pushed: f1 0.343 vs 0.847 of served version 1 on the same 50 held-out documents: 0.504 lower, "
        f"more than the tolerance 0.020; kept for inspection in {args.model}/rejected/{version}"
    )
    decision = {
        "outcome": "REJECTED",
        "reason": reason,
        "candidate_version": version,
        "served_version": 1,
        "failures": [reason.split(": ", 1)[1].split("; kept")[0]],
        "rejected_path": f"{args.model}/rejected/{version}",
        **{
            name: {"precision": p, "recall": r, "f1": f, "documents": 50}
            for name, (p, r, f) in metrics.items()
        },
    }
    print(format_validation(decision), flush=True)
    print(f"fake: {reason}", file=sys.stderr, flush=True)
    return 3


def _maybe_burn(spec: dict) -> None:
    megabytes, when = int(spec.get("burn_memory_mb", 0)), spec.get("burn_when")
    if not megabytes or not when:
        return
    while not os.path.exists(when):
        time.sleep(0.05)
    held = b"\x01" * (min(megabytes, 2048) * 1024 * 1024)  # written, so really resident
    print(f"burning {len(held) >> 20} MiB", flush=True)
    time.sleep(min(float(spec.get("burn_s", 20)), 30.0))
    del held
    spec["burn_memory_mb"] = 0


if __name__ == "__main__":
    sys.exit(main())
