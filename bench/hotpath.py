"""Where the Labeler's CPU per model call goes: the fan-out built up layer by
layer, in one process, against one real ``labeler-modelserver``.

    python -m bench.hotpath [--models 64] [--requests 200] [--rounds 2] [--update-docs]
                            [--model-root DIR] [--out DIR]

One request at a time (concurrency 1), the same documents for every layer;
the figure is this process's CPU (user + system) per model call, so each
layer's increment over the one before is what that layer costs:

1. floor: prebuilt requests through the Labeler's channel and retry loop;
2. + the request built per call (``codec.from_ndarray``);
3. + the answer decoded (``codec.to_ndarray``);
4. ``ModelServerClient.predict`` (the Labeler's client, features precomputed);
5. ``LabelerService.classify`` in this process (the plan, features computed
   once per pipeline and document, overload control, per-document arm
   metrics, one task per Predict of the plan; no gRPC server);
6. Classify through the Labeler's gRPC server in this process (its server
   side plus the caller's client call).

The models are the four sample models and copies of them (bench.models), so
the copies share feature artifacts. The Labeler runs with the prediction
cache off (the documents repeat) and its registry poll at 60 s (so polling
does not count); everything else at its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Awaitable, Callable

from bench import designs, models, procs, report
from labeler.model_client import ModelServerClient
from labeler.server import create_server
from tfserving import codec
from tfserving.protos import predict_pb2

DOC = models.REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench.hotpath:begin -->", "<!-- bench.hotpath:end -->"
WORK = models.CACHE / "hotpath"

LAYERS = (
    "1 floor: prebuilt requests",
    "2 + request built per call",
    "3 + answer decoded",
    "4 ModelServerClient.predict",
    "5 LabelerService.classify (no server)",
    "6 Classify through the gRPC server",
)


@dataclasses.dataclass
class Layer:
    name: str
    us_per_call: list[float]
    ms_per_request: list[float]


async def _cpu_per_call(
    call: Callable[[int], Awaitable[object]], requests: int, calls_per_request: int
) -> tuple[float, float]:
    for i in range(20):  # warm-up
        await call(i)
    # process_time: every thread of this process, in ns (psutil's times tick at 10 ms).
    before, started = time.process_time(), time.perf_counter()
    for i in range(requests):
        await call(i)
    cpu = time.process_time() - before
    return 1e6 * cpu / requests / calls_per_request, 1e3 * (time.perf_counter() - started) / requests


async def _measure(
    k: int, requests: int, rounds: int, target: str, config: pathlib.Path, fleet: pathlib.Path
) -> list[Layer]:
    names = models.fleet_names(k)
    pipes = models.pipelines(fleet, names)
    versions = {m: int(models.latest_version_dir(fleet, m).name) for m in names}
    docs = models.documents(limit=256)
    features = [[p.transform_one(words) for p in pipes.values()] for words in docs]
    handle = await create_server(config)
    floor = designs.FanoutFloor(target, pipes, docs)
    client = ModelServerClient(target)
    classify = designs.Classify(f"127.0.0.1:{handle.port}", docs)
    send, predict = client._call_with_retries, client._predict  # noqa: SLF001 - the floor's own path
    loop = asyncio.get_running_loop()

    def build(model: str, row) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = "serving_default"
        request.model_spec.version.value = versions[model]
        codec.from_ndarray(row, request.inputs["input"], raw=True)
        return request

    async def built(i: int) -> None:
        deadline = loop.time() + 30
        rows = features[i % len(features)]
        await asyncio.gather(
            *(send(predict, build(m, f), deadline) for m, f in zip(pipes, rows, strict=True))
        )

    async def decode_one(model: str, row, deadline: float):
        answer = await send(predict, build(model, row), deadline)
        return codec.to_ndarray(answer.outputs["probability"], 1 << 26)

    async def decoded(i: int) -> None:
        deadline = loop.time() + 30
        rows = features[i % len(features)]
        await asyncio.gather(*(decode_one(m, f, deadline) for m, f in zip(pipes, rows, strict=True)))

    async def via_client(i: int) -> None:
        deadline = loop.time() + 30
        rows = features[i % len(features)]
        await asyncio.gather(
            *(
                client.predict(m, versions[m], "serving_default", "input", "probability", f, deadline)
                for m, f in zip(pipes, rows, strict=True)
            )
        )

    service = handle.app.service

    async def via_service(i: int) -> None:
        await service.classify(docs[i % len(docs)], time_remaining=30)

    calls = (floor.call, built, decoded, via_client, via_service, classify.call)
    layers = [Layer(name, [], []) for name in LAYERS]
    try:
        if not await handle.app.wait_ready(60):
            raise RuntimeError("the in-process Labeler did not load its models")
        for _ in range(rounds):
            for layer, call in zip(layers, calls, strict=True):
                us, ms = await _cpu_per_call(call, requests, k)
                layer.us_per_call.append(round(us, 1))
                layer.ms_per_request.append(round(ms, 2))
    finally:
        await floor.close()
        await client.close()
        await classify.close()
        await handle.stop(1)
    return layers


def run(k: int, requests: int, rounds: int, source: pathlib.Path, work: pathlib.Path) -> list[Layer]:
    """``source``: a model root with the four sample models; ``work``: fleet, configs, logs."""
    work.mkdir(parents=True, exist_ok=True)
    fleet = work / "fleet"
    names = models.build_fleet(source, fleet, k)
    server = procs.start_model_server(
        models.write_model_server_config(fleet, names, work / "models.config"), work
    )
    try:
        config = models.write_labeler_config(
            fleet, names, server.target, work / "labeler.textproto", coalescing=False
        )
        config.write_text(
            config.read_text().replace("version_poll_interval_ms: 1000", "version_poll_interval_ms: 60000")
        )
        return asyncio.run(_measure(k, requests, rounds, server.target, config, fleet))
    finally:
        server.stop()


def markdown(layers: list[Layer], command: str, k: int) -> str:
    floor = layers[0].us_per_call
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), {k} binary models, "
        "concurrency 1; one column per round.",
        "",
        "| layer | CPU µs per model call | / floor | ms per request |",
        "|---|---|---|---|",
    ]
    for layer in layers:
        ratios = " / ".join(
            f"{u / f:.2f}" if f > 0 else "n/a" for u, f in zip(layer.us_per_call, floor, strict=True)
        )
        lines.append(
            f"| {layer.name} | {' / '.join(f'{u:.0f}' for u in layer.us_per_call)} | {ratios} | "
            f"{' / '.join(f'{m:.1f}' for m in layer.ms_per_request)} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(block: str) -> None:
    report.fill_block(DOC, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=64, help="binary models per request (default 64)")
    parser.add_argument("--requests", type=int, default=200, help="requests per layer and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all layers (default 2)")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the block in docs/benchmarks.md")
    parser.add_argument(
        "--model-root", type=pathlib.Path, help="the four sample models (default: trained once)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=WORK, help=f"work directory (default {WORK})")
    args = parser.parse_args(argv)
    source = args.model_root or models.trained_root()
    layers = run(args.models, args.requests, args.rounds, source, args.out)
    (args.out / "hotpath.json").write_text(
        json.dumps([dataclasses.asdict(layer) for layer in layers], indent=1)
    )
    command = (
        f"python -m bench.hotpath --models {args.models} --requests {args.requests} --rounds {args.rounds}"
    )
    block = markdown(layers, command, args.models)
    print(block)
    if args.update_docs:
        update_docs(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
