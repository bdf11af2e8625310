"""labeler-modelserver: Predict latency and throughput over gRPC, next to the
floor (the same model called in-process, no gRPC), all measured in one run.

    .venv/bin/python -m bench.modelserver [--quick] [--model-root DIR] [--update-docs]

One sample label model (``movie``), one document per Predict (int32 [1, maxlen]
in ``tensor_content``, as the Labeler sends it). Concurrency 1 and 16:
that many callers, each sending its next request when the last one answered.
The server runs as a real ``labeler-modelserver`` process, without and with
``--enable_batching`` (max_batch_size 32, batch_timeout_micros 0,
num_batch_threads 2: batches form only while both batch threads are busy).
The floor runs ``LoadedVersion.run`` from 1 or 16 threads of this process.
Every cell is measured in several rounds, interleaved, so that load from
elsewhere on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench import models, procs, report  # noqa: E402
from tfserving.protos import predict_pb2, prediction_service_pb2_grpc, tensor_pb2, types_pb2  # noqa: E402

MODEL = "movie"
FLOOR = "in-process floor"
CONCURRENCY = (1, 16)
BATCHING = "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 2 }\n"
BEGIN = "<!-- modelserver-results:begin (written by python -m bench.modelserver --update-docs) -->"
END = "<!-- modelserver-results:end -->"


class Result:
    """Latency percentiles over every round's requests; throughput the median round's."""

    def __init__(self, name: str, concurrency: int, rounds: list[tuple[list[float], float]]) -> None:
        self.name, self.concurrency = name, concurrency
        ordered = sorted(latency for latencies, _ in rounds for latency in latencies)
        self.p50, self.p90, self.p99 = (
            ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99)
        )
        self.throughput = statistics.median(len(latencies) / seconds for latencies, seconds in rounds)


def features(model_root: pathlib.Path, count: int) -> list[np.ndarray]:
    pipeline = models.pipelines(model_root, [MODEL])[MODEL]
    docs = models.documents(limit=count)
    matrix = pipeline.transform(docs).astype(np.int32)
    return [matrix[i : i + 1] for i in range(len(matrix))]


class Floor:
    """The model called in-process from threads: what serving cannot beat."""

    def __init__(self, model_root: pathlib.Path) -> None:
        from modelserver.loader import load_version

        version_dir = models.latest_version_dir(model_root, MODEL)
        self.version = load_version(MODEL, int(version_dir.name), version_dir)
        signature = self.version.signatures["serving_default"]
        self.feed, self.fetch = signature.inputs["input"], signature.outputs["probability"]

    def measure(self, inputs: list[np.ndarray], requests: int, concurrency: int) -> tuple[list[float], float]:
        for x in inputs[:20]:
            self.version.run([(self.feed, x)], [self.fetch])  # warm-up
        latencies: list[float] = []
        lock = threading.Lock()

        def caller(offset: int) -> None:
            mine = []
            for i in range(requests // concurrency):
                x = inputs[(offset + i) % len(inputs)]
                start = time.perf_counter()
                self.version.run([(self.feed, x)], [self.fetch])
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=caller, args=(k * 7,)) for k in range(concurrency)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return latencies, time.perf_counter() - start


def request_for(x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor: tensor_pb2.TensorProto = request.inputs["input"]
    tensor.dtype = types_pb2.DT_INT32
    for size in x.shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = x.tobytes()
    return request


async def over_grpc(target: str, inputs: list[np.ndarray], requests: int, concurrency: int):
    prepared = [request_for(x) for x in inputs]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for request in prepared[:20]:
            await stub.Predict(request, timeout=30)  # warm-up
        latencies: list[float] = []

        async def caller(offset: int) -> None:
            for i in range(requests // concurrency):
                request = prepared[(offset + i) % len(prepared)]
                start = time.perf_counter()
                await stub.Predict(request, timeout=30)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(caller(k * 7) for k in range(concurrency)))
        return latencies, time.perf_counter() - start


def start_server(model_root: pathlib.Path, work: pathlib.Path, batching: bool) -> procs.ServerProcess:
    config = models.write_model_server_config(model_root, [MODEL], work / "models.config")
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "modelserver.cli",
        f"--port={port}",
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=0",
    ]
    if batching:
        (work / "batching.txt").write_text(BATCHING)
        argv += ["--enable_batching", f"--batching_parameters_file={work / 'batching.txt'}"]
    return procs.ServerProcess(
        "modelserver-batching" if batching else "modelserver",
        argv,
        port,
        "tensorflow.serving.PredictionService",
        work / "logs",
    )


def measure_all(model_root: pathlib.Path, requests: int, rounds: int) -> list[Result]:
    """Every path and concurrency, round after round, interleaved: a burst of
    load from elsewhere on the machine hits all of them alike."""
    inputs = features(model_root, 256)
    samples: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory(prefix="bench-modelserver-") as tmp:
        work = pathlib.Path(tmp)
        servers = {"gRPC": start_server(model_root, work, False)}
        servers["gRPC, batching"] = start_server(model_root, work, True)
        try:
            floor = Floor(model_root)
            for _ in range(rounds):
                for c in CONCURRENCY:
                    samples.setdefault((FLOOR, c), []).append(floor.measure(inputs, requests, c))
                    for name, server in servers.items():
                        sample = asyncio.run(over_grpc(server.target, inputs, requests, c))
                        samples.setdefault((name, c), []).append(sample)
        finally:
            for server in servers.values():
                server.stop()
    return [
        Result(name, c, rounds_) for (name, c), rounds_ in sorted(samples.items(), key=lambda kv: kv[0][1])
    ]


def markdown(results: list[Result], command: str, requests: int, rounds: int) -> str:
    floors = {r.concurrency: r for r in results if r.name == FLOOR}
    lines = [
        f"Command: `{command}` ({rounds} rounds x {requests} Predicts per cell, one document each, "
        "interleaved; percentiles over all rounds, throughput of the median round).",
        f"Machine: {report.machine()}; client, server and floor share its cores.",
        "",
        "| path | concurrency | p50 | p90 | p99 | throughput | p50 / floor | throughput / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = floors[r.concurrency]
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.p50 * 1e3:.2f} ms | {r.p90 * 1e3:.2f} ms | {r.p99 * 1e3:.2f} ms "
            f"| {r.throughput:,.0f}/s | {r.p50 / base.p50:.1f}x | {r.throughput / base.throughput:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def update_docs(doc: pathlib.Path, block: str) -> None:
    report.fill_block(doc, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modelserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: few requests")
    parser.add_argument(
        "--model-root", type=pathlib.Path, help="trained sample models (default: train/cache them)"
    )
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    requests, rounds = (160, 1) if args.quick else (1600, 3)
    model_root = (args.model_root or models.trained_root()).resolve()
    results = measure_all(model_root, requests, rounds)
    command = ".venv/bin/python -m bench.modelserver" + (" --quick" if args.quick else "")
    block = markdown(results, command, requests, rounds)
    print(block)
    if args.update_docs:
        update_docs(models.REPO / "docs" / "benchmarks.md", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
