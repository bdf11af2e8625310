"""Validation before push through a real Trainer running the real fastText
recipe: a model worse than the served one is kept under rejected/ and the job
reports both versions' metrics; a better one is pushed; opting out pushes
regardless; bad policies are INVALID_ARGUMENT naming the field.

Every job scores its model and the served one on the same clean held-out
corpus (``validation.held_out_corpus``); the worse model comes from a corpus
whose training labels are shuffled, so it has nothing to learn from."""

from __future__ import annotations

import json
import random

import grpc
import pytest

from modelspec.versions import versions
from tests.integration.test_trainer_restart import wait_dead
from tests.support.trainer_support import ScriptedLoad, make_config, running_trainer, write_spec
from trainer.corpus import read_jsonl, write_corpus, write_jsonl
from trainer.recipes import RECIPES
from trainer.v1 import trainer_pb2 as S

pytestmark = [pytest.mark.timeout(1500), pytest.mark.slow]
# Small: a 2-core machine shared with other test runs.
HYPERPARAMETERS = S.Hyperparameters(epochs=8, batch_size=16, embedding_dim=16, threads=1)
DOCS_PER_LABEL = 120


@pytest.fixture
def config(tmp_path):
    config = make_config(
        tmp_path, registry=dict(RECIPES), default_recipe="fasttext", default_corpus="good.jsonl"
    )
    train, test = write_corpus(tmp_path / "corpus", seed=3, docs_per_label=DOCS_PER_LABEL)
    docs = list(read_jsonl(train))
    write_jsonl(config.data_root / "good.jsonl", docs)
    labels = [d["labels"] for d in docs]
    random.Random(0).shuffle(labels)
    write_jsonl(
        config.data_root / "shuffled.jsonl",
        [{"words": d["words"], "labels": ls} for d, ls in zip(docs, labels, strict=True)],
    )
    write_jsonl(config.data_root / "held_out.jsonl", read_jsonl(test))
    return config


def start(trainer, corpus: str, **validation) -> S.Job:
    policy = S.ValidationPolicy(held_out_corpus="held_out.jsonl", **validation)
    return trainer.start("movie", "影视", corpus=corpus, hyperparameters=HYPERPARAMETERS, validation=policy)


def test_worse_models_are_not_pushed_better_ones_are_and_opting_out_pushes_regardless(config):
    movie = config.model_root / "movie"
    with running_trainer(config) as trainer:
        # 1. The first version: nothing served, no floors by default: pushed.
        first = trainer.wait(start(trainer, "good.jsonl").job_id, timeout=600)
        assert first.state == S.JOB_STATE_SUCCEEDED, first.reason
        assert (
            first.validation.max_regression == pytest.approx(0.02)
            and first.validation.regression_metric == "f1"
        )
        assert first.push.outcome == S.PUSH_OUTCOME_PUSHED and first.push.served_version == 0
        assert "no version was served" in first.push.reason
        good_f1 = first.push.candidate_metrics.f1
        assert good_f1 >= 0.6, first.push
        assert versions(movie) == [first.model_version] == [first.push.candidate_version]

        # 2. Trained on shuffled labels: worse than the served version on the same documents.
        worse = trainer.wait(start(trainer, "shuffled.jsonl").job_id, timeout=600)
        assert worse.state == S.JOB_STATE_FAILED, worse.reason
        decision = worse.push
        assert decision.outcome == S.PUSH_OUTCOME_REJECTED and worse.model_version == 0
        assert decision.served_version == first.model_version
        # Both versions' metrics, the served one re-scored on this job's held-out documents
        # (the same file the first job used: the same score).
        assert decision.served_metrics.f1 == pytest.approx(good_f1, abs=1e-6)
        assert decision.served_metrics.documents == decision.candidate_metrics.documents > 0
        assert decision.candidate_metrics.f1 < good_f1 - 0.02
        assert worse.reason == decision.reason and worse.reason.startswith("not pushed: f1 ")
        assert "of served version" in decision.failures[0]
        # Kept for inspection, never where a model server looks.
        assert versions(movie) == [first.model_version]
        kept = config.model_root / decision.rejected_path
        assert kept.parent == movie / "rejected" and kept.name == str(decision.candidate_version)
        assert (kept / "saved_model.pb").is_file() and (kept / "assets.extra" / "features.json").is_file()
        assert json.loads((kept / "validation.json").read_text())["outcome"] == "REJECTED"
        assert not [p for p in movie.iterdir() if p.name.startswith(".tmp-")]
        assert any(line.startswith("validation ") for line in trainer.status(worse.job_id).log_tail)

        # 3. The same bad corpus, opting out: pushed regardless.
        unchecked = trainer.wait(start(trainer, "shuffled.jsonl", skip=True).job_id, timeout=600)
        assert unchecked.state == S.JOB_STATE_SUCCEEDED, unchecked.reason
        assert unchecked.push.outcome == S.PUSH_OUTCOME_PUSHED_UNVALIDATED and unchecked.validation.skip
        assert versions(movie) == [first.model_version, unchecked.model_version]

        # 4. A good model against that bad served version: better, so pushed.
        better = trainer.wait(start(trainer, "good.jsonl").job_id, timeout=600)
        assert better.state == S.JOB_STATE_SUCCEEDED, better.reason
        assert better.push.outcome == S.PUSH_OUTCOME_PUSHED
        assert better.push.served_version == unchecked.model_version
        assert better.push.candidate_metrics.f1 > better.push.served_metrics.f1 + 0.02
        assert versions(movie)[-1] == better.model_version

        for job in (first, worse, unchecked, better):
            print(f"{S.PushOutcome.Name(job.push.outcome)}: {job.push.reason}")  # shown with -s
        # The verdict survives in the store: List reads it back.
        listed = {j.job_id: j for j in trainer.stub.List(S.ListRequest(model="movie"), timeout=10).jobs}
        assert listed[worse.job_id].push == worse.push


