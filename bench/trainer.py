"""Trainer benchmark: how long Start takes, and how long admission takes once
the load is below normal (``python -m bench.trainer [--quick] [--json]``).

The old launcher blocked at least 6 s per job (sleep 3 s, then
``cpu_percent(3)``) before it even decided. Here Start only validates and
records; the scheduler admits in the background. Jobs are a trivial quick
recipe (this module run with recipe flags: print one progress line and a
result, write a fake version), so no training is measured. The machine's load
is fixed by the benchmark (70%: nothing admitted; 10%: below normal), so the
numbers show the Trainer's own costs, not the shared machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time

QUICK_RECIPE_MODULE = "bench.trainer"
OLD_BLOCKING_S = 6.0


def quick_job(argv: list[str]) -> int:
    """The benchmark's recipe: the fastText argv contract, no work."""
    p = argparse.ArgumentParser()
    for flag in ("--model", "--label", "--corpus", "--model-root", "--checkpoint-dir"):
        p.add_argument(flag)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args(argv)
    version = time.time_ns() // 1000
    version_dir = pathlib.Path(args.model_root) / args.model / str(version)
    version_dir.mkdir(parents=True)
    from modelspec.report import format_progress, format_result

    print(format_progress({"epoch": 1, "epochs": args.epochs, "loss": 0.1}), flush=True)
    print(format_result({"version": version, "precision": 1.0, "recall": 1.0, "f1": 1.0}), flush=True)
    return 0


class FixedLoad:
    """Machine load the benchmark sets (contiguous samples at one level)."""

    def __init__(self, cpu: float) -> None:
        self.cpu = cpu

    def samples(self):
        from trainer.gate import Sample

        now, step = time.monotonic(), 0.1
        return [Sample(now - (i + 1) * step, now - i * step, self.cpu, 10.0) for i in reversed(range(100))]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ServerThread:
    """The Trainer in-process, on an event loop in a thread; sync stubs call it."""

    def __init__(self, config, sampler) -> None:
        import grpc

        from trainer.server import create_server
        from trainer.v1 import trainer_pb2_grpc

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = self._run(create_server(config, sampler))
        port = self.server.port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = trainer_pb2_grpc.TrainerStub(self.channel)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def close(self) -> None:

        self.channel.close()
        self._run(self.server.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def config(root: pathlib.Path, **overrides):
    from trainer.config import TrainerConfig
    from trainer.recipes import Param, Recipe

    recipe = Recipe("quick", QUICK_RECIPE_MODULE, (Param("epochs", 1, 1, 200, "epochs"),))
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "corpus.jsonl").write_text("{}\n")
    return TrainerConfig(
        data_root=root / "data",
        model_root=root / "models",
        state_dir=root / "state",
        port=0,
        registry={"quick": recipe},
        default_recipe="quick",
        default_corpus="corpus.jsonl",
        stop_jobs_on_exit=True,
        **overrides,
    )


def summary_ms(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "max_ms": ms[-1],
    }


def bench_start(root: pathlib.Path, n: int) -> dict:
    """Start round trips over gRPC while the gate admits nothing (load 70%)."""
    from trainer.v1 import trainer_pb2

    server = ServerThread(config(root), FixedLoad(cpu=70))
    try:
        for i in range(20):  # warm the channel and the code paths
            server.stub.Start(trainer_pb2.StartRequest(model=f"warm{i}", label="x"), timeout=10)
        times = []
        for i in range(n):
            t = time.perf_counter()
            job = server.stub.Start(trainer_pb2.StartRequest(model=f"m{i}", label="影视"), timeout=10).job
            times.append(time.perf_counter() - t)
            assert job.state == trainer_pb2.JOB_STATE_QUEUED
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: server.stub.Start(
                        trainer_pb2.StartRequest(model=f"c{i}", label="x"), timeout=10
                    ),
                    range(n),
                )
            )
        concurrent_rps = n / (time.perf_counter() - t)
    finally:
        server.close()
    return {**summary_ms(times), "concurrent_8_starts_per_s": concurrent_rps}


