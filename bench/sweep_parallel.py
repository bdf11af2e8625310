"""Sweep benchmark: the wall time of one 6-trial fastText sweep (a grid of
embedding_dim x batch_size on a small generated corpus, trials plus the
final validated training) with 1 and with 2 trials in parallel, run one
after the other in this process (``python -m bench.sweep_parallel [--quick] [--json]``).

Real training (the fasttext recipe, one TensorFlow thread per job) through
the real Trainer; the gate is left open (thresholds above 100%) so the
numbers show what parallel trials buy, not the shared machine's load
deciding admissions. On a machine shared with other work the figures move
with it: compare the two only as measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time

from bench.trainer import FixedLoad, ServerThread


def run_sweep(root: pathlib.Path, parallel: int, docs_per_label: int, epochs: int) -> dict:
    from trainer.config import TrainerConfig
    from trainer.corpus import write_corpus
    from trainer.gate import GatePolicy
    from trainer.v1 import trainer_pb2 as S

    train, _ = write_corpus(root / "data" / "sample", seed=0, docs_per_label=docs_per_label)
    config = TrainerConfig(
        data_root=root / "data",
        model_root=root / "models",
        state_dir=root / "state",
        port=0,
        gate=GatePolicy(cpu_normal=101, cpu_danger=101, memory_normal=101, memory_danger=101, warmup_s=0),
        stop_jobs_on_exit=True,
        default_corpus=str(train.relative_to(root / "data")),
    )
    server = ServerThread(config, FixedLoad(cpu=10))
    try:
        spec = S.SweepSpec(
            model="movie",
            label="影视",
            base_hyperparameters=S.Hyperparameters(epochs=epochs, threads=1),
            search_space={
                "embedding_dim": S.SearchSpace(values=S.ValueList(values=[8, 16, 32])),
                "batch_size": S.SearchSpace(values=S.ValueList(values=[32, 64])),
            },
            algorithm=S.SEARCH_ALGORITHM_GRID,
            trial_budget=6,
            max_parallel_trials=parallel,
            metric="f1",
            direction=S.METRIC_DIRECTION_MAXIMIZE,
        )
        started = time.perf_counter()
        sweep = server.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=30).sweep
        trials_done = None
        while sweep.state in (S.SWEEP_STATE_RUNNING, S.SWEEP_STATE_PUSHING):
            time.sleep(0.5)
            sweep = server.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep.sweep_id), timeout=30).sweep
            if trials_done is None and sweep.state == S.SWEEP_STATE_PUSHING:
                trials_done = time.perf_counter() - started
        total = time.perf_counter() - started
        return {
            "parallel": parallel,
            "state": S.SweepState.Name(sweep.state),
            "trials_s": round(trials_done or total, 1),
            "total_s": round(total, 1),
            "best": {"index": sweep.best.index, "f1": round(sweep.best.metric, 4)},
            "metrics": [round(t.metric, 4) for t in sweep.trials],
        }
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep_parallel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller corpus and fewer epochs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    docs, epochs = (60, 3) if args.quick else (150, 8)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (1, 2):
            results.append(run_sweep(pathlib.Path(tmp) / f"p{parallel}", parallel, docs, epochs))
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "corpus_docs_per_label": docs,
        "epochs": epochs,
        "runs": results,
        "speedup_2_vs_1": round(results[0]["total_s"] / results[1]["total_s"], 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            print(
                f"{r['parallel']} parallel: trials {r['trials_s']:.1f}s, sweep {r['total_s']:.1f}s ({r['state']}), "
                f"best trial {r['best']['index']} f1 {r['best']['f1']:.3f}"
            )
        print(f"2 vs 1 parallel: {report['speedup_2_vs_1']:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
