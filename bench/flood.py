"""The Labeler under a flood of unique documents (issue 27).

    python -m bench.flood [--quick] [--model-root DIR] [--update-docs] [--out FILE]

One labeler-modelserver with the four sample models and Labelers
(``labeler serve``, each its own process), pinned with ``taskset`` to core 0;
the Python load generator (bench/flood_load.py, grpc.aio) pinned to core 1,
so it does not take the servers' CPU; k6 (bench/flood_k6.js, compiled; one
connection per virtual user) not pinned (pinned to one contended core, it
starved). Every call is a fresh 12-word
document drawn from the corpus vocabulary, 300 ms deadlines.

- Capacity: 32 closed-loop callers, per Labeler.
- Flood cells: open-loop arrivals at 1x, 2x and 5x capacity for a few
  seconds, over one connection and over 16 (Python) or one per virtual user
  (k6), prediction cache off and on. Goodput: OK answers per second; how the
  other calls ended and how fast; the Labeler's CPU in the cell and the share
  of it spent on calls that ended after their deadline (estimated: such calls
  times a served call's CPU).
- The trade-off setting: overload.excess_calls REFUSE (default) against HOLD.
- The layer table: Labeler CPU per refused call where the refusal happens,
  against a served call's.
- ``labeler serve --workers 2`` against 1 (not pinned: both cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import models, procs, report
from bench.pressure import settle
from trainer.corpus import SAMPLE_MODELS, read_jsonl

DEADLINE_S = 0.3
CAPACITY_CALLERS = 32
MANY = 16
SERVER_CPUS = "0"
GENERATOR_CPUS = "1"
K6 = pathlib.Path(sys.executable).parent / "k6"
BEGIN = "<!-- bench:flood:start -->"
END = "<!-- bench:flood:end -->"
REFUSE = "  excess_calls: EXCESS_CALLS_REFUSE\n"
HOLD = "  excess_calls: EXCESS_CALLS_HOLD\n"


@dataclasses.dataclass(frozen=True)
class Plan:
    cell_s: float = 3.0
    overloads: tuple[int, ...] = (1, 2, 5)
    k6: bool = True
    workers: bool = True


QUICK = Plan(cell_s=0.5, overloads=(5,))


def _pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus is not None else argv


def start_model_server(config: pathlib.Path, logs: pathlib.Path) -> procs.ServerProcess:
    port = procs.free_port()
    argv = [
        sys.executable, "-m", "modelserver.cli", f"--port={port}", f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=0",
    ]  # fmt: skip
    return procs.ServerProcess(
        "modelserver", _pinned(SERVER_CPUS, argv), port, "tensorflow.serving.PredictionService", logs
    )


def start_labeler(
    config: pathlib.Path, logs: pathlib.Path, name: str, workers: int = 1, cpus: str | None = SERVER_CPUS
) -> procs.ServerProcess:
    port, metrics_port = procs.free_port(), procs.free_port()
    argv = [
        sys.executable, "-m", "labeler.cli", "serve", "--config", str(config), "--port", str(port),
        "--metrics-port", str(metrics_port), "--log-level", "ERROR", "--workers", str(workers),
    ]  # fmt: skip
    return procs.ServerProcess(name, _pinned(cpus, argv), port, "labeler.v1.Labeler", logs, metrics_port)


def cpu_seconds(server: procs.ServerProcess) -> float:
    """User + system CPU of the server process and its children (workers)."""
    try:
        root = psutil.Process(server.proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with_children = p.cpu_times()
            total += with_children.user + with_children.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def labeler_counts(server: procs.ServerProcess, workers: int = 1) -> dict[str, float]:
    """Summed counters of interest from every worker's metrics endpoint."""
    out: dict[str, float] = {}
    for i in range(workers):
        url = f"http://127.0.0.1:{server.metrics_port + i}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "labeler_rpc_requests_total" and s.labels.get("method") == "Classify":
                    key = f"rpc_{s.labels['code']}"
                elif s.name == "labeler_calls_past_deadline_total":
                    key = f"past_deadline_{s.labels['outcome']}"
                elif s.name == "labeler_overload_refused_total":
                    key = f"refused_{s.labels['stage']}"
                elif s.name == "labeler_cache_lookups_total":
                    key = f"cache_{s.labels['outcome']}"
                else:
                    continue
                out[key] = out.get(key, 0.0) + s.value
    return out


