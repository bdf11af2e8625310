"""The fastText training recipe: its registry, the exported TF Serving version,
atomic publishing, the command line, resuming after SIGKILL, and model quality."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from modelspec.features import FeaturePipeline
from modelspec.versions import versions
from rpc.errors import InvalidArgument, NotFound
from trainer.corpus import EXAMPLE_WORDS, SAMPLE_MODELS, read_jsonl, write_corpus
from trainer.recipes import FASTTEXT, RECIPES, get_recipe
from trainer.recipes import export as export_mod

pytestmark = pytest.mark.timeout(300)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# Tiny but learnable: what a CLI run in a test can afford.
CLI_PARAMS = ["--epochs", "6", "--batch-size", "16", "--embedding-dim", "8", "--threads", "1"]


def recipe_argv(corpus, model_root, *extra):
    return [
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
        *CLI_PARAMS,
        *extra,
    ]


def parse_lines(stdout: str, prefix: str) -> list[dict]:
    return [
        json.loads(line[len(prefix) + 1 :]) for line in stdout.splitlines() if line.startswith(prefix + " ")
    ]


def numeric_dirs(model_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.exists() else []


# -- registry ------------------------------------------------------------------


def test_registry_builds_a_validated_argv_with_defaults_filled_in():
    argv = get_recipe("").argv(
        model="movie",
        label="影视",
        corpus="c/train.jsonl",
        model_root="var/models",
        params={"epochs": 3},
        checkpoint_dir="ck",
        seed=5,
        python="py",
    )
    assert argv[:3] == ["py", "-m", "trainer.recipes.fasttext"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--model"] == "movie" and flags["--label"] == "影视"
    assert flags["--epochs"] == "3" and flags["--embedding-dim"] == "50" and flags["--maxlen"] == "119"
    assert flags["--checkpoint-dir"] == "ck" and flags["--seed"] == "5"
    assert RECIPES["fasttext"] is FASTTEXT
    assert FASTTEXT.defaults() == {
        "epochs": 20,
        "batch_size": 64,
        "embedding_dim": 50,
        "cutlen": 60,
        "ngram_range": 2,
        "maxlen": 119,
        "max_vocab": 20000,
        "min_ngram_count": 2,
        "threads": 1,
    }


@pytest.mark.parametrize(
    "params,message",
    [
        ({"epochs": 0}, "epochs must be an integer in 1..200"),
        ({"ngram_range": 4}, "ngram_range must be an integer in 1..3"),
        ({"threads": "2"}, "threads must be an integer"),
        ({"learning_rate": 1}, "no hyperparameter learning_rate"),
    ],
)
def test_registry_rejects_bad_hyperparameters_saying_what_is_allowed(params, message):
    with pytest.raises(InvalidArgument, match=message):
        FASTTEXT.argv(model="movie", label="影视", corpus="c", model_root="m", params=params)


@pytest.mark.parametrize("model", ["../etc", "Movie", "", "a/b", "x" * 64, "-rf"])
def test_registry_rejects_model_names_that_are_not_plain_words(model):
    with pytest.raises(InvalidArgument, match="model name"):
        FASTTEXT.argv(model=model, label="影视", corpus="c", model_root="m")


def test_registry_rejects_empty_labels_and_unknown_recipes():
    with pytest.raises(InvalidArgument, match="label"):
        FASTTEXT.argv(model="movie", label=" ", corpus="c", model_root="m")
    with pytest.raises(NotFound, match="known recipes: fasttext"):
        get_recipe("bert")


def test_importing_the_registry_does_not_start_tensorflow():
    code = "import sys, trainer.recipes, trainer.recipes.fasttext; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert out.stdout.strip() == "False", out.stderr


# -- the exported version --------------------------------------------------------


def test_exported_version_has_the_agreed_layout_and_signature(trained_models):
    import tensorflow as tf

    for model, result in trained_models.items():
        d = result.version_dir
        assert d.name == str(result.version) and d.parent.name == model
        assert (d / "saved_model.pb").is_file() and (d / "variables").is_dir()
        sig = tf.saved_model.load(str(d)).signatures["serving_default"]
        (_, inputs), outputs = sig.structured_input_signature, sig.structured_outputs
        assert list(inputs) == ["input"] and inputs["input"].dtype == tf.int32
        assert inputs["input"].shape.as_list() == [None, 119]
        assert list(outputs) == ["probability"] and outputs["probability"].dtype == tf.float32
        assert outputs["probability"].shape.as_list() == [None, 1]
        _, meta = FeaturePipeline.load(d)
        assert {k: meta[k] for k in ("label", "model", "signature_name", "input_name", "output_name")} == {
            "label": SAMPLE_MODELS[model],
            "model": model,
            "signature_name": "serving_default",
            "input_name": "input",
            "output_name": "probability",
        }


def test_exported_version_gives_the_trained_models_probabilities(trained_models, sample_corpus):
    import tensorflow as tf

    docs = [d["words"] for d in read_jsonl(sample_corpus.test)]
    for result in trained_models.values():
        x = result.pipeline.transform(docs)
        expected = result.model.predict(x, verbose=0)
        served = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"](
            input=tf.constant(x)
        )
        np.testing.assert_allclose(served["probability"].numpy(), expected, rtol=1e-5, atol=1e-6)
        assert 0.02 < float(np.mean(expected >= 0.5)) < 0.6  # it says yes to some and no to others


def test_fixture_models_are_good_enough_to_serve(trained_models):
    # Small and quick, but they must classify well for the serving tests to mean anything.
    f1 = {m: round(r.f1, 3) for m, r in trained_models.items()}
    assert all(v >= 0.8 for v in f1.values()), f1


def test_training_and_serving_compute_identical_features(trained_models, sample_corpus):
    docs = [d["words"] for d in read_jsonl(sample_corpus.test)] + [EXAMPLE_WORDS, [], ["未见过的词"]]
    for result in trained_models.values():
        served, _ = FeaturePipeline.load(result.version_dir)
        assert np.array_equal(served.transform(docs), result.pipeline.transform(docs))
        assert served.num_features == result.pipeline.num_features


def test_old_example_is_a_movie_and_not_beauty_through_the_exported_versions(trained_model_root):
    import tensorflow as tf

    def probability(model: str) -> float:
        version_dir = trained_model_root / model / str(versions(trained_model_root / model)[-1])
        pipeline, _ = FeaturePipeline.load(version_dir)
        sig = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        return float(sig(input=tf.constant(pipeline.transform_one(EXAMPLE_WORDS)))["probability"][0, 0])

    assert probability("movie") >= 0.5
    assert probability("beauty") < 0.5


# -- versions and atomic publishing ----------------------------------------------


def test_new_versions_are_strictly_greater_even_with_a_future_version_present(
    model_root_copy, export_new_version
):
    movie = model_root_copy / "movie"
    future = int(numeric_dirs(movie)[-1]) + 10_000
    (movie / str(future)).mkdir()
    (movie / "not-a-version").mkdir()
    first = export_new_version(model_root_copy, "movie")
    second = export_new_version(model_root_copy, "movie")
    assert future < first < second
    assert versions(movie)[-2:] == [first, second]


def test_failed_export_leaves_no_version_and_no_temp_dir(model_root_copy, trained_models, monkeypatch):
    # A disk error after the SavedModel is written, while the features are saved.
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    movie = model_root_copy / "movie"
    before = sorted(os.listdir(movie))
    result = trained_models["movie"]
    monkeypatch.setattr(FeaturePipeline, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_mod.export_version(result.model, result.pipeline, model_root_copy, "movie", "影视")
    assert sorted(os.listdir(movie)) == before


def test_a_polling_server_only_ever_sees_whole_versions(model_root_copy, trained_models):
    movie = model_root_copy / "movie"
    seen: dict[str, bool] = {}
    temp_names: set[str] = set()
    done = threading.Event()

    def poll():
        while not done.is_set():
            for name in os.listdir(movie):
                if name.isdigit() and name not in seen:
                    d = movie / name
                    seen[name] = all(
                        (d / f).exists()
                        for f in (
                            "saved_model.pb",
                            "variables/variables.index",
                            "assets.extra/features.json",
                            "assets.extra/vocabulary.json",
                            "assets.extra/ngrams.npz",
                        )
                    )
                elif not name.isdigit():
                    temp_names.add(name)

    poller = threading.Thread(target=poll)
    poller.start()
    result = trained_models["movie"]
    try:
        for _ in range(3):
            export_mod.export_version(result.model, result.pipeline, model_root_copy, "movie", "影视")
    finally:
        done.set()
        poller.join()
    assert len(seen) >= 3 and all(seen.values()), seen
    # The poller did catch versions being written, under a non-numeric name.
    assert temp_names and all(n.startswith(".tmp-") for n in temp_names)
    assert not [n for n in os.listdir(movie) if not n.isdigit()]


def test_temp_dirs_of_dead_exports_are_removed_on_the_next_export(model_root_copy, export_new_version):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = model_root_copy / "movie" / f".tmp-123-{dead.stdout.strip()}"
    (stale / "variables").mkdir(parents=True)
    export_new_version(model_root_copy, "movie")
    assert not stale.exists()


# -- the command line, as a Trainer job runs it -----------------------------------


def test_command_line_trains_reports_and_exports(sample_corpus, tmp_path):
    proc = subprocess.run(
        recipe_argv(sample_corpus.train, tmp_path, "--test-corpus", str(sample_corpus.test)),
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = parse_lines(proc.stdout, "progress")
    assert [p["epoch"] for p in progress] == list(range(1, len(progress) + 1)) and progress
    assert set(progress[0]) == {"epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert progress[0]["epochs"] == 6
    (result,) = parse_lines(proc.stdout, "result")
    assert pathlib.Path(result["version_dir"]) == tmp_path / "movie" / str(result["version"])
    assert (tmp_path / "movie" / str(result["version"]) / "saved_model.pb").is_file()
    assert 0.0 <= result["precision"] <= 1 and 0.0 <= result["recall"] <= 1 and 0.0 <= result["f1"] <= 1
    assert result["test_documents"] == sum(1 for _ in read_jsonl(sample_corpus.test))
    # False-positive rates beside precision, recall and F1: held-out negatives,
    # general text of other topics and unknown-word text.
    for key in ("false_positive_rate", "general_false_positive_rate", "unknown_false_positive_rate"):
        assert 0.0 <= result[key] <= 1.0, (key, result)
    assert result["general_documents"] > 0 and result["unknown_documents"] > 0
    # --threads reached TensorFlow before its first op.
    assert (result["intra_op_threads"], result["inter_op_threads"]) == (1, 1)
    assert os.listdir(tmp_path / "movie") == [str(result["version"])]


def test_no_push_trains_and_reports_held_out_metrics_but_exports_nothing(sample_corpus, tmp_path):
    """A sweep trial: its held-out metrics are all it delivers."""
    proc = subprocess.run(
        recipe_argv(sample_corpus.train, tmp_path, "--test-corpus", str(sample_corpus.test), "--no-push"),
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = parse_lines(proc.stdout, "result")
    assert result["version"] == 0 and not result.get("version_dir")  # none exported: none named
    assert 0.5 <= result["f1"] <= 1 and result["test_documents"] > 0
    assert not (tmp_path / "movie").exists() or os.listdir(tmp_path / "movie") == []
    # Each epoch's line carries the held-out metrics a sweep's pruner judges.
    progress = parse_lines(proc.stdout, "progress")
    assert progress and all(set(p["held_out"]) == {"precision", "recall", "f1"} for p in progress)
    assert all(0 <= p["held_out"]["f1"] <= 1 for p in progress)


def test_command_line_rejects_bad_arguments_with_exit_2(sample_corpus, tmp_path):
    bad_model = subprocess.run(
        recipe_argv(sample_corpus.train, tmp_path)[:4]
        + ["../x"]
        + recipe_argv(sample_corpus.train, tmp_path)[5:],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert bad_model.returncode == 2 and "model name '../x' is not allowed" in bad_model.stderr
    no_label = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.recipes.fasttext",
            "--model",
            "movie",
            "--label",
            "没有这个标签",
            "--corpus",
            str(sample_corpus.train),
            "--model-root",
            str(tmp_path),
            *CLI_PARAMS,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert no_label.returncode == 2 and "carries label '没有这个标签'" in no_label.stderr
    assert not (tmp_path / "movie").exists() and not (tmp_path / "../x").exists()


def test_export_failing_on_a_real_write_error_exits_nonzero_and_cleans_up(sample_corpus, tmp_path):
    def small_files_only():
        # Writes past 60 kB fail with EFBIG (instead of SIGXFSZ killing us):
        # saved_model.pb fits, the variables file does not.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    proc = subprocess.run(
        recipe_argv(sample_corpus.train, tmp_path, "--embedding-dim", "16"),
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
        preexec_fn=small_files_only,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "File too large" in proc.stderr and "result " not in proc.stdout
    assert parse_lines(proc.stdout, "progress")  # it trained, then failed while exporting
    assert os.listdir(tmp_path / "movie") == []


def test_a_killed_job_resumes_after_its_last_finished_epoch(sample_corpus, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    argv = recipe_argv(
        sample_corpus.train,
        tmp_path / "models",
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--patience",
        "50",
        "--checkpoint-dir",
        str(checkpoint),
    )
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith('progress {"epoch": 3,'):
            first.send_signal(signal.SIGKILL)
            break
    lines += first.stdout.readlines()
    assert first.wait(timeout=60) == -signal.SIGKILL
    killed = parse_lines("".join(lines), "progress")
    last = killed[-1]["epoch"]
    assert 3 <= last < 8 and not parse_lines("".join(lines), "result")
    assert not numeric_dirs(tmp_path / "models" / "movie")

    second = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=ENV)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = parse_lines(second.stdout, "progress")
    assert [p["epoch"] for p in resumed] == list(range(last + 1, 9))
    # The weights came back too, not just the epoch counter.
    assert resumed[0]["loss"] < killed[0]["loss"]
    (result,) = parse_lines(second.stdout, "result")
    assert numeric_dirs(tmp_path / "models" / "movie") == [str(result["version"])]
    assert not checkpoint.exists()  # done: a later job starts afresh


# -- quality ---------------------------------------------------------------------


@pytest.mark.slow
def test_default_recipe_reaches_f1_0_9_and_labels_no_evidence_text_rarely(tmp_path):
    """The four sample models with the default hyperparameters, on a corpus half
    the default size (the full-size run is recorded in docs/benchmarks.md)."""
    import io

    import tensorflow as tf

    from trainer.recipes.fasttext import TrainConfig, train

    train_path, test_path = write_corpus(tmp_path / "corpus", seed=0, docs_per_label=1000)
    results = {
        model: train(
            TrainConfig(model, label, train_path, tmp_path / "models", test_corpus=test_path),
            out=io.StringIO(),
        )
        for model, label in SAMPLE_MODELS.items()
    }
    f1 = {m: round(r.f1, 3) for m, r in results.items()}
    assert all(v >= 0.9 for v in f1.values()), f1
    # Issue 14: general text of other topics and unknown-word text get no label.
    fpr = {m: (round(r.general.rate, 3), round(r.unknown.rate, 3)) for m, r in results.items()}
    assert all(max(rates) <= 0.05 for rates in fpr.values()), fpr

    def example_probability(model: str) -> float:
        sig = tf.saved_model.load(str(results[model].version_dir)).signatures["serving_default"]
        return float(
            sig(input=tf.constant(results[model].pipeline.transform_one(EXAMPLE_WORDS)))["probability"][0, 0]
        )

    assert example_probability("movie") >= 0.5
    assert example_probability("beauty") < 0.5
