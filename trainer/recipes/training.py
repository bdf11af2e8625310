"""The fastText training loop: fit the features on the training split,
build and fit the model (one label, or a bundle's columns) with
checkpoints, early stopping and ``progress`` lines, score it, deliver it."""

from __future__ import annotations

import pathlib
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

import numpy as np

from modelspec import report
from modelspec.features import ARTIFACT_DIR, FeaturePipeline, FeatureSettings
from trainer.domain import HeldOutMetrics
from trainer.recipes.data import (
    balanced_class_weight,
    balanced_column_weights,
    bundle_targets,
    load_splits,
    targets,
)
from trainer.recipes.delivery import deliver
from trainer.recipes.evaluation import (
    HeldOutScorer,
    any_rate,
    false_positive_rate,
    held_out_scorer,
    labeled_by_output,
    no_evidence_sets,
    scores,
)
from trainer.recipes.model import build_model, configure_threads
from trainer.recipes.result import Rate, TrainResult
from trainer.recipes.train_config import MIN_WORD_COUNT, WARMUP_EPOCHS, TrainConfig
from trainer.recipes.vocabulary import background_texts, discriminative_words, stopwords


def training_callbacks(
    cfg: TrainConfig, epochs: int, out: TextIO, held_out: HeldOutScorer | None = None
) -> list:
    """Resume from a checkpoint (when asked), early stopping, and the progress
    lines; progress last, so a printed epoch is an epoch already backed up.
    ``held_out``: scores the model on the held-out split after each epoch
    (the line's ``held_out``: what a sweep's pruner judges)."""
    import keras

    callbacks: list = []
    if cfg.checkpoint_dir:
        callbacks.append(
            keras.callbacks.BackupAndRestore(
                str(pathlib.Path(cfg.checkpoint_dir) / "backup"), double_checkpoint=True
            )
        )
    callbacks += [
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=cfg.patience,
            restore_best_weights=True,
            start_from_epoch=WARMUP_EPOCHS,
        ),
        _progress_callback(epochs, out, held_out),
    ]
    return callbacks


def _progress_callback(epochs: int, out: TextIO, held_out: HeldOutScorer | None = None):
    import keras

    def on_epoch_end(epoch: int, logs: dict | None) -> None:
        logs = logs or {}
        line: dict[str, float | dict[str, float]] = {"epoch": epoch + 1, "epochs": epochs}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                line[key] = round(float(logs[key]), 6)
        for key in ("binary_accuracy", "val_binary_accuracy"):  # a bundle's
            if key in logs:
                line[key.replace("binary_", "")] = round(float(logs[key]), 6)
        if held_out is not None:
            p, r, f = held_out()
            line["held_out"] = {"precision": round(p, 6), "recall": round(r, 6), "f1": round(f, 6)}
        print(report.format_progress(line), file=out, flush=True)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def _fit_pipeline(cfg: TrainConfig, train: Sequence[dict]) -> FeaturePipeline:
    """The feature pipeline fitted on the training split, its vocabulary
    limited to discriminative_words (unless ``min_word_log_ratio`` is 0) less
    the stopwords of real text (unless ``stopword_share`` is 0); a resumed
    job's own saved one."""
    settings = FeatureSettings(cfg.hp["cutlen"], cfg.hp["ngram_range"], cfg.hp["maxlen"])
    saved = pathlib.Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if saved is not None and (saved / ARTIFACT_DIR).is_dir():
        # A resumed job must see exactly the features its checkpoint was trained on.
        pipeline, _ = FeaturePipeline.load(saved)
        if pipeline.settings == settings:
            return pipeline
    documents: Iterable[Sequence[str]] = (d["words"] for d in train)
    dropped = stopwords(cfg.stopwords_from, cfg.stopword_share)
    if cfg.min_word_log_ratio > 0 or dropped:
        labels = list(cfg.labels or (cfg.label,))
        kept = discriminative_words(train, labels, cfg.min_word_log_ratio) - dropped
        documents = [[w for w in d["words"] if w.lower() in kept] for d in train]
    pipeline = FeaturePipeline.fit(
        documents,
        settings,
        cfg.hp["max_vocab"],
        cfg.hp["min_ngram_count"],
        min_word_count=MIN_WORD_COUNT,
    )
    if saved is not None:
        pipeline.save(saved)
    return pipeline


def _clear_checkpoint(checkpoint_dir: pathlib.Path) -> None:
    """The job is done: remove what it kept for a restart (only that), so a
    later job given this directory starts afresh."""
    shutil.rmtree(checkpoint_dir / "backup", ignore_errors=True)
    shutil.rmtree(checkpoint_dir / ARTIFACT_DIR, ignore_errors=True)
    try:
        checkpoint_dir.rmdir()
    except OSError:
        pass  # not empty: someone else's files are there too


