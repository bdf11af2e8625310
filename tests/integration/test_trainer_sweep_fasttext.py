"""A small real sweep: the fastText recipe through a real Trainer. Trials
train with --no-push and export nothing; the best configuration is trained
once more with validation before push, and only it is served."""

from __future__ import annotations

import time

import pytest

from modelspec.versions import versions
from tests.support.trainer_support import ScriptedLoad, make_config, running_trainer
from trainer.corpus import read_jsonl, write_corpus, write_jsonl
from trainer.gate import GatePolicy
from trainer.recipes import RECIPES
from trainer.v1 import trainer_pb2 as S

pytestmark = [pytest.mark.timeout(1200), pytest.mark.slow]
# settle_s=0: the scripted reading is the whole load (a just-admitted job is not
# expected to add its thread budget on top), so jobs run side by side below danger.
GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=0.2, settle_s=0
)


def test_a_small_fasttext_sweep_pushes_only_the_best_configuration(tmp_path):
    config = make_config(tmp_path, gate=GATE, registry=dict(RECIPES), default_recipe="fasttext")
    train, test = write_corpus(tmp_path / "corpus", seed=3, docs_per_label=100)
    write_jsonl(config.data_root / "train.jsonl", read_jsonl(train))
    write_jsonl(config.data_root / "held_out.jsonl", read_jsonl(test))
    spec = S.SweepSpec(
        model="movie",
        label="影视",
        corpus="train.jsonl",
        base_hyperparameters=S.Hyperparameters(epochs=6, batch_size=16, threads=1),
        search_space={
            "embedding_dim": S.SearchSpace(range=S.Range(min=2, max=32, scale=S.SCALE_LOG, grid_points=3))
        },
        algorithm=S.SEARCH_ALGORITHM_GRID,
        trial_budget=3,
        max_parallel_trials=2,
        metric="f1",
        direction=S.METRIC_DIRECTION_MAXIMIZE,
        validation=S.ValidationPolicy(held_out_corpus="held_out.jsonl", floors={"f1": 0.3}),
    )
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        sweep = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=30).sweep
        # Optuna's GridSampler: every point once, in a seeded order.
        assert sorted(t.hyperparameters.embedding_dim for t in sweep.trials) == [2, 8, 32]
        end = time.monotonic() + 900
        while sweep.state in (S.SWEEP_STATE_RUNNING, S.SWEEP_STATE_PUSHING):
            assert time.monotonic() < end, sweep
            time.sleep(0.5)
            sweep = trainer.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep.sweep_id), timeout=30).sweep
    assert sweep.state == S.SWEEP_STATE_SUCCEEDED, sweep.reason
    metrics = [t.metric for t in sweep.trials]
    assert all(t.state == S.JOB_STATE_SUCCEEDED for t in sweep.trials) and all(0 <= m <= 1 for m in metrics)
    # The real recipe reported its held-out f1 after every epoch (what a pruner judges).
    assert all(t.trial_state == S.TRIAL_STATE_COMPLETE and t.intermediate_values for t in sweep.trials)
    assert sweep.best.metric == max(metrics)
    final = sweep.final_job
    assert final.hyperparameters.embedding_dim == sweep.best.hyperparameters.embedding_dim
    # Only the final job was validated and pushed, on the held-out file the trials scored on.
    assert final.push.outcome == S.PUSH_OUTCOME_PUSHED and final.validation.floors["f1"] == pytest.approx(0.3)
    assert final.push.candidate_metrics.f1 == pytest.approx(sweep.best.metric, abs=0.05)
    assert versions(config.model_root / "movie") == [final.model_version]
