"""The Trainer while another process holds its job store's write lock:
how long Status takes, and whether Start's job is kept
(``python -m bench.trainer_store_lock [--rounds 3] [--lock-s 3] [--json]``).

Each round: a Trainer in-process (fake jobs from tests.support, an open
gate) with one job running (it reports progress, so the Trainer writes);
then another process takes the store's write lock (``BEGIN IMMEDIATE``) for
``--lock-s`` seconds, a Start comes in, and Status is called every 50 ms
(deadline 10 s) until the lock is released. Reported: Status latency
(median, max) while locked and, for comparison, over the same span
unlocked; how long Start took; whether its job is in the store afterwards.

Uses only what the Trainer offered before issue 25 too, so the same file
measures an older checkout (``PYTHONPATH=<old tree> python <this file>``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LOCK_HOLDER = """
import pathlib, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
pathlib.Path(sys.argv[2]).write_text("locked")
time.sleep(float(sys.argv[3]))
db.execute("ROLLBACK")
"""


def _status_latencies(stub, job_id: str, until: threading.Event, out: list[float]) -> None:
    from trainer.v1 import trainer_pb2

    while not until.is_set():
        t0 = time.perf_counter()
        stub.Status(trainer_pb2.StatusRequest(job_id=job_id), timeout=10)
        out.append(time.perf_counter() - t0)
        time.sleep(0.05)


def one_round(lock_s: float) -> dict:
    from tests.support.trainer_support import make_config, running_trainer, write_spec
    from trainer.v1 import trainer_pb2 as S

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        config = make_config(root)
        steady = write_spec(config.data_root, "steady.json", epoch_s=0.1)
        with running_trainer(config) as trainer:
            running = trainer.start("movie", corpus=steady, hyperparameters=S.Hyperparameters(epochs=200))
            trainer.wait(running.job_id, [S.JOB_STATE_RUNNING])
            unlocked: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(
                target=_status_latencies, args=(trainer.stub, running.job_id, stop, unlocked)
            )
            poller.start()
            time.sleep(lock_s)
            stop.set()
            poller.join()
            ready = root / "locked"
            holder = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(config.database), str(ready), str(lock_s)]
            )
            while not ready.exists():
                time.sleep(0.01)
            locked: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(
                target=_status_latencies, args=(trainer.stub, running.job_id, stop, locked)
            )
            poller.start()
            time.sleep(0.1)
            t0 = time.perf_counter()
            started = trainer.stub.Start(S.StartRequest(model="star", label="明星"), timeout=30).job
            start_s = time.perf_counter() - t0
            holder.wait()
            stop.set()
            poller.join()
            trainer.stub.Kill(S.KillRequest(job_id=running.job_id), timeout=30)
            done = trainer.wait(started.job_id, timeout=120)
        kept = (
            sqlite3.connect(config.database)
            .execute("SELECT state FROM jobs WHERE job_id = ?", (started.job_id,))
            .fetchone()
        )
    return {
        "status_locked_median_ms": 1000 * statistics.median(locked),
        "status_locked_max_ms": 1000 * max(locked),
        "status_unlocked_median_ms": 1000 * statistics.median(unlocked),
        "status_unlocked_max_ms": 1000 * max(unlocked),
        "start_s": start_s,
        "start_job_kept": bool(kept) and done.state == S.JOB_STATE_SUCCEEDED,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lock-s", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rounds = [one_round(args.lock_s) for _ in range(args.rounds)]
    if args.json:
        print(json.dumps(rounds, indent=1))
        return 0
    print(f"store write lock held {args.lock_s:g}s by another process; {args.rounds} round(s)")
    for i, r in enumerate(rounds, 1):
        print(
            f"round {i}: Status locked median {r['status_locked_median_ms']:.1f} ms, max "
            f"{r['status_locked_max_ms']:.0f} ms | unlocked median {r['status_unlocked_median_ms']:.1f} ms, "
            f"max {r['status_unlocked_max_ms']:.0f} ms | Start {r['start_s']:.2f}s, job kept: {r['start_job_kept']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
