"""Fan-out benchmark: the old design vs. this Labeler vs. the floors.

    python -m bench.fanout            # K = 1, 4, 16 models x concurrency 1, 8, 32; writes docs/
    python -m bench.fanout --quick    # a smoke run: K = 1, 5 x concurrency 1, 4, a few requests

For each K it starts labeler-modelserver with K models (the sample models and
copies of them under other names), then measures every design at every
concurrency, and the Labeler twice (request coalescing off and on), each server
in its own process. Results: ``<out>/fanout.json``, ``<out>/fanout.md``, the
plot, and (full run) the generated block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import pathlib
import statistics
import sys
import time

import psutil

from bench import designs, load, models, old_design, procs, report
from bench import profile as bench_profile

DOC = models.REPO / "docs" / "benchmarks.md"
PLOT = models.REPO / "docs" / "benchmarks-latency.png"


@dataclasses.dataclass(frozen=True)
class Plan:
    ks: tuple[int, ...] = (1, 4, 16)
    concurrencies: tuple[int, ...] = (1, 8, 32)
    requests: int = 3000  # per cell, at most
    budget_s: float = 3.0  # per cell, at most (a worker finishes its call)
    warmup: int = 8


QUICK = Plan(ks=(1, 5), concurrencies=(1, 4), requests=12, budget_s=1.0, warmup=2)


class Bench:
    def __init__(
        self,
        plan: Plan,
        source: pathlib.Path,
        work: pathlib.Path,
        corpus_dir: pathlib.Path,
        profile: bool = False,
        log=print,
    ) -> None:
        self.plan, self.work, self.profile, self.log = plan, work, profile, log
        self.fleet = work / "fleet"
        models.build_fleet(source, self.fleet, max(plan.ks))
        self.docs = models.documents(corpus_dir, limit=256)
        self.results: list[load.CellResult] = []
        self.servers: dict[int, dict] = {}
        self.watched: dict[str, procs.ServerProcess] = {}  # servers whose CPU each cell reports

    def _start_cpu_clock(self) -> None:
        """Called once the cell's client is built: set-up is not the cell's CPU."""
        self._cpu = {
            "client": psutil.Process(),
            **{n: psutil.Process(p.proc.pid) for n, p in self.watched.items()},
        }
        self._cpu_before = {n: sum(p.cpu_times()[:2]) for n, p in self._cpu.items()}

    def _measure(self, design: str, k: int, c: int, run) -> None:
        """Run one cell; record latencies and each process's CPU per request
        (warm-up included in both the CPU and the count)."""
        latencies, errors, seconds = run()
        calls = len(latencies) + len(errors) + min(self.plan.warmup, c)
        cpu_ms = {
            n: round(1000 * (sum(p.cpu_times()[:2]) - self._cpu_before[n]) / calls, 3)
            for n, p in self._cpu.items()
        }
        cell = load.summarize(design, k, c, latencies, errors, seconds, cpu_ms)
        self.results.append(cell)
        self.log(
            f"  {design:30s} K={k:<3d} c={c:<3d} p50 {cell.p50_ms:8.2f} ms  p99 {cell.p99_ms:8.2f} ms  "
            f"{cell.rps:8.1f} req/s  n={cell.requests}  CPU ms/req {cpu_ms}"
            f"{'  errors=' + str(cell.errors) if cell.errors else ''}"
        )

    def _async_cell(self, design: str, k: int, c: int, make) -> None:
        self._measure(design, k, c, lambda: asyncio.run(self._run_async(make, c)))

    async def _run_async(self, make, c: int):
        subject = make()
        self._start_cpu_clock()
        try:
            return await load.run_async(
                subject.call, c, self.plan.requests, self.plan.budget_s, min(self.plan.warmup, c)
            )
        finally:
            await subject.close()

    def _classify_cell(self, design: str, k: int, c: int, classify, labeler: procs.ServerProcess) -> None:
        docs, calls = procs.predict_batch_totals(labeler)
        self._async_cell(design, k, c, classify)
        docs2, calls2 = procs.predict_batch_totals(labeler)
        per_predict = round((docs2 - docs) / (calls2 - calls), 2) if calls2 > calls else 0.0
        self.results[-1] = dataclasses.replace(self.results[-1], docs_per_predict=per_predict)
        self.log(f"    {per_predict} documents per Predict")

    def _old_cell(
        self, design: str, k: int, c: int, config: pathlib.Path, target: str, labels: list[str], pooled: bool
    ) -> None:
        def run():
            subject = old_design.OldDesign(config, target, pooled=pooled)
            self._start_cpu_clock()
            try:
                return load.run_threads(
                    lambda i: subject.classify(self.docs[i % len(self.docs)], labels),
                    c,
                    self.plan.requests,
                    self.plan.budget_s,
                    min(self.plan.warmup, c),
                )
            finally:
                subject.close()

        self._measure(design, k, c, run)

    def _paired(self, floor, classify) -> dict:
        """Concurrency 1, alternating a floor call and a Classify (same
        document): the two share whatever else the machine is doing, so their
        ratio holds on a busy machine where separate cells drift."""

        async def run():
            a, b = floor(), classify()
            times: tuple[list[float], list[float]] = ([], [])
            try:
                end = time.perf_counter() + 2 * self.plan.budget_s
                for i in range(self.plan.requests):
                    if i >= self.plan.warmup and time.perf_counter() > end:
                        break
                    for subject, out in ((a, times[0]), (b, times[1])):
                        start = time.perf_counter()
                        await subject.call(i)
                        if i >= self.plan.warmup:
                            out.append(time.perf_counter() - start)
            finally:
                await a.close()
                await b.close()
            return times

        floor_s, classify_s = asyncio.run(run())
        med = lambda xs: round(1000 * statistics.median(xs), 3)  # noqa: E731
        return {"floor_p50_ms": med(floor_s), "classify_p50_ms": med(classify_s), "pairs": len(floor_s)}

    def _profile_cell(self, k: int, c: int, make, tag: str) -> None:
        """An extra, unrecorded cell with py-spy sampling every watched server."""
        seconds = self.plan.budget_s
        raws = {n: self.work / f"profile-{n}-k{k}-c{c}-{tag}.raw" for n in self.watched}
        spies = {n: bench_profile.start(p.proc.pid, seconds, raws[n]) for n, p in self.watched.items()}
        asyncio.run(self._run_async(make, c))
        for name, spy in spies.items():
            _, err = spy.communicate(timeout=60)
            out = raws[name].with_suffix(".txt")
            if raws[name].exists():
                title = f"py-spy of {name}, K={k}, concurrency {c}, {tag}\n\n"
                try:
                    out.write_text(title + bench_profile.summarize(raws[name]))
                except (OSError, ValueError) as exc:  # a profile must not cost the run its results
                    self.log(f"  could not summarize {raws[name]}: {exc}")
                    continue
                self.log(f"  profile of {name} written to {out}")
            else:
                self.log(f"  py-spy on {name} failed: {err.decode()[-300:]}")

    def run_k(self, k: int) -> None:
        """Every design at every concurrency for K models; the designs of one
        concurrency run back to back, so background load drifts least between them."""
        names = models.fleet_names(k)
        run_dir = self.work / f"k{k}"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = models.write_model_server_config(self.fleet, names, run_dir / "models.config")
        server = procs.start_model_server(config, run_dir)
        self.log(f"K={k}: model server up in {server.started_s:.1f} s")
        labelers: dict[str, procs.ServerProcess] = {}
        try:
            pipes = models.pipelines(self.fleet, names)
            labels = [models.fleet_label(n) for n in names]
            old_config = old_design.write_artifacts(
                pipes, dict(zip(names, labels, strict=False)), server.target, run_dir / "old"
            )
            t = server.target
            for design, coalescing in ((report.CLASSIFY, False), (report.COALESCED, True)):
                cfg = models.write_labeler_config(
                    self.fleet, names, t, run_dir / f"labeler-{coalescing}.textproto", coalescing
                )
                labelers[design] = procs.start_labeler(cfg, run_dir, name=f"labeler-coalescing-{coalescing}")
            direct = labelers[report.CLASSIFY]
            extras = {
                "modelserver_start_s": server.started_s,
                "labeler_start_s": direct.started_s,
                "labeler_rss_start_mb": direct.rss_mb(),
                "same_answers": same_answers(old_config, t, labels, direct.target, self.docs[:20]),
            }
            floor = functools.partial(designs.FanoutFloor, t, pipes, self.docs)
            extras["paired_c1"] = self._paired(
                floor, functools.partial(designs.Classify, direct.target, self.docs)
            )
            self.log(f"  paired at concurrency 1: {extras['paired_c1']}")
            for c in self.plan.concurrencies:
                self.watched = {"modelserver": server}
                self._old_cell(report.OLD, k, c, old_config, t, labels, pooled=False)
                self._old_cell(report.OLD_POOLED, k, c, old_config, t, labels, pooled=True)
                self._async_cell(
                    report.SEQUENTIAL, k, c, functools.partial(designs.Sequential, t, pipes, self.docs)
                )
                self._async_cell(report.FLOOR_FANOUT, k, c, floor)
                self._async_cell(
                    report.FLOOR_DIRECT, k, c, functools.partial(designs.DirectFloor, t, pipes, self.docs)
                )
                for design, labeler in labelers.items():
                    self.watched = {"modelserver": server, "labeler": labeler}
                    self._classify_cell(
                        design, k, c, functools.partial(designs.Classify, labeler.target, self.docs), labeler
                    )
            extras["labeler_rss_mb"] = direct.rss_mb()
            if self.profile and k == max(self.plan.ks):
                for design, labeler in labelers.items():
                    self.watched = {"modelserver": server, "labeler": labeler}
                    for c in (min(self.plan.concurrencies), max(self.plan.concurrencies)):
                        self._profile_cell(
                            k,
                            c,
                            functools.partial(designs.Classify, labeler.target, self.docs),
                            "coalescing" if design == report.COALESCED else "direct",
                        )
        finally:
            for labeler in labelers.values():
                labeler.stop()
            server.stop()
            self.watched = {}
        self.servers[k] = extras
        self.log(
            f"K={k}: Labeler up in {extras['labeler_start_s']:.2f} s, RSS {extras['labeler_rss_start_mb']:.0f} MB "
            f"after start, {extras['labeler_rss_mb']:.0f} MB after load"
        )


def same_answers(
    old_config: pathlib.Path, model_target: str, labels: list[str], labeler_target: str, docs: list[list[str]]
) -> int:
    """Check the baseline computes what the Labeler does: the same labels with
    the same probabilities for ``docs``; how many documents were compared."""
    import grpc

    from labeler.v1 import labeler_pb2, labeler_pb2_grpc

    old = old_design.OldDesign(old_config, model_target, pooled=True)
    with grpc.insecure_channel(labeler_target) as channel:
        stub = labeler_pb2_grpc.LabelerStub(channel)
        for words in docs:
            reply = stub.Classify(labeler_pb2.ClassifyRequest(words=words), timeout=30)
            want = {s.label: s.probability for s in reply.labels}
            got = dict(old.classify(words, labels))
            if want.keys() != got.keys() or any(abs(want[k] - got[k]) > 1e-4 for k in want):
                raise AssertionError(f"old design and Labeler disagree on {words}: {got} vs {want}")
    old.close()
    return len(docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny K, concurrency and request counts"
    )
    parser.add_argument(
        "--model-root",
        type=pathlib.Path,
        help="a root with the four sample models (default: train them once into var/bench/models)",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, help="results directory (default var/bench/fanout[-quick])"
    )
    parser.add_argument(
        "--ks",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        help="numbers of models, comma-separated (default 1,4,16); implies --no-docs",
    )
    parser.add_argument(
        "--concurrencies",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        help="concurrencies, comma-separated (default 1,8,32); implies --no-docs",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the Labeler and model server with py-spy at the largest K",
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="full run: leave docs/benchmarks.md and the plot alone"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.ks or args.concurrencies:
        plan = dataclasses.replace(
            plan, ks=args.ks or plan.ks, concurrencies=args.concurrencies or plan.concurrencies
        )
        args.no_docs = True
    out = args.out or models.CACHE / ("fanout-quick" if args.quick else "fanout")
    out.mkdir(parents=True, exist_ok=True)
    source = args.model_root or models.trained_root()
    started = time.perf_counter()
    bench = Bench(
        plan, source, out, corpus_dir=models.CACHE if args.model_root is None else out, profile=args.profile
    )
    for k in plan.ks:
        bench.run_k(k)
    command = "python -m bench.fanout" + (" --quick" if args.quick else "")
    extras = {
        "servers": bench.servers,
        "note": f"At most {plan.requests} requests or {plan.budget_s:g} s per cell after "
        f"{plan.warmup} warm-up requests (fewer at low concurrency).",
    }
    (out / "fanout.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": report.machine(),
                "plan": dataclasses.asdict(plan),
                **extras,
                "results": [dataclasses.asdict(r) for r in bench.results],
            },
            indent=1,
            ensure_ascii=False,
        )
    )
    section = report.markdown(bench.results, extras, command)
    (out / "fanout.md").write_text(section)
    write_docs = not (args.quick or args.no_docs)
    report.plot(bench.results, PLOT if write_docs else out / "latency.png")
    if write_docs:
        report.update_docs(DOC, section)
    print(section)
    print(
        f"fan-out bench finished in {time.perf_counter() - started:.0f} s; results in {out}"
        + (f", {DOC.relative_to(models.REPO)} and {PLOT.relative_to(models.REPO)}" if write_docs else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
