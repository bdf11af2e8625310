"""The Labeler's request path against its floors, side by side in one run.

    python -m bench.requestpath [--requests 300] [--rounds 3] [--update-docs] [--out DIR]

Everything the figures compare runs in this one process, interleaved round
by round (the machine is shared: ratios from one run, never across runs):
the Labelers (``labeler.server.create_server``, in-process), the floors, and
the callers. The model server and the echo upstream run in processes of
their own, so their CPU is not counted. CPU is this process's
(``time.process_time``: every thread, gRPC's included) per call; latency is
the caller's p50. The caller's own client call is in every figure alike.

Cells (unique documents: the prediction cache off and no document repeats
within a cell; coalescing off):

- ``echo floor``: one grpc.aio unary call served here whose handler makes one
  grpc.aio client call to an echo server (another process) and answers: the
  stack's floor for a Labeler with one model (one call served, one made);
- ``Classify, 1 bundle of 64 labels``: the same shape with the Labeler's work
  between; its CPU over the echo floor's, at concurrency 1 and 32;
- ``Classify, 4 binary`` / ``256 labels in 4 bundles``: p50 over the bare
  fan-out floor (the same 4 Predicts prebuilt, fired at once by the
  Labeler's own client; bench.designs.FanoutFloor);
- ``Classify, 4 binary, canary 20 % + shadow 100 %``: p50 over no rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import grpc

from bench import designs, models, procs, report
from modelspec.features import FeaturePipeline

DOC = models.REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench.requestpath:begin -->", "<!-- bench.requestpath:end -->"
WORK = models.CACHE / "requestpath"
ECHO = "/bench.Echo/Call"
PAYLOAD = b"x" * 96  # about a one-document Classify request
BUNDLE_LABELS = 64


# -- the echo floor ---------------------------------------------------------------


async def serve_echo(port: int, upstream: str | None = None) -> grpc.aio.Server:
    """An echo server; with ``upstream``, each call is relayed there first."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    relay = grpc.aio.insecure_channel(upstream).unary_unary(ECHO) if upstream else None

    async def call(request: bytes, context) -> bytes:
        if relay is None:
            return request
        return await relay(request, timeout=30)

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    server.bound_port = bound  # type: ignore[attr-defined,unused-ignore]
    return server


def _echo_main(port: int) -> None:
    async def run() -> None:
        server = await serve_echo(port)
        await server.wait_for_termination()

    asyncio.run(run())


def start_echo_process(log_dir: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port = procs.free_port()
    log = open(log_dir / "echo.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.requestpath", "--serve-echo", str(port)],
        cwd=models.REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(ECHO)
        while True:
            try:
                call(b"ping", timeout=1)
                return proc, target
            except grpc.RpcError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"the echo server did not start; see {log_dir / 'echo.log'}") from None
                time.sleep(0.05)


# -- models -------------------------------------------------------------------------


def _bundle(work: pathlib.Path, root: pathlib.Path) -> list[str]:
    """A 64-label bundle (trained small: the cost measured is the request's,
    not the model's quality) and three copies with renamed labels."""
    from bench.bundles import _copy_bundle
    from trainer.corpus import synthetic_labels, write_many_label_corpus
    from trainer.recipes.fasttext import TrainConfig, train

    names = ["topics64", "topics64_b", "topics64_c", "topics64_d"]
    if not (root / names[0]).exists():
        train_path, test_path = write_many_label_corpus(work / "bundle-corpus", BUNDLE_LABELS, 8, seed=3)
        cfg = TrainConfig(
            model=names[0],
            label="",
            labels=synthetic_labels(BUNDLE_LABELS),
            corpus=train_path,
            test_corpus=test_path,
            model_root=root,
            params={"epochs": 2, "batch_size": 64, "embedding_dim": 16, "threads": 1},
            seed=0,
            learning_rate=0.05,
        )
        train(cfg, out=io.StringIO())
    for i, name in enumerate(names[1:]):
        _copy_bundle(root, names[0], name, f"{'bcd'[i]}-")
    return names


def _prepare(work: pathlib.Path, source: pathlib.Path) -> tuple[pathlib.Path, dict[str, int], list[str]]:
    """One model root: the four sample models, movie also as a second version
    (the canary's and shadow's candidate), and four 64-label bundles."""
    root = work / "models"
    versions = {}
    for model in models.fleet_names(4):
        if not (root / model).exists():
            shutil.copytree(source / model, root / model)
        versions[model] = int(models.latest_version_dir(root, model).name)
    candidate = root / "movie" / str(versions["movie"] + 1)
    if not candidate.exists():
        shutil.copytree(root / "movie" / str(versions["movie"]), candidate)
    return root, versions, _bundle(work, root)


