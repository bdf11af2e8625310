"""Feature cost per document and per batch of 256: the vectorised pipeline
(modelspec.features) against a naive per-token Python implementation of the same
Keras semantics, measured in one run.

    .venv/bin/python -m bench.features [--quick]

Also shows what the old system paid per request on top: re-reading the
vocabulary and ``eval()``-ing the n-gram table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

from modelspec.features import FeaturePipeline, FeatureSettings
from trainer.corpus import generate

BATCH = 256


def naive_features(docs: Sequence[Sequence[str]], word_index: dict, token_indice: dict, s: FeatureSettings):
    """One token at a time, as the old system's fea_process did (without its file reads)."""
    rows = []
    for doc in docs:
        seq = [word_index[w.lower()] for w in doc if w.lower() in word_index]
        seq = seq[-s.cutlen :]
        seq = [0] * (s.cutlen - len(seq)) + seq
        new = seq[:]
        for n in range(2, s.ngram_range + 1):
            for i in range(len(new) - n + 1):
                gram = tuple(new[i : i + n])
                if gram in token_indice:
                    new.append(token_indice[gram])
        new = new[-s.maxlen :]
        rows.append([0] * (s.maxlen - len(new)) + new)
    return np.array(rows, dtype=np.int32)


def best_per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Seconds per call: the best of ``repeats`` runs of ``calls`` calls (least disturbed by
    other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def run(quick: bool) -> dict:
    docs = [d["words"] for d in generate(docs_per_label=2000, seed=0)]
    train, probe = docs[1000:], docs[:1000]
    pipeline = FeaturePipeline.fit(train, FeatureSettings(), max_vocab=20000, min_ngram_count=2)
    s, word_index, table = pipeline.settings, pipeline.word_index, pipeline.ngram_table
    assert np.array_equal(pipeline.transform(probe), naive_features(probe, word_index, table, s))

    repeats = 3 if quick else 7
    singles = probe[:100] if quick else probe
    batches = [probe[i : i + BATCH] for i in range(0, len(probe) - BATCH + 1, BATCH)]
    rounds = 1 if quick else 3

    def vec_single():
        for d in singles:
            pipeline.transform_one(d)

    def naive_single():
        for d in singles:
            naive_features([d], word_index, table, s)

    def vec_batch():
        for b in batches:
            pipeline.transform(b)

    def naive_batch():
        for b in batches:
            naive_features(b, word_index, table, s)

    result = {
        "vectorised_one_doc_us": best_per_call(vec_single, rounds, repeats) / len(singles) * 1e6,
        "naive_one_doc_us": best_per_call(naive_single, rounds, repeats) / len(singles) * 1e6,
        "vectorised_batch256_us": best_per_call(vec_batch, rounds, repeats) / len(batches) * 1e6,
        "naive_batch256_us": best_per_call(naive_batch, rounds, repeats) / len(batches) * 1e6,
    }
    # The old system per request: read the tokenizer and eval() the n-gram table's repr.
    with tempfile.TemporaryDirectory() as d:
        pipeline.save(d)
        table_repr = repr(table)
        result["old_per_request_reload_us"] = (
            best_per_call(
                lambda: (FeaturePipeline.load(d), eval(table_repr)),
                1,
                repeats,  # noqa: S307 - measuring the old way
            )
            * 1e6
        )
    result.update(
        vocabulary=len(pipeline.vocabulary),
        ngrams=len(table),
        mean_words_per_doc=round(statistics.mean(len(d) for d in probe), 1),
        batch_speedup=result["naive_batch256_us"] / result["vectorised_batch256_us"],
        one_doc_speedup=result["naive_one_doc_us"] / result["vectorised_one_doc_us"],
        quick=quick,
        python=platform.python_version(),
        numpy=np.__version__,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.features", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer documents and repeats")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args(argv)
    r = run(args.quick)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"features: vocabulary {r['vocabulary']}, n-grams {r['ngrams']}, "
        f"{r['mean_words_per_doc']} words/doc, cutlen 60, ngram_range 2, maxlen 119"
    )
    print("| case | vectorised (modelspec.features) | naive per-token Python | naive / vectorised |")
    print("|---|---|---|---|")
    print(
        f"| one document (transform_one) | {r['vectorised_one_doc_us']:.1f} µs | {r['naive_one_doc_us']:.1f} µs "
        f"| {r['one_doc_speedup']:.2f}x |"
    )
    print(
        f"| batch of {BATCH} | {r['vectorised_batch256_us'] / 1000:.2f} ms "
        f"({r['vectorised_batch256_us'] / BATCH:.1f} µs/doc) | {r['naive_batch256_us'] / 1000:.2f} ms "
        f"({r['naive_batch256_us'] / BATCH:.1f} µs/doc) | {r['batch_speedup']:.2f}x |"
    )
    print(
        f"| old system's per-request reload (vocabulary + eval of the n-gram table) | - | "
        f"{r['old_per_request_reload_us'] / 1000:.1f} ms | |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
