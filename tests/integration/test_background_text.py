"""Issue 23 through the real parts: real text gets no label it has no evidence for.

The sample corpus with real background negatives (news paragraphs fetched at
set-up by trainer.background) is trained by the real Trainer (fastText recipe
jobs as subprocesses), served by labeler-modelserver and asked through the
Labeler at its default threshold: held-out background paragraphs (never in
any training corpus) get no label at the rates of docs/model-quality.md, a
document of function words only scores the no-evidence prior, and the old
example still answers 影视. Also: a job's result line reports the share of
held-out background text labeled, and validation before push can hold it
under a ceiling.

Needs the background text that `make test` fetches (`make background`); these
tests fail, not skip, without it.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from labeler.v1 import labeler_pb2
from modelspec.report import ResultReport, parse_line
from tests.support.labeler_support import (
    EXAMPLE,
    SAMPLE_LABELS,
    BackgroundLoop,
    health_status,
    labeler_config,
    stub,
    wait_until,
)
from tests.support.modelserver_process import ModelServerProcess
from tests.support.trainer_support import make_config, running_trainer
from trainer import background
from trainer.config import DEFAULT_CORPUS
from trainer.corpus import FUNCTION_WORDS, read_jsonl, write_corpus
from trainer.gate import GatePolicy
from trainer.recipes import RECIPES
from trainer.recipes.fasttext import PRIOR_LOGIT
from trainer.v1 import trainer_pb2

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
S = trainer_pb2
# The Trainer's short settings of test_trainer_end_to_end (a 2-core machine
# shared with other test runs), on a small corpus with its background share.
HYPERPARAMETERS = S.Hyperparameters(epochs=10, batch_size=16, embedding_dim=16, threads=1)
DOCS_PER_LABEL = 300
# The targets of issue 23 (docs/model-quality.md).
MAX_LABELED_PER_LABEL = 0.02
MAX_LABELED_ANY = 0.03
MAX_FROM_PRIOR = 0.05
PRIOR = 1 / (1 + math.exp(-PRIOR_LOGIT))
FUNCTION_WORD_DOCS = [
    list(FUNCTION_WORDS),
    # The known words of a documentation paragraph that the models called 影视 (0.79).
    ["的", "的", "那个", "的", "的", "的", "一个", "被", "是", "的", "的"],
]
BATCH = 500


def _result(lines: list[str]) -> ResultReport:
    reports = [r for r in map(parse_line, lines) if isinstance(r, ResultReport)]
    assert reports, f"no result line in the job's log: {lines[-5:]}"
    return reports[-1]


def test_held_out_real_background_text_gets_no_label_through_the_labeler(tmp_path):
    pool, held_out = background.require()  # BackgroundMissing says how to fetch it
    held = [d["words"] for d in read_jsonl(held_out)]
    # A real gate on the real machine; CPU neither holds nor kills (the machine is
    # shared: others' load must not fail or stall this test); memory still would.
    gate = GatePolicy(
        cpu_normal=101, cpu_danger=101, memory_normal=90, memory_danger=95, warmup_s=1, window_s=1
    )
    config = make_config(
        tmp_path,
        gate=gate,
        sample_interval_s=0.25,
        registry=dict(RECIPES),
        default_recipe="fasttext",
        default_corpus=DEFAULT_CORPUS,
    )
    train, _ = write_corpus(tmp_path / "corpus", seed=0, docs_per_label=DOCS_PER_LABEL, background=pool)
    # No held-out paragraph is in the training corpus.
    assert not {tuple(d["words"]) for d in read_jsonl(train)} & {tuple(w) for w in held}
    (config.data_root / "sample").mkdir()
    shutil.copy(train, config.data_root / DEFAULT_CORPUS)

    with running_trainer(config) as trainer:
        jobs = {
            m: trainer.start(m, label, hyperparameters=HYPERPARAMETERS) for m, label in SAMPLE_LABELS.items()
        }
        done = {m: trainer.wait(j.job_id, timeout=600) for m, j in jobs.items()}
        results = {m: _result(list(trainer.status(j.job_id, 1000).log_tail)) for m, j in jobs.items()}
    for model, job in done.items():
        assert job.state == S.JOB_STATE_SUCCEEDED, f"{model}: {job.reason}"
        # Every job's result line reports the held-out background share, beside the other rates.
        extra = results[model].extra
        assert extra["background_documents"] == len(held)
        assert extra["background_labeled_rate"] <= MAX_LABELED_PER_LABEL, (model, extra)
        assert {"general_false_positive_rate", "unknown_false_positive_rate"} <= set(extra)

    models_config = tmp_path / "models.config"
    models_config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{config.model_root / m}" model_platform: "tensorflow" }}\n'
            for m in SAMPLE_LABELS
        )
        + "}\n"
    )
    args = [
        "--port=0",
        f"--model_config_file={models_config}",
        "--file_system_poll_wait_seconds=1",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    ]
    with ModelServerProcess(args) as modelserver:
        target = f"127.0.0.1:{modelserver.port}"
        loop = BackgroundLoop()
        try:
            from labeler.server import create_server

            conf = labeler_config(config.model_root, {m: target for m in SAMPLE_LABELS}, timeout_ms=30000)
            server = loop.run(create_server(conf))
            port = server.port
            try:
                wait_until(
                    lambda: health_status(port) == 1, timeout=120, what="the Labeler to load every model"
                )
                channel, labeler = stub(port)
                with channel:
                    # The default threshold (0.5): no threshold in the request.
                    answers = []
                    for i in range(0, len(held), BATCH):
                        reply = labeler.ClassifyBatch(
                            labeler_pb2.ClassifyBatchRequest(
                                documents=[labeler_pb2.Document(words=w) for w in held[i : i + BATCH]]
                            ),
                            timeout=120,
                        )
                        assert not reply.failures, reply.failures
                        answers += [{s.label for s in r.labels} for r in reply.results]
                    grammar = labeler.ClassifyBatch(
                        labeler_pb2.ClassifyBatchRequest(
                            documents=[labeler_pb2.Document(words=w) for w in FUNCTION_WORD_DOCS],
                            threshold=0.0,
                        ),
                        timeout=30,
                    )
                    example = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=30)
            finally:
                loop.run(server.stop(2))
        finally:
            loop.close()

    assert len(answers) == len(held)
    per_label = {label: sum(label in a for a in answers) / len(held) for label in SAMPLE_LABELS.values()}
    labeled_any = sum(bool(a) for a in answers) / len(held)
    assert all(share <= MAX_LABELED_PER_LABEL for share in per_label.values()), per_label
    assert labeled_any <= MAX_LABELED_ANY, (labeled_any, per_label)

    assert not grammar.failures
    for words, result in zip(FUNCTION_WORD_DOCS, grammar.results, strict=True):
        scores = {s.label: s.probability for s in result.labels}
        assert set(scores) == set(SAMPLE_LABELS.values())
        far = {label: round(p, 3) for label, p in scores.items() if abs(p - PRIOR) > MAX_FROM_PRIOR}
        assert not far, (" ".join(words), far)

    assert not example.failures
    labels = {s.label for s in example.labels}
    assert "影视" in labels and "美妆" not in labels


# -- the ceiling in validation before push ---------------------------------------------


def _recipe(corpus, model_root, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "trainer.recipes.fasttext",
        "--model",
        "movie",
        "--label",
        "影视",
        "--corpus",
        str(corpus),
        "--model-root",
        str(model_root),
        *("--epochs", "6", "--batch-size", "16", "--embedding-dim", "8", "--threads", "1"),
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


def test_validation_refuses_a_version_over_the_background_ceiling(tmp_path):
    """The recipe as issue 23 found it (synthetic negatives only, every word in
    the vocabulary, no stopwords) labels real text: a ceiling keeps that version from serving;
    the same corpus with real background negatives and today's vocabulary passes it."""
    pool, held_out = background.require()
    old_corpus, _ = write_corpus(tmp_path / "old", seed=0, docs_per_label=200)
    rejected = _recipe(
        old_corpus,
        tmp_path / "models",
        "--min-word-log-ratio",
        "0",
        "--stopword-share",
        "0",
        "--validate",
        "--max-background-labeled",
        "0.03",
    )
    assert rejected.returncode == 3, rejected.stderr[-2000:]
    verdict = [
        json.loads(line[len("validation ") :])
        for line in rejected.stdout.splitlines()
        if line.startswith("validation ")
    ]
    assert verdict and verdict[0]["outcome"] == "REJECTED"
    assert any("background text labeled" in f and "> ceiling 0.030" in f for f in verdict[0]["failures"]), (
        verdict
    )

    new_corpus, _ = write_corpus(tmp_path / "new", seed=0, docs_per_label=200, background=pool)
    pushed = _recipe(new_corpus, tmp_path / "models", "--validate", "--max-background-labeled", "0.03")
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    result = _result(pushed.stdout.splitlines())
    assert result.extra["background_labeled_rate"] <= 0.03
    assert result.extra["background_documents"] == sum(1 for _ in read_jsonl(held_out))


def test_bench_model_quality_prints_the_background_share_for_any_version(trained_model_root):
    """bench.model_quality reads an exported version (any recipe's) and prints
    its share of held-out background text labeled and its function-word scores."""
    held = sum(1 for _ in read_jsonl(background.require()[1]))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.model_quality",
            "--model-root",
            str(trained_model_root),
            "--models",
            "movie,beauty",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["model"] for r in lines] == ["movie", "beauty"]
    for r in lines:
        assert r["background_documents"] == held
        assert 0.0 <= r["background_labeled_rate"] <= 1.0
        assert len(r["function_words"]) == 3 and r["function_words_max_from_prior"] >= 0.0