def _labeler_text(root: pathlib.Path, target: str, body: str) -> str:
    return (
        f'default_target: "{target}"\nmodel_root: "{root}"\nversion_poll_interval_ms: 60000\n'
        "coalescing { enabled: false }\nprediction_cache { disabled: true }\n" + body
    )


def _binary(versions: dict[str, int], rollouts: bool) -> str:
    body = "".join(
        f'labels {{ label: "{models.fleet_label(m)}" model: "{m}" version: {versions[m]} timeout_ms: 10000 }}\n'
        for m in models.fleet_names(4)
    )
    if rollouts:
        candidate = versions["movie"] + 1
        body += f'canaries {{ label: "影视" version: {candidate} percent: 20 }}\n'
        body += f'shadows {{ label: "影视" version: {candidate} sample_percent: 100 max_in_flight: 64 }}\n'
    return body


def _bundles(names: list[str]) -> str:
    return "".join(f'bundles {{ model: "{n}" timeout_ms: 10000 }}\n' for n in names)


# -- measuring ----------------------------------------------------------------------


def unique_documents(n: int, salt: int) -> list[list[str]]:
    """``n`` documents, no two alike (each carries words no other has, so no
    cache or coalescing could share their rows)."""
    base = models.documents(limit=512)
    vocabulary = sorted({w for d in base for w in d})
    return [
        base[i % len(base)][:20]
        + [
            vocabulary[(i * 7919 + salt) % len(vocabulary)],
            vocabulary[(i * 104729 + 3 * salt) % len(vocabulary)],
        ]
        + [f"#{salt}-{i}"]
        for i in range(n)
    ]


async def _cell(call: Callable[[int], Awaitable[object]], requests: int, concurrency: int) -> dict:
    for i in range(10):  # warm-up
        await call(-1 - i)
    latencies: list[float] = []
    numbers = iter(range(requests))

    async def worker() -> None:
        for i in numbers:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu
    return {"cpu_us": 1e6 * cpu / requests, "p50_ms": 1e3 * statistics.median(latencies)}


class _ClassifyCaller:
    def __init__(self, port: int, documents: list[list[str]]) -> None:
        self.design = designs.Classify(f"127.0.0.1:{port}", documents)
        self.documents = documents

    async def call(self, i: int) -> None:
        await self.design.call(i % len(self.documents))


async def _measure(
    work: pathlib.Path, requests: int, rounds: int, target: str, echo: str, root, versions, bundles
) -> dict[str, list[dict]]:
    from labeler.config import load_settings
    from labeler.server import create_server

    configs = {
        "binary4": _binary(versions, rollouts=False),
        "binary4-rollouts": _binary(versions, rollouts=True),
        "bundle1": _bundles(bundles[:1]),
        "bundles4": _bundles(bundles),
    }
    handles = {}
    for name, body in configs.items():
        path = work / f"{name}.textproto"
        path.write_text(_labeler_text(root, target, body))
        handles[name] = await create_server(load_settings(path))
    relay = await serve_echo(0, echo)
    echo_channel = grpc.aio.insecure_channel(f"127.0.0.1:{relay.bound_port}")  # type: ignore[attr-defined,unused-ignore]
    echo_call = echo_channel.unary_unary(ECHO)
    pipes4 = {m: FeaturePipeline.load(models.latest_version_dir(root, m))[0] for m in models.fleet_names(4)}
    bundle_pipes = {n: FeaturePipeline.load(models.latest_version_dir(root, n))[0] for n in bundles}
    total = requests * rounds * 12 + 100
    docs = unique_documents(total, 1)
    results: dict[str, list[dict]] = {}
    try:
        for name, handle in handles.items():
            if not await handle.app.wait_ready(120) or not await handle.app.rollouts.wait_ready(120):
                raise RuntimeError(f"the {name} Labeler did not load its models")
        floor4 = designs.FanoutFloor(target, pipes4, docs)
        floor_bundles = designs.FanoutFloor(target, bundle_pipes, docs)
        callers = {name: _ClassifyCaller(h.port, docs) for name, h in handles.items()}
        used = 0

        def fresh(call):
            """The cell's calls on documents no other cell used."""
            nonlocal used
            offset, used = used, used + requests + 10

            async def run(i: int):
                return await call(offset + 10 + i if i >= 0 else offset + (-1 - i))

            return run

        async def echo_once(i: int) -> None:
            await echo_call(PAYLOAD, timeout=30)

        cells: list[tuple[str, Callable, int]] = [
            ("echo floor, c=1", echo_once, 1),
            ("Classify 1 bundle of 64 labels, c=1", callers["bundle1"].call, 1),
            ("echo floor, c=32", echo_once, 32),
            ("Classify 1 bundle of 64 labels, c=32", callers["bundle1"].call, 32),
            ("fan-out floor, 4 binary", floor4.call, 1),
            ("Classify 4 binary", callers["binary4"].call, 1),
            ("Classify 4 binary, canary 20% + shadow 100%", callers["binary4-rollouts"].call, 1),
            ("fan-out floor, 4 bundles", floor_bundles.call, 1),
            ("Classify 256 labels in 4 bundles", callers["bundles4"].call, 1),
        ]
        for r in range(rounds):
            for name, call, c in cells:
                cell = await _cell(fresh(call), requests, c)
                results.setdefault(name, []).append(cell)
                print(f"round {r + 1} {name}: {cell}", flush=True)
            await handles["binary4-rollouts"].app.rollouts.drain_shadows()
        await floor4.close()
        await floor_bundles.close()
        for caller in callers.values():
            await caller.design.close()
    finally:
        await echo_channel.close()
        await relay.stop(None)
        for handle in handles.values():
            await handle.stop(1)
    return results


