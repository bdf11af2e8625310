"""Training for the bundles benchmark (bench/bundles.py), without TensorFlow in
this process: models are trained by the recipe's command line or by a real
Trainer, each in its own process.

- ``run_recipe``: the fastText recipe's command line (what a Trainer job runs).
- ``f1_over_seeds``: per-label held-out F1 of the four binary sample models vs
  one bundle of the four sample labels, on several seeds of the sample corpus.
- ``trainer_timing``: an N-label bundle job vs N binary jobs through a real
  Trainer (``python -m trainer.cli serve``, its default load gate).

    python -m bench.bundle_training f1 [--quick] [--retrain-bundle]
    python -m bench.bundle_training trainer-timing --labels 8

run the pieces alone (the first caches its models under var/bench/bundles/).
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
from collections.abc import Callable, Sequence

import grpc

from bench import models, procs
from modelspec.report import ResultReport, parse_line
from trainer.corpus import SAMPLE_MODELS, synthetic_labels, write_corpus, write_many_label_corpus
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

WORK = models.CACHE / "bundles"
# Serving bundles and the training-time comparison: a short training.
EPOCHS, THREADS = 5, 1
TRAIN_PARAMS = ["--epochs", str(EPOCHS), "--threads", str(THREADS)]
# The F1 comparison trains both forms as a real job would: the recipe's default
# epochs with early stopping.
QUALITY_PARAMS = ["--epochs", "20"]
SAMPLE_BUNDLE = "samples"

Log = Callable[[str], object]


def run_recipe(
    model: str,
    labels: Sequence[str],
    corpus: pathlib.Path,
    root: pathlib.Path,
    test: pathlib.Path | None = None,
    params: Sequence[str] = TRAIN_PARAMS,
) -> tuple[dict, float]:
    """Run the fastText recipe's command line; its result line and wall seconds."""
    argv = [sys.executable, "-m", "trainer.recipes.fasttext", "--model", model]
    for label in labels:
        argv += ["--label", label]
    argv += ["--corpus", str(corpus), "--model-root", str(root), *params]
    if test is not None:
        argv += ["--test-corpus", str(test)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=models.REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training {model} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    # The project's one reader of report lines; to_json gives back every field written.
    reports = (parse_line(line) for line in done.stdout.splitlines())
    result = next(r for r in reports if isinstance(r, ResultReport))
    return result.to_json(), seconds


# -- per-label F1 over seeds -------------------------------------------------------


def _scores(result: dict) -> dict[str, float]:
    return {k: result[k] for k in ("precision", "recall", "f1")} | {"epochs_run": result["epochs_run"]}


def train_seed(
    seed: int, corpus: pathlib.Path, root: pathlib.Path, docs_per_label: int, forms: Sequence[str], log: Log
) -> dict[str, dict[str, dict[str, float]]]:
    """The four binary sample models and/or the bundle of their labels (``forms``)
    on seed ``seed`` of the sample corpus: form -> label -> held-out scores."""
    if not (corpus / "train.jsonl").exists():
        write_corpus(corpus, seed=seed, docs_per_label=docs_per_label)
    train, test = corpus / "train.jsonl", corpus / "test.jsonl"
    out: dict[str, dict[str, dict[str, float]]] = {}
    if "binary" in forms:
        out["binary"] = {}
        for model, label in SAMPLE_MODELS.items():
            result, seconds = run_recipe(model, [label], train, root, test, QUALITY_PARAMS)
            out["binary"][label] = _scores(result)
            log(f"  seed {seed} binary {label}: {out['binary'][label]} in {seconds:.0f} s")
    if "bundle" in forms:
        labels = list(SAMPLE_MODELS.values())
        result, seconds = run_recipe(SAMPLE_BUNDLE, labels, train, root, test, QUALITY_PARAMS)
        out["bundle"] = {
            label: {**result["label_metrics"][label], "epochs_run": result["epochs_run"]} for label in labels
        }
        log(f"  seed {seed} bundle: {out['bundle']} in {seconds:.0f} s")
    return out


def f1_over_seeds(
    work: pathlib.Path,
    seeds: Sequence[int],
    docs_per_label: int,
    log: Log = print,
    retrain_bundle: bool = False,
) -> dict:
    """Per label: binary and bundle F1 (and recall) per seed, and the mean of
    bundle minus binary F1. Seed 0's models are trained into ``work``/models
    (the serving cells copy its binary models); results are cached per seed."""
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        root = work / "models" if seed == 0 else work / "quality" / f"seed{seed}" / "models"
        cache = work / "quality" / f"seed{seed}.json"
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if retrain_bundle:
            cached.pop("bundle", None)
        missing = [form for form in ("binary", "bundle") if form not in cached]
        if missing:
            corpus = work / "sample-corpus" if seed == 0 else work / "quality" / f"seed{seed}" / "corpus"
            cached |= train_seed(seed, corpus, root, docs_per_label, missing, log)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(cached, ensure_ascii=False, indent=1))
        per_seed[seed] = cached
    table = {}
    for label in SAMPLE_MODELS.values():
        row: dict[str, list[float] | float] = {}
        for form in ("binary", "bundle"):
            for metric in ("f1", "recall", "precision"):
                row[f"{form}_{metric}"] = [round(per_seed[s][form][label][metric], 3) for s in seeds]
        diffs = [per_seed[s]["bundle"][label]["f1"] - per_seed[s]["binary"][label]["f1"] for s in seeds]
        row["mean_f1_diff"] = round(sum(diffs) / len(diffs), 3)
        table[label] = row
    epochs = {
        form: [per_seed[s][form][next(iter(SAMPLE_MODELS.values()))]["epochs_run"] for s in seeds]
        for form in ("binary", "bundle")
    }
    return {
        "seeds": list(seeds),
        "docs_per_label": docs_per_label,
        "labels": table,
        "bundle_epochs_run": epochs["bundle"],
    }


