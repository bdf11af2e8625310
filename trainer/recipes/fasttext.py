"""fastText-style training recipe: one binary classifier for one label, or one
multi-label model (a bundle) for several.

``python -m trainer.recipes.fasttext --model movie --label 影视 --corpus PATH.jsonl
--model-root DIR [--epochs N ... --threads N --checkpoint-dir DIR --seed N]``

``--label`` given more than once trains a bundle: one shared embedding and one
sigmoid output per label, in the order given (the exported version's
artifacts name the columns, modelspec.labels). Its ``result`` line adds
``label_metrics`` (held-out precision/recall/F1 per label); its top-level
precision/recall/F1 are the labels' macro averages.

Splits the corpus (seeded) into train / validation / held-out test, fits the
feature pipeline on the training split (its vocabulary: the words that tell
a label's positives from its negatives, ``discriminative_words``), trains Embedding (padding row held at
zero) -> GlobalAveragePooling1D -> Dense(one column per label, no bias) +
PRIOR_LOGIT -> sigmoid with early stopping on validation loss (a text with no
known word scores sigmoid(PRIOR_LOGIT) = 0.047 in every training, see
build_model), and exports a TF Serving version (see ``export.py``). Prints one
line per epoch ``progress {json}`` and at the end ``result {json}``; exit 0 on success,
2 on bad arguments or corpus, 1 when training or export fails.

The result reports, beside held-out precision, recall and F1, the false-positive
rate on the held-out negatives and on two sets that should get no label (issue
14): general text of other topics and unknown-word text (``trainer.corpus``,
kept apart from any training corpus), see docs/model-quality.md, and the
share of held-out real background text it labels (issue 23:
``background_labeled_rate``, from trainer.background's held-out slice, or
``--background-eval FILE``; null when there is none).

With ``--validate`` the version is staged and pushed only if it passes
(floors, no regression against the served version, ``--max-background-labeled``
when given; ``export_validated``, ``trainer.push``): a ``validation {json}`` line gives
the verdict, and a rejected version exits 3 without a ``result`` line.

With ``--checkpoint-dir``, a job killed and restarted resumes after its last
finished epoch (Keras BackupAndRestore, plus the fitted features).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from modelspec import report
from modelspec.features import ARTIFACT_DIR, FeaturePipeline, FeatureSettings
from rpc.errors import InvalidArgument
from trainer import background, push
from trainer.corpus import general_documents, read_jsonl, unknown_documents
from trainer.domain import HeldOutMetrics, PushDecision, PushOutcome, ValidationPolicy
from trainer.recipes import FASTTEXT, validate_label, validate_labels, validate_model_name
from trainer.recipes.vocabulary import (
    DEFAULT_MIN_WORD_LOG_RATIO,
    DEFAULT_STOPWORD_SHARE,
    background_texts,
    discriminative_words,
    stopwords,
)

VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_PATIENCE = 3
# Early epochs' validation loss is noisy on small corpora; do not stop on it.
WARMUP_EPOCHS = 5
MIN_DOCUMENTS = 10
# Words seen once in the training split are left out of the vocabulary, so
# training meets unknown words as serving does (see FeaturePipeline.fit).
MIN_WORD_COUNT = 2
# The no-evidence evaluation: general text of other topics and unknown-word
# text (trainer.corpus), scored for false positives beside the held-out split.
GENERAL_EVAL_DOCUMENTS = 600
UNKNOWN_EVAL_DOCUMENTS = 200


@dataclasses.dataclass
class TrainConfig:
    model: str
    label: str
    corpus: str | pathlib.Path
    model_root: str | pathlib.Path
    # Hyperparameters by registry name (epochs, batch_size, ...); missing ones
    # take the registry's defaults.
    params: Mapping[str, int | None] = dataclasses.field(default_factory=dict)
    # A separate held-out file; without it TEST_FRACTION of the corpus is held out.
    test_corpus: str | pathlib.Path | None = None
    checkpoint_dir: str | pathlib.Path | None = None
    seed: int = 0
    learning_rate: float = DEFAULT_LEARNING_RATE
    patience: int = DEFAULT_PATIENCE
    # A bundle's labels in column order; empty: a single-label model of ``label``.
    labels: Sequence[str] = ()
    # Validate before push (see export_validated); None: publish at once.
    validation: ValidationPolicy | None = None
    # A sweep trial: train and report held-out metrics, export nothing.
    no_push: bool = False
    # Real background paragraphs the model should not label (trainer.background's
    # held-out slice); None: that file when it exists, else not measured.
    background_eval: str | pathlib.Path | None = None
    # See DEFAULT_MIN_WORD_LOG_RATIO; 0 keeps every word.
    min_word_log_ratio: float = DEFAULT_MIN_WORD_LOG_RATIO
    # Real text whose commonest words are left out (see DEFAULT_STOPWORD_SHARE);
    # None: trainer.background's training pool when it exists.
    stopwords_from: str | pathlib.Path | None = None
    stopword_share: float = DEFAULT_STOPWORD_SHARE

    def __post_init__(self) -> None:
        validate_model_name(self.model)
        if self.labels:
            validate_labels(self.labels)
            if self.label and self.label != self.labels[0]:
                raise InvalidArgument("give either one label or a bundle's labels, not both")
            self.label = self.labels[0]
        else:
            validate_label(self.label)
        self.hp = FASTTEXT.validate(dict(self.params))
        if not self.learning_rate > 0:
            raise InvalidArgument(f"learning rate must be > 0, got {self.learning_rate}")
        if self.patience < 1:
            raise InvalidArgument(f"patience must be >= 1, got {self.patience}")
        if not 0.0 <= self.stopword_share <= 1.0:
            raise InvalidArgument(f"stopword share must be in [0, 1], got {self.stopword_share}")
        if not 0.0 <= self.min_word_log_ratio <= 10.0:
            raise InvalidArgument(f"min word log ratio must be in [0, 10], got {self.min_word_log_ratio}")


@dataclasses.dataclass(frozen=True)
class Rate:
    """How many of ``documents`` (all negatives) the model labeled."""

    positives: int
    documents: int

    @property
    def rate(self) -> float:
        return self.positives / self.documents if self.documents else 0.0


@dataclasses.dataclass
class TrainResult:
    version: int  # 0: nothing exported (a sweep trial)
    version_dir: pathlib.Path | None
    precision: float
    recall: float
    f1: float
    epochs_run: int
    test_documents: int
    seconds: float
    # False-positive rates: held-out negatives, general text, unknown-word text.
    false_positive_rate: float = 0.0
    general: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    unknown: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    # Held-out real background text labeled (by any label); per label for a bundle.
    background: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    background_per_label: dict[str, Rate] = dataclasses.field(default_factory=dict)
    threads: tuple[int, int] = (0, 0)  # TensorFlow (intra, inter) op threads in effect
    # A bundle's held-out scores per label: label -> (precision, recall, f1).
    label_metrics: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(repr=False, default=None)  # the trained keras.Model
    pipeline: FeaturePipeline | None = dataclasses.field(repr=False, default=None)
    # The verdict of validation before push (None when not validated).
    push: PushDecision | None = None

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "version_dir": str(self.version_dir) if self.version_dir else "",
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "false_positive_rate": round(self.false_positive_rate, 6),
            "general_false_positive_rate": round(self.general.rate, 6),
            "general_documents": self.general.documents,
            "unknown_false_positive_rate": round(self.unknown.rate, 6),
            "unknown_documents": self.unknown.documents,
            # None when no background text was there to measure (see background_eval).
            "background_labeled_rate": round(self.background.rate, 6) if self.background.documents else None,
            "background_documents": self.background.documents,
            **(
                {
                    "background_label_rates": {
                        label: round(r.rate, 6) for label, r in self.background_per_label.items()
                    }
                }
                if self.background_per_label
                else {}
            ),
            "epochs_run": self.epochs_run,
            "test_documents": self.test_documents,
            "seconds": round(self.seconds, 3),
            "intra_op_threads": self.threads[0],
            "inter_op_threads": self.threads[1],
            **(
                {
                    "label_metrics": {
                        label: {"precision": round(p, 6), "recall": round(r, 6), "f1": round(f, 6)}
                        for label, (p, r, f) in self.label_metrics.items()
                    }
                }
                if self.label_metrics
                else {}
            ),
        }

    @property
    def bundle(self) -> bool:
        return bool(self.label_metrics)


# -- data ------------------------------------------------------------------------


def load_splits(cfg: TrainConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, validation, test) documents; seeded, so a restart gets the same."""
    try:
        docs = list(read_jsonl(cfg.corpus))
        test = list(read_jsonl(cfg.test_corpus)) if cfg.test_corpus else []
    except OSError as e:
        raise InvalidArgument(f"cannot read corpus: {e}") from None
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    random.Random(cfg.seed).shuffle(docs)
    if not cfg.test_corpus:
        n_test = max(1, int(len(docs) * TEST_FRACTION))
        test, docs = docs[:n_test], docs[n_test:]
    n_val = max(1, int(len(docs) * VALIDATION_FRACTION))
    val, train = docs[:n_val], docs[n_val:]
    if len(train) < MIN_DOCUMENTS:
        raise InvalidArgument(
            f"corpus {cfg.corpus} is too small: {len(train)} training documents, need >= {MIN_DOCUMENTS}"
        )
    for label in cfg.labels or (cfg.label,):
        if not any(label in d["labels"] for d in train):
            raise InvalidArgument(f"no training document of corpus {cfg.corpus} carries label {label!r}")
    return train, val, test