def run(requests: int, rounds: int, source: pathlib.Path, work: pathlib.Path) -> dict[str, list[dict]]:
    """``source``: a model root with the four sample models; ``work``: models, configs, logs."""
    work.mkdir(parents=True, exist_ok=True)
    root, versions, bundles = _prepare(work, source)
    names = [*models.fleet_names(4), *bundles]
    config = work / "models.config"
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{root / n}"\n    model_platform: "tensorflow"\n'
        + ("    model_version_policy { all {} }\n" if n == "movie" else "")
        + "  }\n"
        for n in names
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    server = procs.start_model_server(config, work)
    echo, echo_target = start_echo_process(work)
    try:
        return asyncio.run(
            _measure(work, requests, rounds, server.target, echo_target, root, versions, bundles)
        )
    finally:
        echo.terminate()
        echo.wait(10)
        server.stop()


# -- report ---------------------------------------------------------------------------

RATIOS = (
    # (figure, numerator cell, denominator cell, what, target)
    (
        "CPU",
        "Classify 1 bundle of 64 labels, c=1",
        "echo floor, c=1",
        "Labeler CPU per Classify / echo floor",
        1.5,
    ),
    (
        "CPU",
        "Classify 1 bundle of 64 labels, c=32",
        "echo floor, c=32",
        "Labeler CPU per Classify / echo floor",
        1.5,
    ),
    ("p50", "Classify 4 binary", "fan-out floor, 4 binary", "Classify p50 / bare fan-out p50", 1.2),
    (
        "p50",
        "Classify 256 labels in 4 bundles",
        "fan-out floor, 4 bundles",
        "Classify p50 / bare fan-out p50",
        1.2,
    ),
    (
        "p50",
        "Classify 4 binary, canary 20% + shadow 100%",
        "Classify 4 binary",
        "p50 with canary and shadow / without",
        1.1,
    ),
)


def markdown(results: dict[str, list[dict]], command: str, note: str) -> str:
    def per_round(name: str, key: str) -> list[float]:
        return [cell[key] for cell in results[name]]

    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); one column per round. "
        + note,
        "",
        "| cell | CPU µs per call (this process) | p50 ms |",
        "|---|---|---|",
    ]
    for name in results:
        cpu = " / ".join(f"{v:.0f}" for v in per_round(name, "cpu_us"))
        p50 = " / ".join(f"{v:.2f}" for v in per_round(name, "p50_ms"))
        lines.append(f"| {name} | {cpu} | {p50} |")
    lines += ["", "| ratio | per round | median | target | met |", "|---|---|---|---|---|"]
    for figure, top, bottom, what, target in RATIOS:
        key = "cpu_us" if figure == "CPU" else "p50_ms"
        ratios = [a / b for a, b in zip(per_round(top, key), per_round(bottom, key), strict=True) if b > 0]
        median = statistics.median(ratios) if ratios else float("nan")
        lines.append(
            f"| {what} ({top}) | {' / '.join(f'{r:.2f}' for r in ratios)} | {median:.2f} | <= {target} | "
            f"{'yes' if median <= target else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(block: str) -> None:
    report.fill_block(DOC, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.requestpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="calls per cell and round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all cells (default 3)")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the block in docs/benchmarks.md")
    parser.add_argument("--note", default="", help="what else ran on the machine (goes into the docs)")
    parser.add_argument(
        "--model-root", type=pathlib.Path, help="the four sample models (default: trained once)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=WORK, help=f"work directory (default {WORK})")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo is not None:
        _echo_main(args.serve_echo)
        return 0
    results = run(args.requests, args.rounds, args.model_root or models.trained_root(), args.out)
    (args.out / "requestpath.json").write_text(json.dumps(results, indent=1))
    command = f"python -m bench.requestpath --requests {args.requests} --rounds {args.rounds}"
    block = markdown(results, command, args.note)
    print(block)
    if args.update_docs:
        update_docs(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