def train(cfg: TrainConfig, out: TextIO | None = None) -> TrainResult:
    """Train, evaluate and export one model version; prints progress to ``out``."""
    out = out if out is not None else sys.stdout
    started = time.monotonic()
    train_docs, val_docs, test_docs = load_splits(cfg)

    threads = configure_threads(cfg.hp["threads"])
    import keras

    keras.utils.set_random_seed(cfg.seed)
    pipeline = _fit_pipeline(cfg, train_docs)
    if cfg.labels:
        return _train_bundle(cfg, out, started, threads, pipeline, (train_docs, val_docs, test_docs))
    x_train = pipeline.transform([d["words"] for d in train_docs])
    x_val = pipeline.transform([d["words"] for d in val_docs])
    x_test = pipeline.transform([d["words"] for d in test_docs])
    y_train, y_val, y_test = (targets(d, cfg.label) for d in (train_docs, val_docs, test_docs))

    model = build_model(pipeline.num_features, cfg.hp["embedding_dim"], cfg.hp["maxlen"], cfg.learning_rate)
    epochs = cfg.hp["epochs"]
    callbacks = training_callbacks(
        cfg, epochs, out, held_out_scorer(model, x_test, y_test) if cfg.no_push else None
    )
    class_weight = balanced_class_weight(y_train)
    # Validation loss weighted as training is, so early stopping judges the same objective.
    val_weight = np.where(y_val[:, 0] >= 0.5, class_weight[1], class_weight[0]).astype(np.float32)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val, val_weight),
        epochs=epochs,
        batch_size=cfg.hp["batch_size"],
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
        class_weight=class_weight,
    )
    probability = model.predict(x_test, batch_size=1024, verbose=0) if len(x_test) else np.zeros((0, 1))
    precision, recall, f1 = scores(y_test, probability)
    no_evidence = {}
    for name, texts in no_evidence_sets(cfg.label).items():
        labeled = model.predict(pipeline.transform(texts), batch_size=1024, verbose=0) >= 0.5
        no_evidence[name] = Rate(int(np.sum(labeled)), len(texts))
    real = labeled_by_output(model, pipeline, background_texts(cfg.background_eval))
    held_out = HeldOutMetrics(precision, recall, f1, len(test_docs))
    version, version_dir, decision = deliver(cfg, model, pipeline, test_docs, held_out, any_rate(real))
    if cfg.checkpoint_dir:
        _clear_checkpoint(pathlib.Path(cfg.checkpoint_dir))
    return TrainResult(
        version=version,
        version_dir=version_dir,
        precision=precision,
        recall=recall,
        f1=f1,
        false_positive_rate=false_positive_rate(y_test, probability),
        general=no_evidence["general"],
        unknown=no_evidence["unknown"],
        background=any_rate(real),
        epochs_run=len(history.epoch),
        test_documents=len(test_docs),
        seconds=time.monotonic() - started,
        threads=threads,
        model=model,
        pipeline=pipeline,
        push=decision,
    )


def _train_bundle(
    cfg: TrainConfig,
    out: TextIO,
    started: float,
    threads: tuple[int, int],
    pipeline: FeaturePipeline,
    splits: tuple[list[dict], list[dict], list[dict]],
) -> TrainResult:
    """One multi-label model: a shared embedding, one sigmoid column per label."""

    labels = list(cfg.labels)
    train_docs, val_docs, test_docs = splits
    x_train, x_val, x_test = (pipeline.transform([d["words"] for d in docs]) for docs in splits)
    y_train, y_val, y_test = (bundle_targets(docs, labels) for docs in splits)
    model = build_model(
        pipeline.num_features,
        cfg.hp["embedding_dim"],
        cfg.hp["maxlen"],
        cfg.learning_rate,
        outputs=len(labels),
        column_weights=balanced_column_weights(y_train),
    )
    epochs = cfg.hp["epochs"]
    callbacks = training_callbacks(
        cfg, epochs, out, held_out_scorer(model, x_test, y_test) if cfg.no_push else None
    )
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=cfg.hp["batch_size"],
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )
    probability = (
        model.predict(x_test, batch_size=1024, verbose=0) if len(x_test) else np.zeros((0, len(labels)))
    )
    per_label = {label: scores(y_test[:, j], probability[:, j]) for j, label in enumerate(labels)}
    macro = [float(np.mean([m[k] for m in per_label.values()])) for k in range(3)]
    # A no-evidence text is a false positive when any of the bundle's labels fires.
    no_evidence = {}
    for name, texts in no_evidence_sets(*labels).items():
        scored = model.predict(pipeline.transform(texts), batch_size=1024, verbose=0)
        labeled = np.any(scored >= 0.5, axis=1)
        no_evidence[name] = Rate(int(np.sum(labeled)), len(texts))
    real = labeled_by_output(model, pipeline, background_texts(cfg.background_eval))
    held_out = HeldOutMetrics(macro[0], macro[1], macro[2], len(test_docs))
    version, version_dir, decision = deliver(cfg, model, pipeline, test_docs, held_out, any_rate(real))
    if cfg.checkpoint_dir:
        _clear_checkpoint(pathlib.Path(cfg.checkpoint_dir))
    return TrainResult(
        version=version,
        version_dir=version_dir,
        precision=macro[0],
        recall=macro[1],
        f1=macro[2],
        false_positive_rate=false_positive_rate(y_test, probability),
        general=no_evidence["general"],
        unknown=no_evidence["unknown"],
        background=any_rate(real),
        background_per_label={
            label: Rate(int(np.sum(real[:, j])), real.shape[0]) for j, label in enumerate(labels)
        }
        if real.shape[0]
        else {},
        epochs_run=len(history.epoch),
        test_documents=len(test_docs),
        seconds=time.monotonic() - started,
        threads=threads,
        label_metrics=per_label,
        model=model,
        pipeline=pipeline,
        push=decision,
    )