@pytest.mark.parametrize(
    "policy,says",
    [
        (S.ValidationPolicy(floors={"f1": 1.5}), "validation.floors['f1'] must be in [0, 1], got 1.5"),
        (S.ValidationPolicy(floors={"precision": -0.5}), "validation.floors['precision'] must be in [0, 1]"),
        (S.ValidationPolicy(floors={"auc": 0.9}), "validation.floors has an unknown metric 'auc'"),
        (S.ValidationPolicy(max_regression=1.5), "validation.max_regression must be in [0, 1]"),
        (S.ValidationPolicy(regression_metric="accuracy"), "validation.regression_metric 'accuracy'"),
        (S.ValidationPolicy(skip=True, floors={"f1": 0.5}), "validation.skip pushes without validating"),
        (S.ValidationPolicy(held_out_corpus="../x.jsonl"), "validation.held_out_corpus: corpus '../x.jsonl'"),
    ],
)
def test_bad_validation_policies_are_invalid_arguments_naming_the_field(config, policy, says):
    with running_trainer(config) as trainer:
        with pytest.raises(grpc.RpcError) as err:
            trainer.start("movie", "影视", validation=policy)
        assert trainer.stub.List(S.ListRequest(), timeout=10).jobs == []  # nothing was queued
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in err.value.details()


# -- the Trainer's side, with the fake recipe (no TensorFlow) -------------------------


def test_a_rejected_version_fails_the_job_with_the_verdict_even_across_a_restart(tmp_path):
    config = make_config(tmp_path, stop_jobs_on_exit=False)
    rejects = write_spec(config.data_root, "rejects.json", reject=True)
    slowly = write_spec(config.data_root, "slowly.json", reject=True, epoch_s=3)
    with running_trainer(config, ScriptedLoad()) as trainer:
        done = trainer.wait(trainer.start(corpus=rejects).job_id)
        later = trainer.start("star", "明星", corpus=slowly, hyperparameters=S.Hyperparameters(epochs=1))
        pid = trainer.wait(later.job_id, [S.JOB_STATE_RUNNING]).pid
    wait_dead(pid)  # it ends while no Trainer runs
    assert done.state == S.JOB_STATE_FAILED and done.exit_code == 3 and done.model_version == 0
    assert done.push.outcome == S.PUSH_OUTCOME_REJECTED and done.reason == done.push.reason
    assert done.push.candidate_metrics.f1 == pytest.approx(0.343)
    assert done.push.served_metrics.f1 == pytest.approx(0.847) and done.push.served_version == 1
    assert (config.model_root / done.push.rejected_path).is_dir()
    assert not done.HasField("validation")  # the fake recipe does not validate: no policy was given
    # The second one is judged while no Trainer runs; the next one reads the verdict from its log.
    with running_trainer(config, ScriptedLoad()) as trainer:
        judged = trainer.wait(later.job_id, timeout=60)
    assert judged.state == S.JOB_STATE_FAILED and "lost" not in judged.reason, judged.reason
    assert judged.push.outcome == S.PUSH_OUTCOME_REJECTED and judged.reason == judged.push.reason
