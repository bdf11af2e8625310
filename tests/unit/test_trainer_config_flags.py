"""``trainer serve``'s flags are made from TrainerConfig's fields
(trainer.config_flags): every field has one, its help is the field's
docstring, the defaults are the fields' defaults, and the flag names the
hand-written parser had keep working."""

from __future__ import annotations

import dataclasses

import pytest

from trainer import cli
from trainer.config import GatePolicy, TrainerConfig
from trainer.config_flags import config_from_args, every_flag, field_docs
from trainer.recipes import RECIPES
from trainer.verdicts import ValidationPolicy

ROOTS = ["--data-root", "d", "--model-root", "m", "--state-dir", "s"]


def serve(*args: str) -> TrainerConfig:
    parsed = cli._parser().parse_args(["serve", *ROOTS, *args])
    return config_from_args(parsed)


def test_every_field_has_a_flag_listed_by_help_with_its_docstring(capsys):
    fields = [f.name for f in dataclasses.fields(TrainerConfig) if f.name not in ("gate", "validation")]
    fields += [f.name for f in dataclasses.fields(GatePolicy)] + [
        f.name for f in dataclasses.fields(ValidationPolicy)
    ]
    flags = every_flag()
    assert len(flags) == len(fields) == len(set(flags))
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    for flag in flags:
        assert flag in serve_help, flag
    for cls in (TrainerConfig, GatePolicy, ValidationPolicy):
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, cls  # every field documented
    assert "Seconds between SIGTERM and SIGKILL" in " ".join(serve_help.split())


def test_defaults_are_the_fields_defaults():
    assert serve() == TrainerConfig(data_root="d", model_root="m", state_dir="s")


def test_the_hand_written_flag_names_keep_working():
    config = serve(
        "--host", "127.0.0.2", "--port", "7", "--default-corpus", "c.jsonl",
        "--cpu-normal", "40", "--cpu-danger", "90", "--memory-normal", "41", "--memory-danger", "91",
        "--warmup", "1.5", "--window", "2.5", "--sample-interval", "0.25",
        "--kill-grace", "3", "--overload-policy", "fail", "--max-requeues", "5",
        "--requeue-backoff", "2", "--max-requeue-backoff", "9", "--max-log-bytes", "8192",
        "--stop-jobs-on-exit", "--shutdown-budget", "6",
    )  # fmt: skip
    assert (config.host, config.port, config.default_corpus) == ("127.0.0.2", 7, "c.jsonl")
    assert config.gate == GatePolicy(40, 90, 41, 91, warmup_s=1.5, window_s=2.5)
    assert (config.sample_interval_s, config.kill_grace_s, config.overload_policy) == (0.25, 3.0, "fail")
    assert (config.max_requeues, config.requeue_backoff_s, config.max_requeue_backoff_s) == (5, 2.0, 9.0)
    assert (config.max_log_bytes, config.stop_jobs_on_exit, config.shutdown_budget_s) == (8192, True, 6.0)


def test_fields_without_a_flag_before_are_reachable():
    config = serve(
        "--settle", "4", "--tick", "0.5", "--cgroup-root", "none", "--max-sweep-trials", "7",
        "--recipe", "fasttext", "--default-recipe", "fasttext", "--store-write-wait", "1",
        "--validation-floor", "f1=0.5", "--validation-floor", "recall=0.25", "--validation-max-regression", "0.1",
        "--validation-regression-metric", "recall", "--validation-held-out-corpus", "h.jsonl",
    )  # fmt: skip
    assert (config.gate.settle_s, config.tick_s, config.cgroup_root) == (4.0, 0.5, "none")
    assert (config.max_sweep_trials, config.store_write_wait_s) == (7, 1.0)
    assert config.registry == {"fasttext": RECIPES["fasttext"]} and config.default_recipe == "fasttext"
    assert config.validation == ValidationPolicy(
        floors={"f1": 0.5, "recall": 0.25},
        max_regression=0.1,
        regression_metric="recall",
        held_out_corpus="h.jsonl",
    )
    assert serve("--validation-skip").validation.skip is True
