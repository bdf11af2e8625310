"""The fastText model: Embedding (padding row held at zero) -> average ->
Dense without bias + PRIOR_LOGIT -> sigmoid (see build_model), its
weighted loss for a bundle, and TensorFlow's thread budget."""

from __future__ import annotations

from typing import Any

import numpy as np


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
        loss = weighted_bce(*column_weights)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss,
        metrics=["accuracy"] if column_weights is None else ["binary_accuracy"],
    )
    return model


def weighted_bce(w_neg: np.ndarray, w_pos: np.ndarray):
    """Binary cross-entropy per label column, each weighted for its balance."""
    from keras import ops

    neg = ops.convert_to_tensor(w_neg)
    pos = ops.convert_to_tensor(w_pos)

    def loss(y_true, y_pred):
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        per = -(pos * y_true * ops.log(p) + neg * (1 - y_true) * ops.log(1 - p))
        return ops.mean(per, axis=-1)

    return loss
