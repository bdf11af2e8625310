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
import os
import sys
import traceback
from collections.abc import Sequence

from modelspec import report
from rpc.errors import InvalidArgument
from trainer import background, push
from trainer.domain import ValidationPolicy
from trainer.recipes import FASTTEXT

# The recipe's parts, by role (imported from here by tests, benchmarks and
# tests/support/full_disk_recipe.py): settings, data, model, training loop,
# evaluation, delivery and the result.
from trainer.recipes.data import (
    balanced_class_weight,
    balanced_column_weights,
    bundle_targets,
    load_splits,
    targets,
)
from trainer.recipes.delivery import export_validated, report_push
from trainer.recipes.evaluation import false_positive_rate, no_evidence_sets, scores
from trainer.recipes.model import PRIOR_LOGIT, build_model, configure_threads
from trainer.recipes.result import Rate, TrainResult
from trainer.recipes.train_config import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE,
    GENERAL_EVAL_DOCUMENTS,
    MIN_DOCUMENTS,
    MIN_WORD_COUNT,
    TEST_FRACTION,
    UNKNOWN_EVAL_DOCUMENTS,
    VALIDATION_FRACTION,
    WARMUP_EPOCHS,
    TrainConfig,
)
from trainer.recipes.training import train
from trainer.recipes.vocabulary import DEFAULT_MIN_WORD_LOG_RATIO, DEFAULT_STOPWORD_SHARE

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_PATIENCE",
    "EXIT_INVALID",
    "GENERAL_EVAL_DOCUMENTS",
    "MIN_DOCUMENTS",
    "MIN_WORD_COUNT",
    "PRIOR_LOGIT",
    "TEST_FRACTION",
    "UNKNOWN_EVAL_DOCUMENTS",
    "VALIDATION_FRACTION",
    "WARMUP_EPOCHS",
    "Rate",
    "TrainConfig",
    "TrainResult",
    "balanced_class_weight",
    "balanced_column_weights",
    "build_model",
    "bundle_targets",
    "configure_threads",
    "export_validated",
    "false_positive_rate",
    "load_splits",
    "main",
    "no_evidence_sets",
    "parse_args",
    "report_push",
    "scores",
    "targets",
    "train",
]


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
