"""``python -m bench.observability [--quick] [--model-root DIR] [--update-docs]``:
what tracing and a 100 % shadow cost a Classify, as ratios measured side by
side in one run.

One model server (a subprocess) serves the four sample models, each with two
versions (the second a copy of the first: the shadow's cost does not depend
on its weights). Five in-process Labelers call it, identical but for:

- ``untraced``: the Predict path without the tracing hook (the code as it was
  before tracing existed): the baseline;
- ``tracing off`` and ``tracing off (again)``: the shipped code with tracing
  off, twice, so the spread of the two shows the noise floor;
- ``tracing on``: every call traced (sample ratio 1), spans batched to an
  exporter that drops them (the SDK's full cost, no network);
- ``shadow 100%``: tracing off, every label shadowed by its second version on
  every request.

Rounds run the variants one after another in a rotating order; each cell is
the median over rounds of throughput and latency percentiles at a fixed
concurrency. The load generator, the Labelers and the model server share the
machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import grpc

from bench import load, models, procs, report
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from trainer.corpus import SAMPLE_MODELS

BEGIN = "<!-- observability-results:begin (written by python -m bench.observability) -->"
END = "<!-- observability-results:end -->"
UNTRACED = "untraced (baseline)"
OFF = "tracing off"
OFF_AGAIN = "tracing off (again)"
ON = "tracing on"
SHADOW = "shadow 100%"
VARIANTS = [UNTRACED, OFF, OFF_AGAIN, ON, SHADOW]


def _two_version_root(source: pathlib.Path, dest: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Copy the sample models; give each a second version (a copy of its latest)."""
    versions = {}
    for model in SAMPLE_MODELS:
        latest = models.latest_version_dir(source, model)
        shutil.copytree(latest, dest / model / latest.name)
        second = str(int(latest.name) + 1)
        shutil.copytree(latest, dest / model / second)
        versions[model] = (int(latest.name), int(second))
    return versions


