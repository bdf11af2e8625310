"""False positives of exported models on text that should get no label (issues 14, 23).

``python -m bench.model_quality --model-root ROOT [--models movie,beauty,...]
[--bundle NAME] [--background FILE]``

For the newest version of each model under ROOT (an exported SavedModel
with its feature artifacts, as the model server serves it; a bundle's
columns each measured): the share of general text of other topics and of
unknown-word text that it labels at 0.5 (``trainer.corpus.general_documents`` /
``unknown_documents``, the sets a training job reports on), the share of the
held-out real background text it labels (``trainer.background``, news
paragraphs never used in training), its probability for documents of function
words only (against the no-evidence prior), for the rows of issue 14's table
and for the old example. It only reads versions, so models trained by an
older recipe are measured on the same sets (docs/model-quality.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from modelspec.features import FeaturePipeline
from modelspec.labels import column_labels
from trainer import background
from trainer.corpus import (
    EXAMPLE_WORDS,
    FUNCTION_WORDS,
    SAMPLE_MODELS,
    general_documents,
    read_jsonl,
    unknown_documents,
)

ISSUE_ROWS = [
    ["股票", "市场", "今日", "大涨"],
    ["今天", "天气", "很好", "我们", "去", "公园"],
    ["qqq", "www", "eee"],
    ["的"],
]
# Documents of function words only (issue 23): the sample corpus's function
# words, and the known words of a documentation paragraph the issue quotes.
FUNCTION_WORD_DOCS = [
    list(FUNCTION_WORDS),
    ["的", "的", "那个", "的", "的", "的", "一个", "被", "是", "的", "的"],
    ["一个", "是", "可能", "一个", "的", "的", "这个", "在", "的", "你"],
]
# What a document with no known word scores (trainer.recipes.fasttext.PRIOR_LOGIT).
NO_EVIDENCE_PRIOR = float(1 / (1 + np.exp(3.0)))


def newest_version(model_dir: pathlib.Path) -> pathlib.Path:
    versions = sorted((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise SystemExit(f"{model_dir} has no version")
    return versions[-1]


def load_background(path: pathlib.Path | None = None) -> list[list[str]]:
    """The held-out real background paragraphs (trainer.background); SystemExit saying how to fetch them."""
    try:
        path = path or background.require()[1]
    except background.BackgroundMissing as e:
        raise SystemExit(str(e)) from None
    return [d["words"] for d in read_jsonl(path)]


def measure(
    version_dir: pathlib.Path, label: str, background_docs: Sequence[Sequence[str]] | None = None
) -> dict:
    """The figures of one version; a bundle's per label under ``labels`` plus
    the share of background text any of its labels fires on."""
    import tensorflow as tf

    pipeline, meta = FeaturePipeline.load(version_dir)
    columns = list(column_labels(meta) or (label,))
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]

    def probability(docs: Sequence[Sequence[str]]) -> np.ndarray:
        out = serve(input=tf.constant(pipeline.transform(docs)))["probability"]
        return np.asarray(out).reshape(len(docs), -1)

    real = probability(background_docs if background_docs is not None else load_background())
    per_column = {}
    for j, column in enumerate(columns):
        general = [d["words"] for d in general_documents(600) if d["topic"] != column]
        unknown = [d["words"] for d in unknown_documents(200)]
        function_words = probability(FUNCTION_WORD_DOCS)[:, j]
        per_column[column] = {
            "general_false_positive_rate": round(float(np.mean(probability(general)[:, j] >= 0.5)), 4),
            "unknown_false_positive_rate": round(float(np.mean(probability(unknown)[:, j] >= 0.5)), 4),
            "background_labeled_rate": round(float(np.mean(real[:, j] >= 0.5)), 4),
            "function_words": [round(float(p), 3) for p in function_words],
            "function_words_max_from_prior": round(
                float(np.max(np.abs(function_words - NO_EVIDENCE_PRIOR))), 3
            ),
            "issue_rows": [round(float(p), 3) for p in probability(ISSUE_ROWS)[:, j]],
            "example": round(float(probability([EXAMPLE_WORDS])[0, j]), 3),
        }
    out: dict = {
        "version": int(version_dir.name),
        "vocabulary": len(pipeline.vocabulary),
        "background_documents": len(real),
        "background_labeled_any": round(float(np.mean(np.any(real >= 0.5, axis=1))), 4),
    }
    if len(columns) == 1:
        out.update(per_column[columns[0]])
    else:
        out["labels"] = per_column
    return out


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m bench.model_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-root", required=True, type=pathlib.Path)
    parser.add_argument("--models", default=",".join(SAMPLE_MODELS), help="comma-separated sample models")
    parser.add_argument(
        "--bundle", action="append", default=[], help="a bundle model under ROOT (repeatable)"
    )
    parser.add_argument(
        "--background",
        type=pathlib.Path,
        help="held-out background JSONL (default: trainer.background's held-out slice)",
    )
    args = parser.parse_args(argv)
    real = load_background(args.background)
    models = [m for m in args.models.split(",") if m]
    for model in models:
        if model not in SAMPLE_MODELS:
            parser.error(f"unknown sample model {model!r}; known: {', '.join(SAMPLE_MODELS)}")
    for model in models + args.bundle:
        label = SAMPLE_MODELS.get(model, "")
        report = measure(newest_version(args.model_root / model), label, real)
        print(json.dumps({"model": model, "label": label, **report}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