def targets(docs: Sequence[dict], label: str) -> np.ndarray:
    """Binary target: does the document carry ``label``."""
    return np.array([[label in d["labels"]] for d in docs], dtype=np.float32)


def bundle_targets(docs: Sequence[dict], labels: Sequence[str]) -> np.ndarray:
    """Multi-label targets [len(docs), len(labels)]: does document i carry label j."""
    column = {label: j for j, label in enumerate(labels)}
    y = np.zeros((len(docs), len(labels)), dtype=np.float32)
    for i, d in enumerate(docs):
        for label in d["labels"]:
            j = column.get(label)
            if j is not None:
                y[i, j] = 1.0
    return y


def balanced_column_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (negative, positive) weights, as balanced_class_weight for each label."""
    n = float(y.shape[0])
    positives = np.sum(y >= 0.5, axis=0).astype(np.float64)
    negatives = n - positives
    ok = (positives > 0) & (negatives > 0)
    w_pos = np.where(ok, n / (2 * np.maximum(positives, 1)), 1.0)
    w_neg = np.where(ok, n / (2 * np.maximum(negatives, 1)), 1.0)
    return w_neg.astype(np.float32), w_pos.astype(np.float32)


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    """Weights that make positives and negatives count alike: a label carried
    by a fifth of the documents would otherwise be under-predicted (low recall)."""
    positives = float(np.sum(y >= 0.5))
    negatives = float(y.size) - positives
    if not positives or not negatives:
        return {0: 1.0, 1: 1.0}
    return {0: y.size / (2 * negatives), 1: y.size / (2 * positives)}


def false_positive_rate(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> float:
    """Share of the negatives labeled positive at ``threshold``."""
    negative = y_true.reshape(-1) < 0.5
    labeled = probability.reshape(-1) >= threshold
    return float(np.sum(negative & labeled)) / max(1.0, float(np.sum(negative)))


def no_evidence_sets(*labels: str) -> dict[str, list[list[str]]]:
    """The evaluation texts that should get no label: general text of other
    topics (less any topic named like one of the labels) and unknown-word text."""
    general = [d["words"] for d in general_documents(GENERAL_EVAL_DOCUMENTS) if d["topic"] not in labels]
    unknown = [d["words"] for d in unknown_documents(UNKNOWN_EVAL_DOCUMENTS)]
    return {"general": general, "unknown": unknown}


def scores(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``probability >= threshold``."""
    truth = y_true.reshape(-1) >= 0.5
    pred = probability.reshape(-1) >= threshold
    tp = float(np.sum(truth & pred))
    precision = tp / max(1.0, float(np.sum(pred)))
    recall = tp / max(1.0, float(np.sum(truth)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# -- model -----------------------------------------------------------------------


def configure_threads(threads: int) -> tuple[int, int]:
    """Set TensorFlow's thread budget, which only works before its first op
    runs; returns the (intra, inter) op threads in effect."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # Already initialised (in-process callers, e.g. tests): keep its budget.
        pass
    return (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


# The no-evidence answer, fixed by construction: a document without a known
# word scores sigmoid(PRIOR_LOGIT) = 0.047 in every training (see build_model).
PRIOR_LOGIT = -3.0


def _zero_padding_row(embeddings):
    """The padding row (id 0) of an embedding matrix, set to zero."""
    import keras

    keep = keras.ops.expand_dims(keras.ops.arange(keras.ops.shape(embeddings)[0]) > 0, 1)
    return keras.ops.where(keep, embeddings, keras.ops.zeros_like(embeddings))


def _padding_free_embedding_classes():
    """Initializer and constraint that hold the padding row at zero (defined
    here: Keras is imported only when a model is built; they are only used in
    training, the exported SavedModel holds the resulting weights)."""
    import keras

    class ZeroPaddingInitializer(keras.initializers.Initializer):
        """Keras' default embedding initializer with row 0 (padding) zero."""

        def __init__(self, seed: int | None = None) -> None:
            self.seed = seed

        def __call__(self, shape, dtype=None):
            base = keras.initializers.RandomUniform(-0.05, 0.05, seed=self.seed)
            return _zero_padding_row(base(shape, dtype=dtype))

        def get_config(self) -> dict:
            return {"seed": self.seed}

    class ZeroPaddingRow(keras.constraints.Constraint):
        """Re-zeroes row 0 (padding) after each optimizer update."""

        def __call__(self, w):
            return _zero_padding_row(w)

    return ZeroPaddingInitializer, ZeroPaddingRow


def build_model(
    num_features: int,
    embedding_dim: int,
    maxlen: int,
    learning_rate: float,
    outputs: int = 1,
    column_weights: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Embedding (padding row held at zero) -> average over all ``maxlen``
    positions -> Dense without bias -> + PRIOR_LOGIT -> sigmoid; every known
    word also adds one shared learned vector.

    Unknown words are dropped, so a document with no known word is all padding.
    The padding embedding is zero and there is no learned bias, so such a
    document's logit is exactly PRIOR_LOGIT in every training: no evidence
    scores sigmoid(PRIOR_LOGIT), well under the 0.5 threshold, whatever the
    seed, split or class weighting (before, it was sigmoid(w·e0 + b), which
    training left to chance, docs/model-quality.md). Padding still counts in
    the average's denominator, so a lone word is diluted in proportion to how
    short the document is rather than deciding alone (a masked mean let a lone
    stopword score 0.94), and evidence must push the logit over the threshold.
    The shared known-word vector takes the padding embedding's other old role:
    a per-word pull that every document trains, which keeps long texts of
    common words from drifting positive.

    With ``outputs`` > 1 (a bundle) each label has its own column, each with
    the same fixed prior; ``column_weights`` weighs each label's positives and
    negatives as balanced_class_weight does for a single label.
    """
    import keras

    zero_padding_initializer, zero_padding_row = _padding_free_embedding_classes()
    ids = keras.Input(shape=(maxlen,), dtype="int32", name="input")
    words = keras.layers.Embedding(
        num_features,
        embedding_dim,
        embeddings_initializer=zero_padding_initializer(),
        embeddings_constraint=zero_padding_row(),
    )(ids)
    # One vector added to every known word (row 1 of a 2-row embedding of
    # min(id, 1); padding's row 0 stays zero): a per-word term every document
    # trains, as the padding embedding used to be. Without it common words
    # drift towards the positives and long general texts were labeled
    # (docs/model-quality.md).
    known = keras.layers.Embedding(
        2,
        embedding_dim,
        embeddings_initializer=zero_padding_initializer(),
        embeddings_constraint=zero_padding_row(),
    )(keras.ops.minimum(ids, 1))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Add()([words, known]))
    logit = keras.layers.Rescaling(scale=1.0, offset=PRIOR_LOGIT)(
        keras.layers.Dense(outputs, use_bias=False)(pooled)
    )
    model = keras.Model(ids, keras.layers.Activation("sigmoid")(logit))
    loss: Any = "binary_crossentropy"
    if column_weights is not None:
        loss = _weighted_bce(*column_weights)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss,
        metrics=["accuracy"] if column_weights is None else ["binary_accuracy"],
    )
    return model


def _callbacks(cfg: TrainConfig, epochs: int, out: TextIO, held_out: HeldOutScorer | None = None) -> list:
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


def _weighted_bce(w_neg: np.ndarray, w_pos: np.ndarray):
    """Binary cross-entropy per label column, each weighted for its balance."""
    from keras import ops

    neg = ops.convert_to_tensor(w_neg)
    pos = ops.convert_to_tensor(w_pos)

    def loss(y_true, y_pred):
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        per = -(pos * y_true * ops.log(p) + neg * (1 - y_true) * ops.log(1 - p))
        return ops.mean(per, axis=-1)

    return loss


HeldOutScorer = Callable[[], tuple[float, float, float]]


def _held_out_scorer(model, x_test: np.ndarray, y_test: np.ndarray) -> HeldOutScorer:
    """Held-out (precision, recall, F1) of the model as it is now; a bundle's
    are the mean over its labels, as its result's are."""

    def score() -> tuple[float, float, float]:
        if not len(x_test):
            return 0.0, 0.0, 0.0
        probability = model.predict(x_test, batch_size=1024, verbose=0)
        per = [scores(y_test[:, j : j + 1], probability[:, j : j + 1]) for j in range(y_test.shape[1])]
        p, r, f = (float(np.mean([m[k] for m in per])) for k in range(3))
        return p, r, f

    return score


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
    callbacks = _callbacks(cfg, epochs, out, _held_out_scorer(model, x_test, y_test) if cfg.no_push else None)
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
    real = _labeled(model, pipeline, background_texts(cfg.background_eval))
    held_out = HeldOutMetrics(precision, recall, f1, len(test_docs))
    version, version_dir, decision = _deliver(cfg, model, pipeline, test_docs, held_out, _any_rate(real))
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
        background=_any_rate(real),
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
    callbacks = _callbacks(cfg, epochs, out, _held_out_scorer(model, x_test, y_test) if cfg.no_push else None)
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
    real = _labeled(model, pipeline, background_texts(cfg.background_eval))
    held_out = HeldOutMetrics(macro[0], macro[1], macro[2], len(test_docs))
    version, version_dir, decision = _deliver(cfg, model, pipeline, test_docs, held_out, _any_rate(real))
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
        background=_any_rate(real),
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


def _labeled(model, pipeline: FeaturePipeline, texts: Sequence[Sequence[str]]) -> np.ndarray:
    """Which of ``texts`` each output labels at 0.5: bool [len(texts), outputs]."""
    if not texts:
        return np.zeros((0, 1), dtype=bool)
    return np.asarray(model.predict(pipeline.transform(texts), batch_size=1024, verbose=0)) >= 0.5


def _any_rate(labeled: np.ndarray) -> Rate:
    """How many texts got any label."""
    return Rate(int(np.sum(np.any(labeled, axis=1))), labeled.shape[0])


def _deliver(
    cfg: TrainConfig,
    model,
    pipeline: FeaturePipeline,
    test_docs: Sequence[dict],
    held_out: HeldOutMetrics,
    background_rate: Rate,
) -> tuple[int, pathlib.Path | None, PushDecision | None]:
    """Export the trained model as the job asked: nothing (a sweep trial),
    at once, or after validation before push. Returns (version, its
    directory, verdict); version 0 and no directory for a trial."""
    from trainer.recipes.export import export_version

    if cfg.no_push:  # a sweep trial: its held-out metrics are all it delivers
        return 0, None, None
    if cfg.validation is None:
        bundle = list(cfg.labels) or None
        version, version_dir = export_version(
            model, pipeline, cfg.model_root, cfg.model, cfg.label, labels=bundle
        )
        return version, version_dir, None
    return export_validated(cfg, model, pipeline, test_docs, held_out, background_rate)


def _served_metrics(cfg: TrainConfig, version_dir: pathlib.Path, test_docs: Sequence[dict]) -> HeldOutMetrics:
    """The served version's held-out metrics on the same documents, scored as
    the new version was: one label's, or a bundle's macro average over its
    labels, each read from the served version's own column for it."""
    from modelspec.labels import column_labels
    from trainer.recipes import export

    probability = export.predict_version(version_dir, [d["words"] for d in test_docs])
    _, meta = FeaturePipeline.load(version_dir)
    columns = column_labels(meta) or ()
    if not cfg.labels:
        if columns:
            raise ValueError(
                "the served version is a bundle, the new one a single-label model: not comparable"
            )
        return HeldOutMetrics(*scores(targets(test_docs, cfg.label), probability), len(test_docs))
    missing = [label for label in cfg.labels if label not in columns]
    if missing:
        raise ValueError(f"the served version does not carry label(s) {missing}: not comparable")
    y = bundle_targets(test_docs, cfg.labels)
    per_label = [scores(y[:, j], probability[:, columns.index(label)]) for j, label in enumerate(cfg.labels)]
    macro = [float(np.mean([m[k] for m in per_label])) for k in range(3)]
    return HeldOutMetrics(macro[0], macro[1], macro[2], len(test_docs))


def export_validated(
    cfg: TrainConfig,
    model,
    pipeline: FeaturePipeline,
    test_docs: Sequence[dict],
    candidate: HeldOutMetrics,
    background_rate: Rate | None = None,
) -> tuple[int, pathlib.Path, PushDecision]:
    """Stage the new version, score the served one on the same held-out
    documents, and promote the new one or keep it under rejected/ (see
    trainer.push for the verdict). Returns (version, its directory, verdict)."""
    from trainer.recipes import export

    policy = cfg.validation
    assert policy is not None, "export_validated runs with --validate"
    model_dir = pathlib.Path(cfg.model_root) / cfg.model
    bundle = list(cfg.labels) or None
    version, staged = export.stage_version(model, pipeline, model_dir, cfg.model, cfg.label, labels=bundle)
    try:
        served_version, served, served_error = export.served_version(model_dir), None, ""
        if served_version and not policy.skip:
            try:
                served = _served_metrics(cfg, model_dir / str(served_version), test_docs)
            except Exception as exc:  # noqa: BLE001 - a broken served version must not block its replacement
                served_error = f"{type(exc).__name__}: {exc}"[:300]
        background_labeled = background_rate.rate if background_rate and background_rate.documents else None
        decision = push.decide(
            policy, version, candidate, served_version, served, served_error, background_labeled
        )
        if decision.outcome is PushOutcome.REJECTED:
            rejected = export.reject(staged, model_dir, version, decision.to_dict())
            decision = push.kept_at(decision, rejected.relative_to(pathlib.Path(cfg.model_root)).as_posix())
            return version, rejected, decision
        version, version_dir = export.promote(staged, model_dir, version)
        return version, version_dir, dataclasses.replace(decision, candidate_version=version)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after a promote or a reject


def report_push(result: TrainResult, out: TextIO) -> int | None:
    """Print the verdict line ``validation {json}``; the exit status when
    the version was rejected (the job failed to deliver a model), else None."""
    if result.push is None:
        return None
    print(report.format_validation(result.push.to_dict()), file=out, flush=True)
    if result.push.outcome is PushOutcome.REJECTED:
        print(f"fasttext: {result.push.reason}", file=sys.stderr, flush=True)
        return push.EXIT_REJECTED
    return None


# -- command line ----------------------------------------------------------------


# The exit status for a corpus or arguments the recipe cannot train on (argparse
# uses it too): retrying gives the same answer (Recipe.deterministic_exit_codes).
EXIT_INVALID = 2


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.recipes.fasttext", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, help="model name, e.g. movie")
    parser.add_argument(
        "--label",
        required=True,
        action="append",
        help="the label it predicts, e.g. 影视; repeat it to train one multi-label model (a bundle)",
    )
    parser.add_argument("--corpus", required=True, help="JSONL corpus of {words, labels} documents")
    parser.add_argument("--model-root", required=True, help="TF Serving model root")
    for p in FASTTEXT.params:
        parser.add_argument(
            p.flag,
            type=int,
            default=p.default,
            help=f"{p.help} ({p.minimum}..{p.maximum}, default {p.default})",
        )
    parser.add_argument("--checkpoint-dir", help="resume from / back up to this directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-corpus", help="held-out corpus (default: hold out part of --corpus)")
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument(
        "--patience", type=int, default=DEFAULT_PATIENCE, help="early-stopping patience in epochs"
    )
    _validation_flags(parser)
    parser.add_argument(
        "--background-eval",
        help="JSONL of real paragraphs no label should fire on, scored after training "
        f"(default: {background.DEFAULT_DIR / background.HELD_OUT_FILE} when fetched)",
    )
    parser.add_argument(
        "--min-word-log-ratio",
        type=float,
        default=DEFAULT_MIN_WORD_LOG_RATIO,
        help="keep a word only when it tells a label's positives from its negatives by this log ratio "
        f"of document frequencies (0: keep every word; default {DEFAULT_MIN_WORD_LOG_RATIO})",
    )
    parser.add_argument(
        "--stopwords-from",
        help="JSONL of real paragraphs whose commonest words are left out of the vocabulary "
        f"(default: {background.DEFAULT_DIR / background.TRAIN_FILE} when fetched)",
    )
    parser.add_argument(
        "--stopword-share",
        type=float,
        default=DEFAULT_STOPWORD_SHARE,
        help="leave out words in at least this share of those paragraphs "
        f"(0: none; default {DEFAULT_STOPWORD_SHARE})",
    )
    parser.add_argument(
        "--no-push",
        action="store_true",
        help="train and report held-out metrics; export nothing (a sweep trial)",
    )
    args = parser.parse_args(argv)
    try:
        return TrainConfig(
            model=args.model,
            label=args.label[0] if len(args.label) == 1 else "",
            labels=args.label if len(args.label) > 1 else (),
            corpus=args.corpus,
            model_root=args.model_root,
            params={p.name: getattr(args, p.name) for p in FASTTEXT.params},
            test_corpus=args.test_corpus,
            checkpoint_dir=args.checkpoint_dir,
            seed=args.seed,
            learning_rate=args.learning_rate,
            patience=args.patience,
            validation=_validation_from_args(args),
            no_push=args.no_push,
            background_eval=args.background_eval,
            min_word_log_ratio=args.min_word_log_ratio,
            stopwords_from=args.stopwords_from,
            stopword_share=args.stopword_share,
        )
    except InvalidArgument as e:
        parser.error(str(e))


def _validation_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("validation before push (without --validate: publish at once)")
    g.add_argument("--validate", action="store_true", help="stage the version and push it only if it passes")
    g.add_argument(
        "--floor",
        action="append",
        default=[],
        type=push.parse_floor,
        metavar="METRIC=VALUE",
        help="lowest held-out precision, recall or f1 to push (repeatable)",
    )
    g.add_argument(
        "--max-regression", type=float, help="largest drop against the served version (default 0.02)"
    )
    g.add_argument(
        "--max-background-labeled",
        type=float,
        help="highest share of the held-out real background text labeled to push (e.g. 0.03)",
    )
    g.add_argument("--regression-metric", help="metric compared with the served version (default f1)")
    g.add_argument(
        "--skip-validation", action="store_true", help="with --validate: push whatever the metrics"
    )


def _validation_from_args(args: argparse.Namespace) -> ValidationPolicy | None:
    if not args.validate:
        return None
    return push.policy_from_flags(
        args.floor,
        args.max_regression,
        args.regression_metric,
        args.skip_validation,
        args.max_background_labeled,
    )


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = parse_args(argv)
    try:
        result = train(cfg)
    except InvalidArgument as e:
        print(f"fasttext: {e}", file=sys.stderr, flush=True)
        return EXIT_INVALID
    except Exception as e:  # noqa: BLE001 - a job reports any failure by its exit code
        traceback.print_exc()
        print(f"fasttext: training {cfg.model} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    rejected = report_push(result, sys.stdout)
    if rejected is not None:
        return rejected
    print(report.format_result(result.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