def bench_admission(root: pathlib.Path, n: int) -> dict:
    """Load below normal (10%), default gate: Start -> RUNNING and -> SUCCEEDED,
    one job at a time, then a backlog of ``n`` jobs queued at once."""
    from trainer.v1 import trainer_pb2

    server = ServerThread(config(root), FixedLoad(cpu=10))
    running, done = [], []
    try:
        for i in range(n + 2):
            t = time.perf_counter()
            job = server.stub.Start(trainer_pb2.StartRequest(model=f"m{i}", label="影视"), timeout=10).job
            seen_running = None
            for event in server.stub.Watch(trainer_pb2.WatchRequest(job_id=job.job_id), timeout=60):
                if event.HasField("job"):
                    if event.job.state == trainer_pb2.JOB_STATE_RUNNING and seen_running is None:
                        seen_running = time.perf_counter() - t
                    last = event.job
            assert last.state == trainer_pb2.JOB_STATE_SUCCEEDED, last.reason
            if i >= 2:  # the first two warm up
                running.append(seen_running)
                done.append(time.perf_counter() - t)
        t = time.perf_counter()
        ids = [
            server.stub.Start(trainer_pb2.StartRequest(model=f"b{i}", label="x"), timeout=10).job.job_id
            for i in range(n)
        ]
        for job_id in ids:
            while server.stub.Status(trainer_pb2.StatusRequest(job_id=job_id), timeout=10).job.state in (
                trainer_pb2.JOB_STATE_QUEUED,
                trainer_pb2.JOB_STATE_RUNNING,
            ):
                time.sleep(0.01)
        backlog_s = time.perf_counter() - t
    finally:
        server.close()
    return {
        "start_to_running": summary_ms(running),
        "start_to_succeeded": summary_ms(done),
        "backlog_jobs": n,
        "backlog_s": backlog_s,
        "backlog_jobs_per_s": n / backlog_s,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--model" in argv:  # run as the quick recipe by a Trainer job
        return quick_job(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and jobs")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args(argv)
    starts, jobs = (50, 5) if args.quick else (500, 30)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        start = bench_start(pathlib.Path(tmp) / "start", starts)
        admission = bench_admission(pathlib.Path(tmp) / "admission", jobs)
    result = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "start": start,
        "admission": admission,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s, a = start, admission
    r, d = a["start_to_running"], a["start_to_succeeded"]
    print(f"machine: {result['machine']}")
    print("| measure | p50 | p90 | p99 | max | vs old launcher (>= 6 s blocked per job) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| Start RPC, job queued ({s['n']} calls) | {s['p50_ms']:.2f} ms | {s['p90_ms']:.2f} ms | "
        f"{s['p99_ms']:.2f} ms | {s['max_ms']:.2f} ms | {OLD_BLOCKING_S * 1000 / s['p50_ms']:,.0f}x shorter (p50) |"
    )
    print(
        f"| Start -> RUNNING, load below normal ({r['n']} jobs) | {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | "
        f"{r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {OLD_BLOCKING_S * 1000 / r['p50_ms']:,.0f}x shorter (p50) |"
    )
    print(
        f"| Start -> SUCCEEDED, quick job ({d['n']} jobs) | {d['p50_ms']:.1f} ms | {d['p90_ms']:.1f} ms | "
        f"{d['p99_ms']:.1f} ms | {d['max_ms']:.1f} ms | |"
    )
    print(f"\n8 concurrent clients: {s['concurrent_8_starts_per_s']:.0f} Starts/s.")
    print(
        f"Backlog of {a['backlog_jobs']} quick jobs queued at once: all done in {a['backlog_s']:.1f} s "
        f"({a['backlog_jobs_per_s']:.1f} jobs/s; the old launcher: >= {a['backlog_jobs'] * OLD_BLOCKING_S:.0f} s)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