# -- training wall time through the Trainer ------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinishedJob:
    model: str
    created_s: float  # Trainer clock, epoch seconds
    started_s: float  # the last attempt's start
    ended_s: float
    run_s: float  # the Trainer's run time, summed over attempts
    attempts: int


_ENDED = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_KILLED)


def _seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


def _wait_all(stub, jobs: dict[str, str], trainer: procs.ServerProcess, log: Log) -> list[FinishedJob]:
    """Poll until every job ended; any that did not succeed fails the bench.
    One List call a second, not a Status per job: the polling's own CPU must
    not move the load gate's reading."""
    ended: dict[str, trainer_pb2.Job] = {}
    ids = {job_id: model for model, job_id in jobs.items()}
    last = time.monotonic()
    while len(ended) < len(jobs):
        if trainer.proc.poll() is not None:
            raise RuntimeError(f"the Trainer exited with {trainer.proc.returncode}; see {trainer.log_path}")
        listed = stub.List(trainer_pb2.ListRequest(states=_ENDED, limit=1000), timeout=30).jobs
        ended |= {ids[job.job_id]: job for job in listed if job.job_id in ids}
        if time.monotonic() - last > 30:
            log(f"    {len(ended)}/{len(jobs)} jobs ended")
            last = time.monotonic()
        time.sleep(1.0)
    failed = {m: j for m, j in ended.items() if j.state != trainer_pb2.JOB_STATE_SUCCEEDED}
    if failed:
        reasons = "; ".join(
            f"{m}: {trainer_pb2.JobState.Name(j.state)} {j.reason}" for m, j in failed.items()
        )
        raise RuntimeError(f"{len(failed)} training job(s) did not succeed: {reasons}")
    return [
        FinishedJob(
            m,
            _seconds(j.create_time),
            _seconds(j.start_time),
            _seconds(j.end_time),
            j.run_seconds,
            j.attempts,
        )
        for m, j in ended.items()
    ]


