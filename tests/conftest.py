"""Shared fixtures: a small generated corpus and a model root with the four
sample models trained small and exported, ready to serve.

TensorFlow is imported inside the fixtures only, so test modules that do not
use them do not pay for it.

- ``sample_corpus`` (session): ``SampleCorpus(train, test)`` paths of a small
  generated corpus (``FIXTURE_DOCS_PER_LABEL`` documents per label).
- ``trained_model_root`` (session): path of a model root holding ``movie``,
  ``beauty``, ``star`` and ``fashion``, one version each. Shared by every test:
  do not modify it; use ``model_root_copy`` for a private copy.
- ``trained_models`` (session): model name -> TrainResult (in-memory Keras
  model, pipeline, version, held-out scores) of those four.
- ``model_root_copy``: a private copy of ``trained_model_root`` in tmp_path.
- ``export_new_version``: ``export_new_version(model_root, model, retrain=False)
  -> version``; publishes one more version (strictly greater) of a sample model
  into ``model_root``, atomically. With ``retrain=True`` the weights differ
  (trained anew with another seed), so its probabilities differ too.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
from typing import NamedTuple

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURE_DOCS_PER_LABEL = 300
# Small enough for a 2-core machine shared with other test runs.
FIXTURE_PARAMS = {"epochs": 30, "batch_size": 32, "embedding_dim": 16, "threads": 1}
FIXTURE_LEARNING_RATE = 0.01


class SampleCorpus(NamedTuple):
    train: pathlib.Path
    test: pathlib.Path


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> SampleCorpus:
    from trainer.corpus import write_corpus

    train, test = write_corpus(
        tmp_path_factory.mktemp("corpus"), seed=0, docs_per_label=FIXTURE_DOCS_PER_LABEL
    )
    return SampleCorpus(train, test)


def train_small(corpus: SampleCorpus, model_root: pathlib.Path, model: str, seed: int = 0, **overrides):
    """Train one sample model small, in-process, and export it; a TrainResult."""
    from trainer.corpus import SAMPLE_MODELS
    from trainer.recipes.fasttext import TrainConfig, train

    cfg = TrainConfig(
        model=model,
        label=SAMPLE_MODELS[model],
        corpus=corpus.train,
        test_corpus=corpus.test,
        model_root=model_root,
        params={**FIXTURE_PARAMS, **overrides},
        seed=seed,
        learning_rate=FIXTURE_LEARNING_RATE,
    )
    return train(cfg, out=io.StringIO())


@pytest.fixture(scope="session")
def trained_models(sample_corpus: SampleCorpus, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from trainer.corpus import SAMPLE_MODELS

    root = tmp_path_factory.mktemp("models")
    return {model: train_small(sample_corpus, root, model) for model in SAMPLE_MODELS}


@pytest.fixture(scope="session")
def trained_model_root(trained_models: dict) -> pathlib.Path:
    # Every result was exported into the same root.
    return next(iter(trained_models.values())).version_dir.parent.parent


@pytest.fixture
def model_root_copy(trained_model_root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    dst = tmp_path / "models"
    shutil.copytree(trained_model_root, dst)
    return dst


@pytest.fixture
def export_new_version(
    trained_models: dict, sample_corpus: SampleCorpus, tmp_path_factory: pytest.TempPathFactory
):
    from trainer.corpus import SAMPLE_MODELS
    from trainer.recipes.export import export_version

    def export(model_root: str | pathlib.Path, model: str, retrain: bool = False) -> int:
        result = trained_models[model]
        if retrain:
            # Train into a scratch root, then publish into the caller's root.
            scratch = tmp_path_factory.mktemp("retrain")
            result = train_small(
                sample_corpus, scratch, model, seed=int(scratch.name.rsplit("retrain", 1)[-1] or 0) + 1
            )
            shutil.rmtree(scratch, ignore_errors=True)
        version, _ = export_version(result.model, result.pipeline, model_root, model, SAMPLE_MODELS[model])
        return version

    return export
