"""The Trainer's Ray executor against its local one, side by side in one run
(``python -m bench.trainer_ray [--jobs 20] [--repeats 5] [--quick] [--json]``):

1. Overhead per job: Start -> RUNNING (the attempt started, or on Ray
   accepted by the Jobs API), Start -> the recipe's first output line seen by
   the Trainer (it really runs), and Kill -> KILLED (the whole tree gone), on
   the local executor and on a 3-node Ray cluster, medians of ``--repeats``.
2. ``--jobs`` short jobs (one thread, 4 epochs of 0.25 s) queued at once on a
   1-node and on a 3-node Ray cluster (one CPU each): the wall time until all
   ended. The nodes share this machine's cores, so this measures the
   overhead and placement of the cluster executor, not a speed-up.
3. The Trainer's resident memory with the Ray client loaded (the executor
   made and polling) against the local executor, each in a fresh process.

Clusters are ``ray.cluster_utils.Cluster`` on 127.0.0.1 (tests.support.ray_cluster),
started and stopped by this script. The gate is open (thresholds above 100):
every node reports the same host load here, so the gate's verdicts would be
about the other work on the machine, not about the executor.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from tests.support.ray_cluster import LoopbackCluster
from tests.support.trainer_support import make_config, running_trainer, write_spec
from trainer.gate import GatePolicy
from trainer.v1 import trainer_pb2 as T

# Thresholds above 100% never fire; a window that spans the Ray poller's readings.
OPEN_GATE = GatePolicy(
    cpu_normal=101, cpu_danger=101, memory_normal=101, memory_danger=101, warmup_s=0.0, window_s=1.0
)
ENDED = (T.JOB_STATE_SUCCEEDED, T.JOB_STATE_FAILED, T.JOB_STATE_KILLED)


def wait(trainer, job_id: str, states, timeout: float = 120.0, poll: float = 0.01) -> T.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = trainer.status(job_id, 0).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{job_id} still {T.JobState.Name(job.state)}: {job.reason} / {job.gate.reason}"
            )
        time.sleep(poll)


def overhead(config, repeats: int) -> dict[str, float]:
    """Median seconds Start -> RUNNING and Kill -> KILLED."""
    corpus = write_spec(config.data_root, "long.json", epoch_s=5.0)
    starts, recipes, kills = [], [], []
    with running_trainer(config) as trainer:
        for _ in range(repeats):
            time.sleep(1.5)  # a fresh gate reading: the gate's own wait is not the executor's overhead
            t0 = time.monotonic()
            job = trainer.start(corpus=corpus, hyperparameters=T.Hyperparameters(epochs=100))
            wait(trainer, job.job_id, [T.JOB_STATE_RUNNING])
            starts.append(time.monotonic() - t0)
            trainer.wait_log(job.job_id, "pids ", timeout=60)  # the recipe itself runs and its output is seen
            recipes.append(time.monotonic() - t0)
            t0 = time.monotonic()
            trainer.stub.Kill(T.KillRequest(job_id=job.job_id), timeout=10)
            wait(trainer, job.job_id, [T.JOB_STATE_KILLED])
            kills.append(time.monotonic() - t0)
    return {
        "start_to_running_s": statistics.median(starts),
        "start_to_recipe_output_s": statistics.median(recipes),
        "kill_to_killed_s": statistics.median(kills),
    }


def batch(config, jobs: int) -> dict[str, float]:
    """Wall time for ``jobs`` short jobs queued at once."""
    corpus = write_spec(config.data_root, "short.json", epoch_s=0.25)
    with running_trainer(config) as trainer:
        t0 = time.monotonic()
        ids = [
            trainer.start(corpus=corpus, hyperparameters=T.Hyperparameters(epochs=4)).job_id
            for _ in range(jobs)
        ]
        done = [wait(trainer, i, ENDED, timeout=900, poll=0.1) for i in ids]
        wall = time.monotonic() - t0
    failed = [j.reason for j in done if j.state != T.JOB_STATE_SUCCEEDED]
    nodes = {j.placement.node for j in done}
    return {"wall_s": wall, "per_job_s": wall / jobs, "failed": len(failed), "nodes_used": len(nodes)}


RSS_PROBE = """
import asyncio, json, os, sys, time, psutil
from tests.support.trainer_support import make_config, running_trainer
import pathlib
root = pathlib.Path(sys.argv[1]); executor = sys.argv[2]; address = sys.argv[3]
extra = dict(executor="ray", ray_address=address) if executor == "ray" else {}
config = make_config(root, **extra)
with running_trainer(config) as trainer:
    time.sleep(3.0)
    print(json.dumps({"rss_bytes": psutil.Process().memory_info().rss, "ray_loaded": "ray" in sys.modules}))
"""


def rss(root: pathlib.Path, executor: str, address: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path.cwd())}
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(root), executor, address],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="4 jobs, 2 repeats")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.repeats = 4, 2
    result: dict = {"jobs": args.jobs, "repeats": args.repeats, "cpus": os.cpu_count()}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tl-ray-") as tmp:
        root = pathlib.Path(tmp)
        common = dict(gate=OPEN_GATE, sample_interval_s=0.25, tick_s=0.05, kill_grace_s=2.0)
        result["local"] = overhead(make_config(root / "local", **common), args.repeats)
        result["local_rss"] = rss(root / "rss-local", "local", "")
        for workers in (2, 0):
            cluster = LoopbackCluster(root / f"c{workers}", workers=workers)
            t0 = time.monotonic()
            cluster.start()
            result[f"cluster_{workers + 1}_start_s"] = time.monotonic() - t0
            try:
                ray = dict(common, executor="ray", ray_address=cluster.address)
                if workers == 2:
                    result["ray"] = overhead(make_config(root / "ray", **ray), args.repeats)
                    result["ray_rss"] = rss(root / "rss-ray", "ray", cluster.address)
                result[f"batch_{workers + 1}_nodes"] = batch(
                    make_config(root / f"b{workers}", **ray), args.jobs
                )
            finally:
                cluster.stop()
    result["load_average_after"] = os.getloadavg()
    result["bench_wall_s"] = time.monotonic() - t_start
    lo, ra = result["local"], result["ray"]
    result["ratios"] = {
        "start_ray_over_local": ra["start_to_running_s"] / lo["start_to_running_s"],
        "recipe_output_ray_over_local": ra["start_to_recipe_output_s"] / lo["start_to_recipe_output_s"],
        "kill_ray_over_local": ra["kill_to_killed_s"] / lo["kill_to_killed_s"],
        "batch_1_over_3_nodes": result["batch_1_nodes"]["wall_s"] / result["batch_3_nodes"]["wall_s"],
        "rss_ray_over_local": result["ray_rss"]["rss_bytes"] / result["local_rss"]["rss_bytes"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