def _model_server_config(root: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    entries = "".join(
        f'  config {{\n    name: "{m}"\n    base_path: "{root / m}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { all {} }\n  }\n"
        for m in SAMPLE_MODELS
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def _labeler_config(root: pathlib.Path, target: str, versions: dict[str, tuple[int, int]], shadow: bool):
    from labeler.v1 import config_pb2

    config = config_pb2.LabelerConfig(
        default_target=target, model_root=str(root), version_poll_interval_ms=1000
    )
    for model, label in SAMPLE_MODELS.items():
        served, candidate = versions[model]
        config.labels.add(label=label, model=model, version=served, timeout_ms=10000)
        if shadow:
            config.shadows.add(label=label, version=candidate, sample_percent=100, max_in_flight=64)
    return config


def _dropping_tracing():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from rpc.tracing import Tracing

    class Dropping(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return Tracing(provider)


async def _start_labelers(root, target, versions):
    from labeler.predictor import DirectPredictor
    from labeler.server import create_server

    class Untraced(DirectPredictor):
        """The Predict path without the tracing check (the pre-tracing code)."""

        predict = DirectPredictor._predict

    servers = {}
    for variant in VARIANTS:
        config = _labeler_config(root, target, versions, shadow=variant == SHADOW)
        tracing = _dropping_tracing() if variant == ON else None
        server = await create_server(config, tracing=tracing)
        port = server.port
        app = server.app
        if variant == UNTRACED:
            app.service.use_predictor(Untraced(app.clients, app.metrics))
        if not await app.wait_ready(120) or not await app.rollouts.wait_ready(120):
            raise RuntimeError(f"{variant}: the Labeler never loaded every model")
        servers[variant] = (server, port)
    return servers


def span_cost_us(iterations: int) -> dict[str, float]:
    """CPU microseconds of one traced Predict's span work (a CLIENT span with
    its attributes and injected context, as DirectPredictor records it) and of
    the check an untraced Predict does instead; process time, so other
    processes on the machine do not count."""
    tracing = _dropping_tracing()
    attributes = {"labeler.label": "影视", "labeler.model": "movie", "labeler.model_version": 1,
                  "labeler.target": "127.0.0.1:8500", "labeler.documents": 1}  # fmt: skip
    start = time.process_time()
    for _ in range(iterations):
        with tracing.client_span("tensorflow.serving.PredictionService/Predict", attributes) as span:
            span.set_outcome("OK")
    on = (time.process_time() - start) / iterations * 1e6
    tracing.provider.shutdown()
    off_tracing = None
    start = time.process_time()
    for _ in range(iterations):
        if off_tracing is not None:
            raise AssertionError
    off = (time.process_time() - start) / iterations * 1e6
    return {"span_on_us": on, "check_off_us": off}


async def _round(port: int, docs, concurrency: int, requests: int) -> load.CellResult:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        labeler = labeler_pb2_grpc.LabelerStub(channel)

        async def call(i: int) -> None:
            await labeler.Classify(labeler_pb2.ClassifyRequest(words=docs[i % len(docs)]), timeout=30)

        latencies, errors, seconds = await load.run_async(
            call, concurrency, requests, 120, warmup=concurrency
        )
    return load.summarize("", 4, concurrency, latencies, errors, seconds)


async def _run(args, root, target, versions) -> dict:
    docs = models.documents(limit=512)
    servers = await _start_labelers(root, target, versions)
    cells: dict[str, list[load.CellResult]] = {v: [] for v in VARIANTS}
    try:
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for variant in order:
                result = await _round(servers[variant][1], docs, args.concurrency, args.requests)
                cells[variant].append(result)
                if variant == SHADOW:  # its background work must not spill into the next cell
                    await servers[SHADOW][0].labeler.rollouts.drain_shadows()
                print(f"round {r + 1} {variant:22s} {result.rps:7.1f} req/s p50 {result.p50_ms:6.2f} ms "
                      f"p99 {result.p99_ms:6.2f} ms errors {result.errors}", flush=True)  # fmt: skip
        shadow_app = servers[SHADOW][0].labeler
        shadowed = sum(
            shadow_app.metrics.registry.get_sample_value(
                "labeler_shadow_requests_total", {"label": label, "outcome": "OK"}
            )
            or 0
            for label in SAMPLE_MODELS.values()
        )
        shed = sum(
            shadow_app.metrics.registry.get_sample_value(
                "labeler_shadow_requests_total", {"label": label, "outcome": "SHED"}
            )
            or 0
            for label in SAMPLE_MODELS.values()
        )
    finally:
        for server, _ in servers.values():
            await server.stop(None)
            await server.app.close()
    summary = {}
    for variant, results in cells.items():
        summary[variant] = {
            "rps": statistics.median(r.rps for r in results),
            "p50_ms": statistics.median(r.p50_ms for r in results),
            "p99_ms": statistics.median(r.p99_ms for r in results),
            "errors": sum(r.errors for r in results),
            "rounds_rps": [r.rps for r in results],
        }
    return {"summary": summary, "shadowed": shadowed, "shadow_shed": shed}


def markdown(data: dict, command: str) -> str:
    s = data["summary"]
    base = s[UNTRACED]
    lines = [
        f"Command: `{command}`; {data['rounds']} rounds of {data['requests']} Classify calls (4 labels) "
        f"per variant at concurrency {data['concurrency']}, in rotating order; medians over rounds. "
        f"{report.machine()}. **Measured while other engineers' test runs shared the machine**: "
        "read the ratios, and the two identical `tracing off` rows as the noise floor.",
        "",
        "| variant | req/s | p50 ms | p99 ms | req/s vs baseline | p50 vs baseline | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant in VARIANTS:
        v = s[variant]
        lines.append(
            f"| {variant} | {v['rps']:.1f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
            f"{v['rps'] / base['rps']:.3f} | {v['p50_ms'] / base['p50_ms']:.3f} | {v['errors']} |"
        )
    lines += [
        "",
        f"Shadow: {int(data['shadowed'])} shadow Predicts completed, {int(data['shadow_shed'])} shed "
        "(max_in_flight 64 per label).",
        "",
        f"CPU per span, measured alone (process time): a traced Predict's CLIENT span "
        f"{data['span_on_us']:.1f} µs; the untraced path's `is None` check {data['check_off_us'] * 1000:.0f} ns. "
        f"A traced Classify over 4 labels records 5 spans (1 SERVER + 4 CLIENT), about "
        f"{5 * data['span_on_us']:.0f} µs of Labeler CPU, plus the model server's span per Predict when "
        "it traces too.",
    ]
    return "\n".join(lines) + "\n"


def update_docs(doc: pathlib.Path, block: str) -> None:
    report.fill_block(doc, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.observability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 40 calls")
    parser.add_argument("--model-root", type=pathlib.Path, default=None, help="trained sample models")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path, default=models.CACHE / "observability")
    parser.add_argument(
        "--update-docs", action="store_true", help="write the results into docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.requests = args.requests or (40 if args.quick else 600)
    source = args.model_root or models.trained_root()
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        root = pathlib.Path(tmp) / "models"
        versions = _two_version_root(source, root)
        server = procs.start_model_server(_model_server_config(root, pathlib.Path(tmp) / "models.config"),
                                          pathlib.Path(tmp) / "logs")  # fmt: skip
        try:
            started = time.perf_counter()
            data = asyncio.run(_run(args, root, server.target, versions))
        finally:
            server.stop()
    data.update(rounds=args.rounds, requests=args.requests, concurrency=args.concurrency)
    data.update(span_cost_us(2000 if args.quick else 20000))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "observability.json").write_text(json.dumps(data, indent=2))
    command = "python -m bench.observability" + (" --quick" if args.quick else "")
    section = markdown(data, command)
    print(section)
    print(f"finished in {time.perf_counter() - started:.0f} s")
    if args.update_docs:
        update_docs(models.REPO / "docs" / "benchmarks.md", section)
    errors = sum(v["errors"] for v in data["summary"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