def _most_at_once(jobs: Sequence[FinishedJob]) -> int:
    events = sorted([(j.started_s, 1) for j in jobs] + [(j.ended_s, -1) for j in jobs])
    running = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def trainer_timing(work: pathlib.Path, n: int, docs_per_label: int, log: Log = print) -> dict:
    """One ``n``-label bundle job, then ``n`` binary jobs submitted at once,
    through a real Trainer with its default load gate; same corpus and params."""
    labels = synthetic_labels(n)
    params = trainer_pb2.Hyperparameters(epochs=EPOCHS, threads=THREADS)
    # Pushed without validation: the comparison is training, and a synthetic
    # model's floors are not the question.
    policy = trainer_pb2.ValidationPolicy(skip=True)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-", dir=work) as tmp:
        base = pathlib.Path(tmp)
        data = base / "data"
        write_many_label_corpus(data / "timing", n, docs_per_label, seed=n)
        port = procs.free_port()
        argv = [
            sys.executable,
            "-m",
            "trainer.cli",
            "serve",
            "--port",
            str(port),
            "--data-root",
            str(data),
            "--model-root",
            str(base / "models"),
            "--state-dir",
            str(base / "state"),
            "--stop-jobs-on-exit",
            "--log-level",
            "WARNING",
        ]
        trainer = procs.ServerProcess("trainer", argv, port, "trainer.v1.Trainer", work / "run" / "trainer")
        try:
            with grpc.insecure_channel(trainer.target) as channel:
                stub = trainer_pb2_grpc.TrainerStub(channel)

                def start(model: str, job_labels: list[str]) -> str:
                    request = trainer_pb2.StartRequest(
                        model=model,
                        corpus="timing/train.jsonl",
                        hyperparameters=params,
                        validation=policy,
                    )
                    if len(job_labels) > 1:
                        request.labels.extend(job_labels)
                    else:
                        request.label = job_labels[0]
                    return stub.Start(request, timeout=30).job.job_id

                log(f"  Trainer: a {n}-label bundle job")
                (bundle,) = _wait_all(stub, {"bundle": start("bundle", labels)}, trainer, log)
                log(f"  Trainer: {n} binary jobs at once")
                jobs = {f"label-{j:03d}": start(f"label-{j:03d}", [label]) for j, label in enumerate(labels)}
                binary = _wait_all(stub, jobs, trainer, log)
        finally:
            trainer.stop()
    bundle_wall = bundle.ended_s - bundle.created_s
    binary_wall = max(j.ended_s for j in binary) - min(j.created_s for j in binary)
    binary_run = sum(j.run_s for j in binary)
    # Wall times include the waits at the load gate, which other work on the
    # machine lengthens; the run times are the jobs' own.
    result = {
        "labels": n,
        "docs_per_label": docs_per_label,
        "bundle_wall_s": round(bundle_wall, 1),
        "bundle_run_s": round(bundle.run_s, 1),
        "bundle_queued_s": round(bundle.started_s - bundle.created_s, 1),
        "binary_jobs_wall_s": round(binary_wall, 1),
        "binary_job_mean_run_s": round(binary_run / len(binary), 1),
        "binary_run_s_total": round(binary_run, 1),
        "binary_most_at_once": _most_at_once(binary),
        "binary_attempts": sum(j.attempts for j in binary),
        "ratio": round(bundle_wall / binary_wall, 4),
        "run_ratio": round(bundle.run_s / binary_run, 4),
    }
    log(f"  training: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bundle_training")
    sub = parser.add_subparsers(dest="command", required=True)
    f1 = sub.add_parser("f1", help="per-label F1 of the bundle vs the binary models over seeds")
    f1.add_argument("--quick", action="store_true")
    f1.add_argument("--retrain-bundle", action="store_true", help="train the bundles again (keep binary)")
    timing = sub.add_parser("trainer-timing", help="bundle vs binary jobs through a Trainer")
    timing.add_argument("--labels", type=int, default=8)
    timing.add_argument("--docs-per-label", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "f1":
        work = WORK / ("quick" if args.quick else "full")
        seeds, docs = ((0, 1), 60) if args.quick else ((0, 1, 2), 500)
        print(
            json.dumps(
                f1_over_seeds(work, seeds, docs, retrain_bundle=args.retrain_bundle),
                ensure_ascii=False,
                indent=1,
            )
        )
    else:
        work = WORK / "timing"
        work.mkdir(parents=True, exist_ok=True)
        trainer_timing(work, args.labels, args.docs_per_label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
