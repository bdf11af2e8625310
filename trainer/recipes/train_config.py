"""The fastText recipe's settings: one typed TrainConfig, checked on
construction, and the training constants the recipe's modules share."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

from rpc.errors import InvalidArgument
from trainer.domain import ValidationPolicy
from trainer.recipes import FASTTEXT, validate_label, validate_labels, validate_model_name
from trainer.recipes.vocabulary import DEFAULT_MIN_WORD_LOG_RATIO, DEFAULT_STOPWORD_SHARE

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