def python_gen(target: str, vocab: pathlib.Path, seconds: float, connections: int, **load) -> dict:
    argv = [
        sys.executable, "-m", "bench.flood_load", "gen", "--target", target, "--vocab", str(vocab),
        "--seconds", str(seconds), "--connections", str(connections), "--deadline", str(DEADLINE_S),
        "--seed", str(time.monotonic_ns() % 2**31),  # new documents in every cell: none the cache has seen
    ]  # fmt: skip
    cpus = None if load.pop("unpinned", False) else GENERATOR_CPUS
    for key, value in load.items():
        argv += [f"--{key}", str(value)]
    proc = subprocess.run(_pinned(cpus, argv), capture_output=True, text=True, cwd=models.REPO, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def k6_gen(target: str, vocab: pathlib.Path, seconds: float, rate: float, work: pathlib.Path) -> dict:
    seconds = max(seconds, 1.0)  # k6's shortest scenario
    out = work / f"k6-{time.monotonic_ns()}.json"
    vus = int(min(512, max(64, 2 * rate * DEADLINE_S)))
    env = {
        **os.environ, "TARGET": target, "RATE": str(int(rate)), "DURATION": f"{seconds}s", "VUS": str(vus),
        "DEADLINE_MS": str(int(DEADLINE_S * 1000)), "VOCAB": str(vocab), "OUT": str(out),
        "K6_NO_USAGE_REPORT": "true", "WARM": "5s",
    }  # fmt: skip
    argv = [str(K6), "run", "--quiet", "--no-color", str(models.REPO / "bench" / "flood_k6.js")]
    # Not pinned: pinned to one contended core, k6's 512 virtual users starve
    # and it times its own scheduling delays (seconds) as call latency.
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=models.REPO, timeout=300)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"k6 failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    data = json.loads(out.read_text())
    sent = sum(data["codes"].values())
    return {"sent": sent, "sent_s": seconds, "offered_rps": round(sent / seconds, 1), "vus": vus, **data}


def measure(
    name: str, labeler: procs.ServerProcess, others: list[procs.ServerProcess], load, workers: int = 1
):
    """Run ``load()`` (a generator's result dict) and add the servers' CPU and counters."""
    before = {"labeler": cpu_seconds(labeler), "others": sum(cpu_seconds(s) for s in others)}
    counts_before = labeler_counts(labeler, workers)
    start = time.perf_counter()
    result = load()
    wall = time.perf_counter() - start
    counts = labeler_counts(labeler, workers)
    result.update(
        name=name,
        labeler_cpu_s=round(cpu_seconds(labeler) - before["labeler"], 3),
        others_cpu_s=round(sum(cpu_seconds(s) for s in others) - before["others"], 3),
        wall_s=round(wall, 2),
        server=({k: round(v - counts_before.get(k, 0.0), 1) for k, v in counts.items()}),
    )
    result["goodput_rps"] = round(result["codes"].get("OK", 0) / result["sent_s"], 1)
    settle([labeler, *others])
    return result


def vocabulary(work: pathlib.Path, limit: int = 50_000) -> pathlib.Path:
    """The corpus's words as they occur (a word twice as frequent is listed
    twice as often), so a document drawn from it has the corpus's word
    frequencies: mostly words the models know, each document a new feature
    row. (Drawn from the distinct words instead, most picks are rare words
    the models' vocabularies dropped, and documents collapse onto the same
    few rows, which the prediction cache then answers.)"""
    words = [w for d in read_jsonl(models.corpus_path()) for w in d["words"]][:limit]
    path = work / "vocab.json"
    path.write_text(json.dumps(words, ensure_ascii=False), encoding="utf-8")
    return path


def _late_share(cell: dict, served_cpu_per_call: float) -> float:
    """Share of the Labeler's CPU in the cell spent on calls it worked on that
    ended after their deadline: stopped at the deadline or answered too late
    (``labeler_calls_past_deadline``), or answered UNAVAILABLE after every
    label's budget ran out. Each is charged a full served call's CPU (an upper
    bound: a stopped call did part of the work). Calls refused by admission,
    "expired" ones answered DEADLINE_EXCEEDED included, are refusals (the
    layer table), not work."""
    s = cell["server"]
    wasted = s.get("past_deadline_cancelled", 0.0) + s.get("past_deadline_late", 0.0)
    wasted += s.get("rpc_UNAVAILABLE", 0.0)
    cell["wasted_calls"] = wasted
    return round(min(1.0, wasted * served_cpu_per_call / max(cell["labeler_cpu_s"], 1e-9)), 3)


