"""Sweep benchmark: random search without pruning vs TPE with pruning (and
TPE without pruning, to see each part's share) at the same trial budget, on
the movie label of the sample corpus and on a 16-label bundle of the
synthetic corpus, over seeds (``python -m bench.sweep [--quick] [--json]
[--plot FILE.png] [--storage]``).

Every sweep runs through the real Trainer (in this process; trials are
real fastText jobs, one TensorFlow thread each, one trial at a time, the
gate left open so the shared machine's load does not decide admissions).
When its trials are done the sweep is killed instead of training the best
configuration again: the final job is the same for every search and not
what is compared. Per sweep it records, in the order trials end, each
trial's held-out F1 (pruned trials have none), the trial-epochs run and the
CPU seconds of the trial processes (``RUSAGE_CHILDREN`` of this process,
read as each trial ends). Then per problem and seed: the best F1 each search
reached, its compute, and the compute it needed to come within 0.005 F1 of
random search's best; the target is TPE with pruning needing at most half
random search's compute for that, median over seeds.

``--storage`` measures Optuna's two storages for a sweep's study (a journal
file and SQLite through RDBStorage): opening a study, and asking, reporting
five epochs and telling 30 trials.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import tempfile
import time

from bench.trainer import FixedLoad, ServerThread

TOLERANCE = 0.005
CONFIGS = {
    "random": dict(algorithm="RANDOM", pruner="NONE"),
    "tpe": dict(algorithm="TPE", pruner="NONE"),
    "tpe+pruning": dict(algorithm="TPE", pruner="MEDIAN"),
}


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_problems(data: pathlib.Path, docs_per_label: int) -> dict[str, dict]:
    """The two problems: their corpus (relative to ``data``) and label(s)."""
    from trainer.corpus import synthetic_labels, write_corpus, write_many_label_corpus

    movie, _ = write_corpus(data / "sample", seed=0, docs_per_label=docs_per_label)
    write_many_label_corpus(data / "bundle16", 16, max(10, docs_per_label // 3), seed=16)
    return {
        "movie": {"corpus": str(movie.relative_to(data)), "label": "影视"},
        "bundle16": {"corpus": "bundle16/train.jsonl", "labels": synthetic_labels(16)},
    }


def sweep_spec(problem: dict, config: dict, seed: int, budget: int, epochs: int):
    from trainer.v1 import trainer_pb2 as S

    return S.SweepSpec(
        model="bench",
        label=problem.get("label", ""),
        labels=problem.get("labels", []),
        corpus=problem["corpus"],
        base_hyperparameters=S.Hyperparameters(epochs=epochs, threads=1),
        search_space={
            "embedding_dim": S.SearchSpace(range=S.Range(min=2, max=64, scale=S.SCALE_LOG)),
            "batch_size": S.SearchSpace(values=S.ValueList(values=[8, 16, 32, 64, 128])),
            "min_ngram_count": S.SearchSpace(range=S.Range(min=1, max=4)),
        },
        algorithm=S.SearchAlgorithm.Value("SEARCH_ALGORITHM_" + config["algorithm"]),
        seed=seed,
        trial_budget=budget,
        max_parallel_trials=1,
        startup_trials=max(2, budget // 3),
        metric="f1",
        direction=S.METRIC_DIRECTION_MAXIMIZE,
        pruner=S.Pruner(
            kind=S.PrunerKind.Value("PRUNER_KIND_" + config["pruner"]), startup_trials=2, warmup_epochs=2
        ),
        validation=S.ValidationPolicy(skip=True),
    )


def run_sweep(server, spec) -> dict:
    """One sweep to the end of its trials; what each trial got and cost, in the order they ended."""
    from trainer.v1 import trainer_pb2 as S

    ended = (S.TRIAL_STATE_COMPLETE, S.TRIAL_STATE_PRUNED, S.TRIAL_STATE_FAILED)
    cpu0, started = _cpu_children(), time.perf_counter()
    sweep = server.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=60).sweep
    done: dict[int, dict] = {}
    while True:
        sweep = server.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep.sweep_id), timeout=60).sweep
        for t in sweep.trials:
            if t.index not in done and t.trial_state in ended:
                done[t.index] = {
                    "index": t.index,
                    "state": S.TrialState.Name(t.trial_state).removeprefix("TRIAL_STATE_"),
                    "f1": round(t.metric, 4) if t.HasField("metric") else None,
                    "cpu_s": round(_cpu_children() - cpu0, 2),
                    "job_id": t.job_id,
                    "params": {k: getattr(t.hyperparameters, k) for k in sorted(spec.search_space)},
                }
        if sweep.state != S.SWEEP_STATE_RUNNING:
            break
        time.sleep(0.25)
    if sweep.state == S.SWEEP_STATE_PUSHING:  # the final job is not compared: stop it
        server.stub.KillSweep(S.KillSweepRequest(sweep_id=sweep.sweep_id), timeout=60)
    jobs = {j.job_id: j for j in server.stub.List(S.ListRequest(sweep_id=sweep.sweep_id), timeout=60).jobs}
    trials = sorted(done.values(), key=lambda t: t["cpu_s"])
    spent = 0
    for t in trials:
        t["epochs"] = jobs[t["job_id"]].progress.epoch if t["job_id"] in jobs else 0
        spent += t["epochs"]
        t["trial_epochs"] = spent
    return {
        "sweep_id": sweep.sweep_id,
        "state": S.SweepState.Name(sweep.state),
        "reason": sweep.reason,
        "wall_s": round(time.perf_counter() - started, 1),
        "trials": trials,
        "best_f1": max((t["f1"] for t in trials if t["f1"] is not None), default=None),
        "trial_epochs": spent,
        "cpu_s": trials[-1]["cpu_s"] if trials else 0.0,
    }


def to_reach(run: dict, target: float) -> dict | None:
    """The compute spent when the best F1 so far first came within TOLERANCE of ``target``."""
    for t in run["trials"]:
        if t["f1"] is not None and t["f1"] >= target - TOLERANCE:
            return {"trial_epochs": t["trial_epochs"], "cpu_s": t["cpu_s"]}
    return None


def summarise(runs: dict) -> dict:
    """Per problem: per seed each search's best, compute and compute to
    random's best; medians over seeds; the target's verdict."""
    out = {}
    for problem, by_seed in runs.items():
        rows, ratios_epochs, ratios_cpu = [], [], []
        for seed, by_config in by_seed.items():
            target = by_config["random"]["best_f1"]
            random_reach = to_reach(by_config["random"], target)
            row = {"seed": seed, "random_best": target}
            for name, run in by_config.items():
                reach = to_reach(run, target) if target is not None else None
                row[name] = {
                    "best_f1": run["best_f1"],
                    "trial_epochs": run["trial_epochs"],
                    "cpu_s": run["cpu_s"],
                    "pruned": sum(t["state"] == "PRUNED" for t in run["trials"]),
                    "to_reach": reach,
                }
            reach = row["tpe+pruning"]["to_reach"]
            if random_reach and reach:
                ratios_epochs.append(reach["trial_epochs"] / random_reach["trial_epochs"])
                ratios_cpu.append(reach["cpu_s"] / random_reach["cpu_s"])
            else:
                ratios_epochs.append(float("inf"))
                ratios_cpu.append(float("inf"))
            rows.append(row)
        median_epochs = statistics.median(ratios_epochs)
        median_cpu = statistics.median(ratios_cpu)
        out[problem] = {
            "seeds": rows,
            "median_ratio_trial_epochs": round(median_epochs, 3),
            "median_ratio_cpu": round(median_cpu, 3),
            "target_met": median_cpu <= 0.5 and median_epochs <= 0.5,
        }
    return out


def measure_storage(tmp: pathlib.Path, trials: int = 30) -> dict:
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    makers = {
        "journal": lambda: JournalStorage(JournalFileBackend(str(tmp / "study.journal"))),
        "sqlite": lambda: RDBStorage(f"sqlite:///{tmp / 'study.sqlite3'}"),
    }
    out = {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        storage = make()
        t1 = time.perf_counter()
        study = optuna.create_study(
            storage=storage, study_name="s", sampler=optuna.samplers.TPESampler(seed=1)
        )
        dist = {"d": optuna.distributions.IntDistribution(2, 64, log=True)}
        for _ in range(trials):
            trial = study.ask(dist)
            for epoch in range(1, 6):
                trial.report(0.5 + epoch / 100, epoch)
                trial.should_prune()
            study.tell(trial, 0.6)
        t2 = time.perf_counter()
        optuna.load_study(study_name="s", storage=make()).get_trials()
        t3 = time.perf_counter()
        out[name] = {
            "open_ms": round((t1 - t0) * 1000, 1),
            f"{trials}_trials_s": round(t2 - t1, 3),
            "reopen_ms": round((t3 - t2) * 1000, 1),
        }
    return out


def plot_run(server, sweep_id: str, out: pathlib.Path) -> None:
    from trainer import sweep_plot
    from trainer.v1 import trainer_pb2 as S

    sweep = server.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep_id), timeout=60).sweep
    sweep_plot.plot(sweep, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="movie only, one seed, 4 trials of 3 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=8, help="trials per sweep (default 8)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (default 6)")
    parser.add_argument(
        "--docs", type=int, default=120, help="sample corpus documents per label (default 120)"
    )
    parser.add_argument("--problems", default="movie,bundle16")
    parser.add_argument("--plot", default="", help="draw the first TPE+pruning sweep to this PNG")
    parser.add_argument("--storage", action="store_true", help="only measure Optuna's two storages")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.storage:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_storage(pathlib.Path(tmp)), indent=2))
        return 0
    if args.quick:
        args.seeds, args.budget, args.epochs, args.problems = 1, 4, 3, "movie"

    from trainer.config import TrainerConfig
    from trainer.gate import GatePolicy

    started = time.perf_counter()
    load_before = os.getloadavg()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        problems = write_problems(root / "data", args.docs)
        config = TrainerConfig(
            data_root=root / "data",
            model_root=root / "models",
            state_dir=root / "state",
            port=0,
            gate=GatePolicy(cpu_normal=101, cpu_danger=101, memory_normal=101, memory_danger=101, warmup_s=0),
            stop_jobs_on_exit=True,
            default_corpus=problems["movie"]["corpus"],
        )
        server = ServerThread(config, FixedLoad(cpu=10))
        try:
            plotted = ""
            for problem in args.problems.split(","):
                for seed in range(args.seeds):
                    for name, cfg in CONFIGS.items():
                        spec = sweep_spec(problems[problem], cfg, seed, args.budget, args.epochs)
                        run = run_sweep(server, spec)
                        runs.setdefault(problem, {}).setdefault(seed, {})[name] = run
                        print(
                            f"{problem} seed {seed} {name:12s} best f1 {run['best_f1']} "
                            f"{run['trial_epochs']} trial-epochs {run['cpu_s']:.0f} CPU s "
                            f"({sum(t['state'] == 'PRUNED' for t in run['trials'])} pruned, {run['wall_s']:.0f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                        if args.plot and not plotted and name == "tpe+pruning":
                            plot_run(server, run["sweep_id"], pathlib.Path(args.plot))
                            plotted = run["sweep_id"]
        finally:
            server.close()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "budget": args.budget,
        "epochs": args.epochs,
        "docs_per_label": args.docs,
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summarise(runs),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for problem, s in report["summary"].items():
            print(
                f"{problem}: TPE+pruning / random compute to random's best (median over seeds): "
                f"{s['median_ratio_trial_epochs']}x trial-epochs, {s['median_ratio_cpu']}x CPU "
                f"-> target (<= 0.5x) {'met' if s['target_met'] else 'not met'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
