"""False positives of exported models on text that should get no label (issue 14).

``python -m bench.model_quality --model-root ROOT [--models movie,beauty,...]``

For the newest version of each sample model under ROOT (an exported SavedModel
with its feature artifacts, as the model server serves it): the share of
general text of other topics and of unknown-word text that it labels at 0.5
(``trainer.corpus.general_documents`` / ``unknown_documents``, the sets a
training job reports on), and its probability for the rows of the issue's
table and the old example. It only reads versions, so models trained by an
older recipe can be measured on the same sets (docs/model-quality.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from modelspec.features import FeaturePipeline
from trainer.corpus import EXAMPLE_WORDS, SAMPLE_MODELS, general_documents, unknown_documents

ISSUE_ROWS = [
    ["股票", "市场", "今日", "大涨"],
    ["今天", "天气", "很好", "我们", "去", "公园"],
    ["qqq", "www", "eee"],
    ["的"],
]


def newest_version(model_dir: pathlib.Path) -> pathlib.Path:
    versions = sorted((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise SystemExit(f"{model_dir} has no version")
    return versions[-1]


def measure(version_dir: pathlib.Path, label: str) -> dict:
    import tensorflow as tf

    pipeline, _ = FeaturePipeline.load(version_dir)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]

    def probability(docs: Sequence[Sequence[str]]) -> np.ndarray:
        out = serve(input=tf.constant(pipeline.transform(docs)))["probability"]
        return np.asarray(out).reshape(-1)

    general = [d["words"] for d in general_documents(600) if d["topic"] != label]
    unknown = [d["words"] for d in unknown_documents(200)]
    return {
        "version": int(version_dir.name),
        "general_false_positive_rate": round(float(np.mean(probability(general) >= 0.5)), 4),
        "unknown_false_positive_rate": round(float(np.mean(probability(unknown) >= 0.5)), 4),
        "issue_rows": [round(float(p), 3) for p in probability(ISSUE_ROWS)],
        "example": round(float(probability([EXAMPLE_WORDS])[0]), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m bench.model_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-root", required=True, type=pathlib.Path)
    parser.add_argument("--models", default=",".join(SAMPLE_MODELS), help="comma-separated sample models")
    args = parser.parse_args(argv)
    for model in args.models.split(","):
        if model not in SAMPLE_MODELS:
            parser.error(f"unknown sample model {model!r}; known: {', '.join(SAMPLE_MODELS)}")
        report = measure(newest_version(args.model_root / model), SAMPLE_MODELS[model])
        print(json.dumps({"model": model, "label": SAMPLE_MODELS[model], **report}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
