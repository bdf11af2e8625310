"""Bundles vs binary models: N labels as (a) one binary model per label,
(b) 4 bundles of N/4 labels, (c) one bundle of N labels.

    python -m bench.bundles [--quick] [--update-docs]

Per form and N (16, 64 and 256, every form run), at concurrency 1 and 32:
Classify p50/p99 and req/s through the Labeler (its own process), the bare
concurrent fan-out of the same Predicts (the floor), CPU ms per request of the
Labeler and the model server, RSS of both, and the size of the served model
versions. Every Labeler config this writes turns the prediction cache off
(``prediction_cache { disabled: true }``): the load cycles over 256 documents,
and the floor always asks the model server, so Classify must too. Per-label
timeouts and the load's deadline are 60 s, so a slow cell (binary 256 at
concurrency 32) measures latency, not timeouts; the Labeler's overload control
keeps its defaults, and its refusals (RESOURCE_EXHAUSTED) count as the cell's
errors.

Also (bench/bundle_training.py): the training wall time of a 64-label bundle
job vs 64 binary jobs submitted at once through a real Trainer (its default
load gate), and the per-label held-out F1 of a bundle of the four sample
labels vs the four binary sample models on seeds 0, 1 and 2 of the sample
corpus. Training runs in subprocesses, so this process never imports
TensorFlow.

The binary fleet is copies of the four sample models (so copies share feature
artifacts); the bundles are trained on the synthetic many-label corpus and the
4-bundle form is one N/4-label bundle copied under four names with its labels
renamed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time

import psutil

from bench import designs, load, models, procs
from bench.bundle_training import WORK, f1_over_seeds, run_recipe, trainer_timing
from modelspec.features import ARTIFACT_DIR, SETTINGS_FILE
from modelspec.versions import version_dirs
from trainer.corpus import synthetic_labels, write_many_label_corpus

DOC = models.REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench.bundles:begin -->", "<!-- bench.bundles:end -->"
# Long enough that binary 256 at concurrency 32 is measured, not timed out.
TIMEOUT_S = 60.0
LABEL_TIMEOUT_MS = int(TIMEOUT_S * 1000)
# Loading 256 binary models (one TensorFlow session each) takes minutes here.
START_TIMEOUT_S = 900.0


@dataclasses.dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...] = (16, 64, 256)
    concurrencies: tuple[int, ...] = (1, 32)
    requests: int = 600
    budget_s: float = 3.0
    warmup: int = 8
    synthetic_docs_per_label: int = 20
    timing_labels: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    sample_docs_per_label: int = 500


QUICK = Plan(
    sizes=(8,),
    requests=30,
    budget_s=0.5,
    synthetic_docs_per_label=10,
    timing_labels=8,
    seeds=(0, 1),
    sample_docs_per_label=60,
)


def _latest(root: pathlib.Path, model: str) -> pathlib.Path:
    return list((version_dirs(root / model) or {}).values())[-1]


def _copy_bundle(root: pathlib.Path, source: str, name: str, prefix: str) -> list[str]:
    """A copy of bundle ``source`` as ``name`` with its labels renamed ``prefix + label``."""
    if not version_dirs(root / name):
        shutil.copytree(root / source, root / name)
    labels = []
    for version in (version_dirs(root / name) or {}).values():
        settings = version / ARTIFACT_DIR / SETTINGS_FILE
        meta = json.loads(settings.read_text())
        base = json.loads((_latest(root, source) / ARTIFACT_DIR / SETTINGS_FILE).read_text())["labels"]
        meta.update(model=name, labels=[prefix + label for label in base])
        settings.write_text(json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True))
        labels = meta["labels"]
    return labels


def _du_mb(root: pathlib.Path, names: list[str]) -> float:
    """Size of the served (latest) version of each model."""
    total = 0
    for name in names:
        for path in _latest(root, name).rglob("*"):
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


@dataclasses.dataclass
class Row:
    form: str
    labels: int
    models: int
    concurrency: int
    p50_ms: float
    p99_ms: float
    rps: float
    floor_p50_ms: float
    floor_rps: float
    labeler_cpu_ms: float
    modelserver_cpu_ms: float
    labeler_cpu_per_call_us: float
    floor_cpu_per_call_us: float
    labeler_rss_mb: float
    modelserver_rss_mb: float
    repo_mb: float
    errors: int
    # Of the errors, the Classify calls the Labeler's overload control refused.
    refused: int
    # The floor's failed fan-outs (its req/s counts the answered ones only).
    floor_errors: int


class Bench:
    def __init__(self, plan: Plan, work: pathlib.Path, log=print) -> None:
        self.plan, self.work, self.log = plan, work, log
        self.root = work / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        self.extras: dict[str, object] = {}
        # Per cell with failures: the first Classify and floor error, for the JSON.
        self.first_errors: dict[str, dict[str, str]] = {}

    # -- models ------------------------------------------------------------------

    def bundles(self) -> None:
        widths = sorted({*self.plan.sizes, *(n // 4 for n in self.plan.sizes)})
        for width in widths:
            name = f"bundle{width}"
            if version_dirs(self.root / name):
                continue
            corpus = self.work / f"corpus{width}"
            write_many_label_corpus(corpus, width, self.plan.synthetic_docs_per_label, seed=width)
            _, seconds = run_recipe(name, synthetic_labels(width), corpus / "train.jsonl", self.root)
            self.log(f"  trained {name} in {seconds:.0f} s")
            self.extras[f"train_s_{name}"] = round(seconds, 1)

    # -- serving -----------------------------------------------------------------

    def forms(self, n: int) -> list[tuple[str, list[str], str]]:
        """(form, model names, Labeler config body) for ``n`` labels."""
        out = []
        self._drop_stale_fleet(n)
        names = models.build_fleet(self.root, self.root / "fleet", n)
        body = "".join(
            f'labels {{ label: "{models.fleet_label(m)}" model: "{m}" timeout_ms: {LABEL_TIMEOUT_MS} }}\n'
            for m in names
        )
        out.append(("binary", [f"fleet/{m}" for m in names], body))
        quarter = [f"b{n}q{i}" for i in range(4)]
        for i, name in enumerate(quarter):
            _copy_bundle(self.root, f"bundle{n // 4}", name, f"q{i}-")
        out.append(
            (
                "4 bundles",
                quarter,
                "".join(f'bundles {{ model: "{m}" timeout_ms: {LABEL_TIMEOUT_MS} }}\n' for m in quarter),
            )
        )
        one = f'bundles {{ model: "bundle{n}" timeout_ms: {LABEL_TIMEOUT_MS} }}\n'
        out.append(("1 bundle", [f"bundle{n}"], one))
        return out

    def _drop_stale_fleet(self, n: int) -> None:
        """Fleet copies made from an older version of their sample model are
        removed (and copied again): every copy of a sample must serve the same
        version, or the Labeler could not share their features."""
        for name in models.fleet_names(n):
            copy = self.root / "fleet" / name
            sample = name.partition("_")[0]
            if version_dirs(copy) and _latest(copy.parent, name).name != _latest(self.root, sample).name:
                shutil.rmtree(copy)

    def measure(self, n: int, form: str, names: list[str], body: str, docs: list[list[str]]) -> None:
        run = self.work / "run" / f"{form.replace(' ', '-')}-{n}"
        run.mkdir(parents=True, exist_ok=True)
        served = [pathlib.PurePath(m).name for m in names]
        roots = {pathlib.PurePath(m).name: self.root / pathlib.PurePath(m).parent for m in names}
        model_root = next(iter(roots.values()))
        entries = "".join(
            f'  config {{ name: "{m}" base_path: "{roots[m] / m}" model_platform: "tensorflow" }}\n'
            for m in served
        )
        (run / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")
        server = procs.start_model_server(run / "models.config", run, START_TIMEOUT_S)
        labeler = None
        try:
            # The prediction cache off: the load repeats its 256 documents, and
            # the floor it is compared with always asks the model server.
            (run / "labeler.textproto").write_text(
                f'default_target: "{server.target}"\nmodel_root: "{model_root}"\n'
                "version_poll_interval_ms: 1000\nprediction_cache {\n  disabled: true\n}\n"
                f"{body}"
            )
            labeler = procs.start_labeler(run / "labeler.textproto", run, start_timeout_s=START_TIMEOUT_S)
            pipes = models.pipelines(model_root, served)
            for c in self.plan.concurrencies:
                floor = self._cell(
                    lambda: designs.FanoutFloor(server.target, pipes, docs, TIMEOUT_S), c, {"client": None}
                )
                cls = self._cell(
                    lambda: designs.Classify(labeler.target, docs, TIMEOUT_S),
                    c,
                    {"labeler": labeler.proc.pid, "modelserver": server.proc.pid},
                )
                calls = len(served)
                self.rows.append(
                    Row(
                        form,
                        n,
                        len(served),
                        c,
                        cls["p50"],
                        cls["p99"],
                        cls["rps"],
                        floor["p50"],
                        floor["rps"],
                        cls["cpu"]["labeler"],
                        cls["cpu"]["modelserver"],
                        round(1000 * cls["cpu"]["labeler"] / calls, 1),
                        round(1000 * floor["cpu"]["client"] / calls, 1),
                        round(labeler.rss_mb(), 1),
                        round(server.rss_mb(), 1),
                        round(_du_mb(model_root, served), 2),
                        cls["errors"],
                        cls["refused"],
                        floor["errors"],
                    )
                )
                self.log(f"  {form:9s} N={n:3d} c={c:2d}: {dataclasses.asdict(self.rows[-1])}")
                firsts = {k: cell["first_error"] for k, cell in (("classify", cls), ("floor", floor))}
                if any(firsts.values()):
                    cell_name = f"{form} N={n} c={c}"
                    self.first_errors[cell_name] = {k: v for k, v in firsts.items() if v}
                    self.log(f"    first errors: {self.first_errors[cell_name]}")
        finally:
            if labeler is not None:
                labeler.stop()
            server.stop()

    def _cell(self, make, c: int, pids: dict[str, int | None]) -> dict:
        async def go():
            design = make()
            try:
                procs_ = {k: psutil.Process(p) if p else psutil.Process() for k, p in pids.items()}
                # Warm-up; its failures (an overloaded server) are not the cell's.
                await load.run_async(design.call, c, self.plan.warmup, 2 * TIMEOUT_S, 0)
                before = {k: sum(p.cpu_times()[:2]) for k, p in procs_.items()}
                lat, errors, seconds = await load.run_async(
                    design.call, c, self.plan.requests, self.plan.budget_s, 0
                )
                after = {k: sum(p.cpu_times()[:2]) for k, p in procs_.items()}
            finally:
                await design.close()
            done = max(1, len(lat) + len(errors))
            cell = load.summarize("x", 0, c, lat, errors, seconds)
            return {
                "p50": cell.p50_ms,
                "p99": cell.p99_ms,
                "rps": cell.rps,
                "errors": len(errors),
                "refused": sum("RESOURCE_EXHAUSTED" in e for e in errors),
                "first_error": errors[0] if errors else "",
                "cpu": {k: round(1000 * (after[k] - before[k]) / done, 3) for k in procs_},
            }

        return asyncio.run(go())

    def runtime_rss(self) -> float:
        """The model server's RSS with no model: the runtime's own."""
        run = self.work / "run" / "empty"
        run.mkdir(parents=True, exist_ok=True)
        (run / "models.config").write_text("model_config_list {\n}\n")
        try:
            server = procs.start_model_server(run / "models.config", run)
        except (RuntimeError, TimeoutError) as exc:
            self.log(f"  no empty model server: {exc}")
            return 0.0
        try:
            return round(server.rss_mb(), 1)
        finally:
            server.stop()


def markdown(bench: Bench, command: str) -> str:
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Measured on a 2-core",
        "machine shared by the load generator, the Labeler and the model server (1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end): ratios come from one run.",
        "",
        "| form | labels | models | conc. | p50 ms | p99 ms | req/s | floor p50 ms | floor req/s | Labeler CPU ms/req | model server CPU ms/req | Labeler µs/call | floor µs/call | Labeler RSS MB | model server RSS MB | repo MB | errors (refused) | floor errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bench.rows:
        lines.append(
            f"| {r.form} | {r.labels} | {r.models} | {r.concurrency} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps:.0f} | "
            f"{r.floor_p50_ms:.2f} | {r.floor_rps:.0f} | {r.labeler_cpu_ms:.2f} | {r.modelserver_cpu_ms:.2f} | "
            f"{r.labeler_cpu_per_call_us:.0f} | {r.floor_cpu_per_call_us:.0f} | {r.labeler_rss_mb:.0f} | "
            f"{r.modelserver_rss_mb:.0f} | {r.repo_mb:.1f} | {r.errors} ({r.refused}) | {r.floor_errors} |"
        )
    lines += ["", *_f1_table(bench.extras.get("f1"))]
    lines += ["", "```json", json.dumps(bench.extras, ensure_ascii=False, indent=1), "```"]
    return "\n".join(lines) + "\n"


def _f1_table(f1: object) -> list[str]:
    """Per label: binary and bundle held-out F1 per seed, and their mean difference."""
    if not isinstance(f1, dict):
        return []
    seeds = ", ".join(str(s) for s in f1["seeds"])
    lines = [
        f"| label | binary F1 (seeds {seeds}) | bundle F1 (seeds {seeds}) | mean bundle - binary |",
        "|---|---|---|---|",
    ]
    for label, row in f1["labels"].items():
        binary = " / ".join(f"{v:.3f}" for v in row["binary_f1"])
        bundle = " / ".join(f"{v:.3f}" for v in row["bundle_f1"])
        lines.append(f"| {label} | {binary} | {bundle} | {row['mean_f1_diff']:+.3f} |")
    return lines


def update_docs(block: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    section = f"{BEGIN}\n{block}{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Bundles vs binary models (issue 16)\n\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bundles")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--skip-training-times", action="store_true")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    bench = Bench(plan, WORK / ("quick" if args.quick else "full"))
    started = time.perf_counter()
    bench.log(f"training the sample models (seeds {plan.seeds}) and bundles (cached after the first run)")
    # Seed 0's binary sample models are also the serving fleet's source.
    bench.extras["f1"] = f1_over_seeds(bench.work, plan.seeds, plan.sample_docs_per_label, bench.log)
    bench.bundles()
    if not args.skip_training_times:
        bench.log(
            f"training a {plan.timing_labels}-label bundle vs {plan.timing_labels} binary jobs through a Trainer"
        )
        bench.extras["training"] = trainer_timing(
            bench.work, plan.timing_labels, plan.synthetic_docs_per_label, bench.log
        )
    bench.extras["modelserver_runtime_rss_mb"] = bench.runtime_rss()
    docs = models.documents(limit=256) if not args.quick else [["电影", "导演"], ["口红", "色号"]]
    for n in plan.sizes:
        for form, names, body in bench.forms(n):
            bench.measure(n, form, names, body, docs)
    if bench.first_errors:
        bench.extras["first_errors"] = bench.first_errors
    command = "python -m bench.bundles" + (" --quick" if args.quick else "")
    block = markdown(bench, command)
    (bench.work / "bundles.md").write_text(block)
    (bench.work / "bundles.json").write_text(
        json.dumps(
            {"rows": [dataclasses.asdict(r) for r in bench.rows], **bench.extras},
            ensure_ascii=False,
            indent=1,
        )
    )
    print(block)
    if args.update_docs:
        update_docs(block)
    bench.log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
