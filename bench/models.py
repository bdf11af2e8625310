"""Models for the benchmarks: the four sample models trained once into a cache
(``var/bench/models``), a *fleet* of K models made by copying them under other
names (movie, beauty, star, fashion, movie_2, beauty_2, ...), and the files the
old design read on every request.

Training runs the real recipe entry point in a subprocess, so the bench process
(the load generator) never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

from modelspec.features import ARTIFACT_DIR, SETTINGS_FILE, FeaturePipeline
from modelspec.versions import version_dirs
from trainer.corpus import SAMPLE_MODELS, read_jsonl, write_corpus

REPO = pathlib.Path(__file__).resolve().parent.parent
CACHE = REPO / "var" / "bench"
# Small but realistic: the recipe's defaults except fewer documents and epochs.
BENCH_DOCS_PER_LABEL = 500
BENCH_TRAIN_PARAMS = {"epochs": 5, "threads": 1}


def _versions(model_dir: pathlib.Path) -> list[pathlib.Path]:
    return list((version_dirs(model_dir) or {}).values())


def corpus_path(cache: pathlib.Path = CACHE) -> pathlib.Path:
    """The bench corpus (generated once); its test split feeds the load."""
    train = cache / "corpus" / "train.jsonl"
    if not train.exists():
        write_corpus(cache / "corpus", seed=0, docs_per_label=BENCH_DOCS_PER_LABEL)
    return train


def documents(cache: pathlib.Path = CACHE, limit: int = 512) -> list[list[str]]:
    """Word lists for requests: the held-out documents of the bench corpus."""
    corpus_path(cache)
    docs = [d["words"] for d in read_jsonl(cache / "corpus" / "test.jsonl")]
    return docs[:limit]


def trained_root(cache: pathlib.Path = CACHE, log=print) -> pathlib.Path:
    """A model root with the four sample models; trains the missing ones."""
    root = cache / "models"
    train = corpus_path(cache)
    for model, label in SAMPLE_MODELS.items():
        if _versions(root / model):
            continue
        log(f"training sample model {model} into {root} (once; cached)")
        argv = [
            sys.executable,
            "-m",
            "trainer.recipes.fasttext",
            "--model",
            model,
            "--label",
            label,
            "--corpus",
            str(train),
            "--model-root",
            str(root),
        ]
        for name, value in BENCH_TRAIN_PARAMS.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env)
    return root


def fleet_names(k: int) -> list[str]:
    """The first ``k`` fleet model names: the samples, then their copies."""
    base = list(SAMPLE_MODELS)
    return [base[i % 4] if i < 4 else f"{base[i % 4]}_{i // 4 + 1}" for i in range(k)]


def fleet_label(name: str) -> str:
    sample, _, copy = name.partition("_")
    return SAMPLE_MODELS[sample] + (f"_{copy}" if copy else "")


def build_fleet(source: pathlib.Path, dest: pathlib.Path, k: int) -> list[str]:
    """Copy the sample models of ``source`` into ``dest`` as ``k`` models; a
    copy's features.json names its new model and label (the Labeler checks)."""
    names = fleet_names(k)
    for name in names:
        if _versions(dest / name):
            continue
        sample = name.partition("_")[0]
        shutil.copytree(source / sample, dest / name, dirs_exist_ok=True)
        for version in _versions(dest / name):
            settings = version / ARTIFACT_DIR / SETTINGS_FILE
            meta = json.loads(settings.read_text())
            meta.update(model=name, label=fleet_label(name))
            settings.write_text(json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True))
    return names


def latest_version_dir(model_root: pathlib.Path, name: str) -> pathlib.Path:
    return _versions(model_root / name)[-1]


def write_model_server_config(model_root: pathlib.Path, names: list[str], path: pathlib.Path) -> pathlib.Path:
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{model_root / n}"\n    model_platform: "tensorflow"\n  }}\n'
        for n in names
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def write_labeler_config(
    model_root: pathlib.Path,
    names: list[str],
    target: str,
    path: pathlib.Path,
    coalescing: bool,
    cache: bool = False,
    overload: str = "",
) -> pathlib.Path:
    """A LabelerConfig text proto; ``coalescing`` turns request coalescing on,
    ``cache`` the prediction cache (off: the benchmarks repeat documents, and
    measure the models, not the cache, unless they say so); ``overload`` is
    the body of an ``overload { ... }`` block (empty: the defaults)."""
    labels = "".join(
        f'labels {{\n  label: "{fleet_label(n)}"\n  model: "{n}"\n  timeout_ms: 10000\n}}\n' for n in names
    )
    path.write_text(
        f'default_target: "{target}"\nmodel_root: "{model_root}"\nversion_poll_interval_ms: 1000\n'
        f"coalescing {{\n  enabled: {'true' if coalescing else 'false'}\n}}\n"
        f"prediction_cache {{\n  disabled: {'false' if cache else 'true'}\n}}\n"
        f"overload {{\n{overload}}}\n{labels}"
    )
    return path


def pipelines(model_root: pathlib.Path, names: list[str]) -> dict[str, FeaturePipeline]:
    return {n: FeaturePipeline.load(latest_version_dir(model_root, n))[0] for n in names}