def run(plan: Plan, model_root: pathlib.Path, work: pathlib.Path, log=print) -> dict:
    names = list(SAMPLE_MODELS)
    vocab = vocabulary(work)
    logs = work / "logs"
    config = models.write_model_server_config(model_root, names, work / "models.config")
    out: dict = {"plan": dataclasses.asdict(plan), "deadline_ms": DEADLINE_S * 1000}
    out["load_average_start"] = [round(x, 1) for x in os.getloadavg()]
    model_server = start_model_server(config, logs)
    labelers: dict[str, procs.ServerProcess] = {}
    try:
        for key, overload, cache in (
            ("cache off", "", False),
            ("cache on", "", True),
            ("hold", HOLD, False),
        ):
            cfg = models.write_labeler_config(
                model_root, names, model_server.target, work / f"labeler-{key.replace(' ', '-')}.textproto",
                coalescing=False, cache=cache, overload=overload,
            )  # fmt: skip
            labelers[key] = start_labeler(cfg, logs, f"labeler-{key.replace(' ', '-')}")
        others = [model_server]
        capacity: dict[str, dict] = {}
        for key in ("cache off", "cache on"):
            cell = measure(
                f"capacity, {key}", labelers[key], others,
                lambda key=key: python_gen(labelers[key].target, vocab, plan.cell_s, 1, callers=CAPACITY_CALLERS),
            )  # fmt: skip
            cell["served_cpu_ms"] = round(
                1000 * cell["labeler_cpu_s"] / max(cell["codes"].get("OK", 0), 1), 3
            )
            capacity[key] = cell
            log(f"  {cell['name']}: {cell['goodput_rps']}/s, Labeler {cell['served_cpu_ms']} ms CPU per call")
        out["capacity"] = capacity
        cells: list[dict] = []

        def flood(gen: str, key: str, x: int, connections: int, labeler_key: str | None = None) -> None:
            labeler = labelers[labeler_key or key]
            rate = x * capacity[key]["goodput_rps"]
            conn = "per virtual user" if gen == "k6" else f"{connections}"
            name = f"{gen}, {labeler_key or key}, {x}x, {conn} conn."
            if gen == "k6":
                cell = measure(
                    name, labeler, others, lambda: k6_gen(labeler.target, vocab, plan.cell_s, rate, work)
                )
            else:
                cell = measure(
                    name, labeler, others,
                    lambda: python_gen(labeler.target, vocab, plan.cell_s, connections, rate=rate),
                )  # fmt: skip
            cell.update(
                x=x, cache=key, generator=gen, connections=conn, capacity_rps=capacity[key]["goodput_rps"]
            )
            cell["late_cpu_share"] = _late_share(cell, capacity[key]["served_cpu_ms"] / 1000)
            cells.append(cell)
            log(f"  {name}: offered {cell['offered_rps']}/s goodput {cell['goodput_rps']}/s {cell['codes']}")

        for key in ("cache off", "cache on"):
            for x in plan.overloads:
                for connections in (1, MANY):
                    flood("python", key, x, connections)
                if plan.k6:
                    flood("k6", key, x, 0)
        top = max(plan.overloads)
        for connections in (1, MANY):
            flood("python", "cache off", top, connections, labeler_key="hold")
        out["cells"] = cells
        out["layers"] = refusal_layers(plan, model_root, names, model_server, vocab, work, log)
        out["layers"]["served_cpu_ms"] = capacity["cache off"]["served_cpu_ms"]
        for server in labelers.values():
            server.stop()
        if plan.workers:
            out["workers"] = compare_workers(plan, model_root, names, model_server, vocab, work, log)
    finally:
        for server in [*labelers.values(), model_server]:
            server.stop()
    out["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    return out


LAYERS = (
    ("floor: a bare grpc.aio server answering the same way (no Labeler)", "floor"),
    ("prebuilt answer in the admission interceptor (default)", "interceptor"),
    ("context.abort in the admission interceptor", "interceptor-abort"),
    ("in the service, after the interceptors and parsing (issue 17)", "service"),
)


IDLE_S = 1.0
LAYER_CALLERS = 64


def refusal_layers(plan, model_root, names, model_server, vocab, work, log) -> dict:
    """Labeler CPU per refused call for each refusal path: a Labeler whose
    admission is full (bench.flood_load full-labeler), flooded by 64
    closed-loop callers over one connection (its idle CPU subtracted)."""
    cfg = models.write_labeler_config(
        model_root, names, model_server.target, work / "labeler-full.textproto", coalescing=False,
        overload="  max_classify_in_flight: 1\n  max_classify_queued: 1\n" + REFUSE,
    )  # fmt: skip
    rows = []
    for title, layer in LAYERS:
        argv = [
            sys.executable,
            "-m",
            "bench.flood_load",
            "full-labeler",
            "--config",
            str(cfg),
            "--layer",
            layer,
        ]
        proc = subprocess.Popen(
            _pinned(SERVER_CPUS, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=models.REPO,
        )
        try:
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"full-labeler did not start: {line!r}")
            target = f"127.0.0.1:{line.split()[1]}"
            p = psutil.Process(proc.pid)
            # What the process spends idle (version polling, health) is not the refusals'.
            idle_start = sum(p.cpu_times()[:2])
            time.sleep(IDLE_S)
            idle_rate = (sum(p.cpu_times()[:2]) - idle_start) / IDLE_S
            before, started = sum(p.cpu_times()[:2]), time.perf_counter()
            result = python_gen(target, vocab, plan.cell_s, 1, callers=LAYER_CALLERS)
            cpu = sum(p.cpu_times()[:2]) - before - idle_rate * (time.perf_counter() - started)
        finally:
            proc.stdin.close()
            proc.wait(30)
        refused = result["codes"].get("RESOURCE_EXHAUSTED", 0)
        rows.append(
            {
                "layer": title,
                "calls": result["sent"],
                "refused": refused,
                "labeler_cpu_s": round(cpu, 3),
                "cpu_per_refusal_ms": round(1000 * cpu / max(refused, 1), 4),
                "codes": result["codes"],
            }
        )
        log(f"  layer {title}: {rows[-1]['cpu_per_refusal_ms']} ms per refusal, {result['codes']}")
    return {"callers": LAYER_CALLERS, "rows": rows}


def compare_workers(plan, model_root, names, model_server, vocab, work, log) -> dict:
    """Capacity (32 closed-loop callers over 16 connections, unpinned) of
    ``labeler serve --workers 1`` and ``--workers 2``."""
    cfg = models.write_labeler_config(
        model_root, names, model_server.target, work / "labeler-workers.textproto", coalescing=False
    )
    out = {}
    for workers in (1, 2):
        labeler = start_labeler(cfg, work / "logs", f"labeler-workers-{workers}", workers=workers, cpus=None)
        try:
            time.sleep(1.0)  # every worker ready (health answers from whichever worker the probe reached)
            cell = measure(
                f"--workers {workers}", labeler, [model_server],
                lambda labeler=labeler: python_gen(
                    labeler.target, vocab, plan.cell_s, MANY, callers=CAPACITY_CALLERS, unpinned=1
                ),
                workers=workers,
            )  # fmt: skip
        finally:
            labeler.stop()
        out[workers] = cell
        log(f"  workers {workers}: {cell['goodput_rps']}/s, Labeler CPU {cell['labeler_cpu_s']} s")
    return out


def _pct(codes: dict, code: str) -> str:
    return f"{100 * codes.get(code, 0) / max(sum(codes.values()), 1):.0f}%"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(data: dict, command: str) -> str:
    cap = data["capacity"]
    lines = [
        f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on the shared "
        "2-core VM while other helpers' tests and benchmarks were running on the same 2 cores: absolute "
        "numbers are noisy; the ratios are within one run.",
        f"Load average (1, 5, 15 min) at the start: {data['load_average_start']}, at the end: "
        f"{data['load_average_end']}. Servers pinned to core {SERVER_CPUS}, the Python generator to core "
        f"{GENERATOR_CPUS}, k6 not pinned.",
        "",
        "| Labeler | capacity (32 callers, 1 conn.) | p99 (ms) | Labeler CPU per served call (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, c in cap.items():
        lines.append(
            f"| {key} | {c['goodput_rps']:.0f}/s | {_ms(c['p99_ms'].get('OK'))} | {c['served_cpu_ms']:.2f} |"
        )
    lines += [
        "",
        f"Flood cells: open-loop arrivals at x times the capacity for {data['plan']['cell_s']:g} s, "
        f"{data['deadline_ms']:.0f} ms deadlines, a fresh document per call. RE: RESOURCE_EXHAUSTED (all with "
        "the pushback trailer unless the pushback column says less), DE: DEADLINE_EXCEEDED, UNAV: UNAVAILABLE; "
        '"ms to" is the median time the caller waited for that outcome. Late CPU: share of the Labeler\'s CPU '
        "spent on calls that ended after their deadline or without an answer after work began (estimate).",
        "",
        "| cell | offered/s | goodput/s (x cap.) | p99 OK (ms) | OK | RE (pushback) | DE | UNAV "
        "| ms to RE / DE / UNAV | Labeler CPU (cores) | late CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for c in data["cells"]:
        codes = c["codes"]
        p50 = c["p50_ms"]
        lines.append(
            f"| {c['name']} | {c['offered_rps']:.0f} | {c['goodput_rps']:.0f} "
            f"({c['goodput_rps'] / c['capacity_rps']:.2f}x) | {_ms(c['p99_ms'].get('OK'))} | {_pct(codes, 'OK')} | "
            f"{_pct(codes, 'RESOURCE_EXHAUSTED')} ({c['pushbacks']}) | {_pct(codes, 'DEADLINE_EXCEEDED')} | "
            f"{_pct(codes, 'UNAVAILABLE')} | {_ms(p50.get('RESOURCE_EXHAUSTED'))} / "
            f"{_ms(p50.get('DEADLINE_EXCEEDED'))} / {_ms(p50.get('UNAVAILABLE'))} | "
            f"{c['labeler_cpu_s'] / c['wall_s']:.2f} | {100 * c['late_cpu_share']:.1f}% |"
        )
    layers = data["layers"]
    served = layers["served_cpu_ms"]
    lines += [
        "",
        f"Refusal cost by layer: a Labeler whose admission is full, {layers['callers']} closed-loop callers over "
        "one connection for the cell; Labeler CPU per refused call (its idle CPU subtracted) against a served "
        "call's (capacity cell, cache off).",
        "",
        "| where the call is refused | refused | Labeler CPU per call (ms) | x served |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in layers["rows"]:
        lines.append(
            f"| {r['layer']} | {r['refused']} | {r['cpu_per_refusal_ms']:.3f} | "
            f"{r['cpu_per_refusal_ms'] / served:.3f}x |"
        )
    lines.append(f"| served (for reference) | - | {served:.3f} | 1x |")
    if "workers" in data:
        w = data["workers"]
        one, two = w.get("1") or w.get(1), w.get("2") or w.get(2)
        lines += [
            "",
            "`labeler serve --workers N` (not pinned: Labeler workers, model server and generator share both "
            f"cores), 32 closed-loop callers over {MANY} connections, cache off:",
            "",
            "| workers | calls/s | p99 (ms) | Labeler CPU (cores) | model server + generator CPU (cores) |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for n, c in ((1, one), (2, two)):
            lines.append(
                f"| {n} | {c['goodput_rps']:.0f} | {_ms(c['p99_ms'].get('OK'))} | "
                f"{c['labeler_cpu_s'] / c['wall_s']:.2f} | {c['others_cpu_s'] / c['wall_s']:.2f} |"
            )
        lines.append(
            f"\n`--workers 2` / `--workers 1`: **{two['goodput_rps'] / max(one['goodput_rps'], 1e-9):.2f}x**."
        )
    return "\n".join(lines) + "\n"


def update_docs(doc: pathlib.Path, block: str) -> None:
    report.fill_block(doc, BEGIN, END, block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: short cells, 5x only")
    parser.add_argument("--no-k6", action="store_true", help="skip the k6 cells")
    parser.add_argument("--no-workers", action="store_true", help="skip --workers 2 vs 1")
    parser.add_argument(
        "--model-root", type=pathlib.Path, help="trained sample models (default: train/cache them)"
    )
    parser.add_argument("--update-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--out", type=pathlib.Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(
        QUICK if args.quick else Plan(), k6=not args.no_k6, workers=not args.no_workers
    )
    model_root = (args.model_root or models.trained_root()).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        data = run(plan, model_root, pathlib.Path(tmp))
    flags = [
        f
        for f, on in (("--quick", args.quick), ("--no-k6", args.no_k6), ("--no-workers", args.no_workers))
        if on
    ]
    block = markdown(data, " ".join([".venv/bin/python -m bench.flood", *flags]))
    print(block)
    if args.out:
        args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    if args.update_docs:
        update_docs(models.REPO / "docs" / "benchmarks.md", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
