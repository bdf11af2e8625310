"""Validation before push, the pure part (trainer.push): the Start's policy
checked and resolved, the verdict, the recipe flags, and the verdict read back
from a job's output and stored."""

from __future__ import annotations

import json

import pytest

from modelspec.report import ValidationReport, parse_line
from rpc.errors import InvalidArgument
from trainer import push
from trainer.domain import (
    HeldOutMetrics,
    JobRecord,
    JobState,
    PushDecision,
    PushOutcome,
    ValidationPolicy,
    ValidationRequest,
)
from trainer.recipes import FASTTEXT
from trainer.recipes.fasttext import parse_args
from trainer.store import JobStore

DEFAULTS = ValidationPolicy(floors={"precision": 0.5}, max_regression=0.02, regression_metric="f1")
GOOD = HeldOutMetrics(precision=0.9, recall=0.88, f1=0.89, documents=120)
BAD = HeldOutMetrics(precision=0.3, recall=0.5, f1=0.375, documents=120)


def resolve(**fields) -> ValidationPolicy | None:
    return push.resolve_policy(ValidationRequest(**fields), DEFAULTS, "fasttext", True)


# -- the policy --------------------------------------------------------------------


def test_unset_parts_take_the_trainers_defaults():
    assert resolve() == DEFAULTS
    assert resolve(floors={"f1": 0.7}) == ValidationPolicy({"f1": 0.7}, 0.02, "f1")
    assert resolve(max_regression=0.0, regression_metric="recall") == ValidationPolicy(
        {"precision": 0.5}, 0.0, "recall"
    )
    skipped = resolve(skip=True, held_out_corpus="eval.jsonl")
    assert skipped.skip and not skipped.floors and skipped.held_out_corpus == "eval.jsonl"


@pytest.mark.parametrize(
    "fields,says",
    [
        (dict(floors={"f1": 1.5}), "validation.floors['f1'] must be in [0, 1], got 1.5"),
        (dict(floors={"recall": -0.1}), "validation.floors['recall'] must be in [0, 1]"),
        (dict(floors={"f1": float("nan")}), "validation.floors['f1'] must be in [0, 1]"),
        (dict(floors={"auc": 0.5}), "validation.floors has an unknown metric 'auc'; the recipe reports"),
        (dict(max_regression=2.0), "validation.max_regression must be in [0, 1]"),
        (dict(max_regression=-0.01), "validation.max_regression must be in [0, 1]"),
        (dict(regression_metric="loss"), "validation.regression_metric 'loss' is not a metric"),
        (dict(skip=True, floors={"f1": 0.5}), "validation.skip pushes without validating"),
        (dict(skip=True, max_regression=0.1), "validation.skip pushes without validating"),
    ],
)
def test_bad_policies_are_invalid_arguments_naming_the_field(fields, says):
    with pytest.raises(InvalidArgument) as err:
        resolve(**fields)
    assert says in str(err.value)


def test_a_recipe_that_cannot_validate_takes_no_policy():
    assert push.resolve_policy(ValidationRequest(), DEFAULTS, "fake", False) is None
    with pytest.raises(InvalidArgument, match="recipe 'fake' does not validate"):
        push.resolve_policy(ValidationRequest(floors={"f1": 0.5}), DEFAULTS, "fake", False)


# -- the verdict -------------------------------------------------------------------


def test_a_better_version_is_pushed_with_both_metrics():
    d = push.decide(DEFAULTS, 200, GOOD, 100, BAD)
    assert d.outcome is PushOutcome.PUSHED and not d.failures
    assert (d.candidate, d.served, d.served_version) == (GOOD, BAD, 100)
    assert "f1 0.890 vs 0.375 of served version 100" in d.reason


def test_a_regression_beyond_the_tolerance_is_rejected_and_says_by_how_much():
    d = push.decide(DEFAULTS, 200, BAD, 100, GOOD)
    assert d.outcome is PushOutcome.REJECTED
    assert d.failures == (
        "precision 0.300 < floor 0.500",
        "f1 0.375 vs 0.890 of served version 100 on the same 120 held-out documents: 0.515 lower, "
        "more than the tolerance 0.020",
    )
    assert d.reason.startswith("not pushed: precision 0.300 < floor 0.500; f1 0.375 vs 0.890")


def test_a_drop_within_the_tolerance_passes_and_one_just_beyond_does_not():
    served = HeldOutMetrics(0.9, 0.9, 0.90, 100)
    within = HeldOutMetrics(0.9, 0.9, 0.88, 100)
    beyond = HeldOutMetrics(0.9, 0.9, 0.879, 100)
    assert push.decide(DEFAULTS, 2, within, 1, served).outcome is PushOutcome.PUSHED
    assert push.decide(DEFAULTS, 2, beyond, 1, served).outcome is PushOutcome.REJECTED


def test_floors_alone_judge_a_first_version_or_one_whose_served_version_cannot_be_scored():
    first = push.decide(DEFAULTS, 1, GOOD)
    assert first.outcome is PushOutcome.PUSHED and "no version was served" in first.reason
    assert push.decide(DEFAULTS, 1, BAD).failures == ("precision 0.300 < floor 0.500",)
    broken = push.decide(DEFAULTS, 2, GOOD, 1, None, "OSError: no saved_model.pb")
    assert broken.outcome is PushOutcome.PUSHED and "could not be scored (OSError" in broken.reason


def test_skip_pushes_whatever_the_metrics():
    d = push.decide(ValidationPolicy(skip=True), 2, BAD, 1, None)
    assert d.outcome is PushOutcome.PUSHED_UNVALIDATED and not d.failures


def test_a_rejected_decision_says_where_it_is_kept():
    d = push.kept_at(push.decide(DEFAULTS, 2, BAD, 1, GOOD), "movie/rejected/2")
    assert d.rejected_path == "movie/rejected/2" and d.reason.endswith(
        "kept for inspection in movie/rejected/2"
    )


# -- to the recipe and back ---------------------------------------------------------


def test_the_policy_reaches_the_recipe_as_flags_and_comes_back_the_same():
    policy = ValidationPolicy({"f1": 0.8, "recall": 0.25}, 0.05, "recall")
    argv = FASTTEXT.argv(
        model="movie",
        label="影视",
        corpus="c.jsonl",
        model_root="m",
        validation=policy,
        held_out_path="/d/e.jsonl",
    )
    tail = argv[argv.index("--validate") :]
    assert tail == [
        "--validate",
        "--floor",
        "f1=0.8",
        "--floor",
        "recall=0.25",
        "--max-regression",
        "0.05",
        "--regression-metric",
        "recall",
        "--test-corpus",
        "/d/e.jsonl",
    ]
    cfg = parse_args(argv[3:])
    assert cfg.validation == policy and cfg.test_corpus == "/d/e.jsonl"
    skip = FASTTEXT.argv(
        model="movie", label="影视", corpus="c", model_root="m", validation=ValidationPolicy(skip=True)
    )
    assert parse_args(skip[3:]).validation.skip
    assert (
        parse_args(FASTTEXT.argv(model="movie", label="影视", corpus="c", model_root="m")[3:]).validation
        is None
    )


def test_the_verdict_line_is_read_back_into_the_job_and_stored(tmp_path):
    decision = push.kept_at(push.decide(DEFAULTS, 2, BAD, 1, GOOD), "movie/rejected/2")
    line = "validation " + json.dumps(decision.to_dict(), ensure_ascii=False)
    record = JobRecord("movie-1", "fasttext", "movie", "影视", "c", {}, JobState.RUNNING, 1.0)
    record.validation = DEFAULTS
    report = parse_line(line)
    assert report is not None and push.fold_report(record, report)
    assert record.push == decision and push.rejected(record)
    assert not push.fold_report(record, parse_line('progress {"epoch": 1, "epochs": 2}'))
    assert not push.fold_report(record, ValidationReport({"outcome": "MAYBE"}))  # malformed: ignored
    assert record.push == decision

    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        stored, _ = store.insert(record)
        assert store.get("movie-1").push == decision and store.get("movie-1").validation == DEFAULTS
        record.push = None
        store.update(record, "push")
        assert store.get("movie-1").push is None
    finally:
        store.close()


def test_a_schema_1_store_gains_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE,
        recipe TEXT NOT NULL, model TEXT NOT NULL, label TEXT NOT NULL, corpus TEXT NOT NULL,
        params TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
        pid_create_time REAL NOT NULL DEFAULT 0, create_time REAL NOT NULL, start_time REAL, end_time REAL,
        exit_code INTEGER, attempts INTEGER NOT NULL DEFAULT 0, overload_kills INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0, model_version INTEGER NOT NULL DEFAULT 0,
        progress TEXT NOT NULL DEFAULT '{}', gate TEXT NOT NULL DEFAULT '{}', resources TEXT NOT NULL DEFAULT '{}',
        idempotency_key TEXT);
        INSERT INTO jobs (job_id, recipe, model, label, corpus, params, state, create_time)
        VALUES ('old-1', 'fasttext', 'movie', '影视', 'c', '{}', 'SUCCEEDED', 1.0);
        PRAGMA user_version=1;"""
    )
    db.close()
    store = JobStore(path)
    try:
        old = store.get("old-1")
        assert old.validation is None and old.push is None and old.state is JobState.SUCCEEDED
    finally:
        store.close()


def test_push_decisions_round_trip_through_their_dict_form():
    for d in (
        push.decide(DEFAULTS, 2, GOOD, 1, BAD),
        push.decide(DEFAULTS, 2, GOOD),
        push.decide(ValidationPolicy(skip=True), 3, BAD, 2),
    ):
        assert PushDecision.from_dict(json.loads(json.dumps(d.to_dict()))) == d


# -- the ceiling on held-out background text labeled (issue 23) ----------------------


def test_the_background_ceiling_rejects_a_version_that_labels_too_much_real_text():
    policy = ValidationPolicy({"f1": 0.5}, 0.02, "f1", max_background_labeled=0.03)
    over = push.decide(policy, 2, GOOD, background_labeled=0.25)
    assert over.outcome is PushOutcome.REJECTED
    assert over.failures == ("background text labeled 0.250 > ceiling 0.030",)
    under = push.decide(policy, 2, GOOD, background_labeled=0.01)
    assert under.outcome is PushOutcome.PUSHED and "background labeled 0.010 <= 0.030" in under.reason
    # A ceiling that cannot be checked does not pass silently.
    unmeasured = push.decide(policy, 2, GOOD, background_labeled=None)
    assert unmeasured.outcome is PushOutcome.REJECTED and "not measured" in unmeasured.failures[0]
    # No ceiling: the share does not matter.
    assert push.decide(DEFAULTS, 2, GOOD, background_labeled=0.9).outcome is PushOutcome.PUSHED


def test_the_background_ceiling_is_resolved_checked_and_reaches_the_recipe():
    assert resolve(max_background_labeled=0.02).max_background_labeled == 0.02
    assert resolve().max_background_labeled is None
    defaults = ValidationPolicy({"f1": 0.5}, max_background_labeled=0.05)
    assert push.resolve_policy(ValidationRequest(), defaults, "fasttext", True).max_background_labeled == 0.05
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InvalidArgument, match=r"validation.max_background_labeled must be in \[0, 1\]"):
            resolve(max_background_labeled=bad)
    with pytest.raises(InvalidArgument, match="validation.max_background_labeled, or drop skip"):
        resolve(skip=True, max_background_labeled=0.1)
    policy = ValidationPolicy({"f1": 0.8}, 0.05, "f1", max_background_labeled=0.03)
    argv = FASTTEXT.argv(model="movie", label="影视", corpus="c.jsonl", model_root="m", validation=policy)
    assert argv[argv.index("--max-background-labeled") + 1] == "0.03"
    assert parse_args(argv[3:]).validation == policy
    assert ValidationPolicy.from_dict(policy.to_dict()) == policy
    assert ValidationPolicy.from_dict({}).max_background_labeled is None  # records stored before it


def test_the_background_ceiling_travels_through_the_proto_converters():
    from trainer.converters import validation_proto, validation_request
    from trainer.v1 import trainer_pb2

    request = validation_request(trainer_pb2.ValidationPolicy(max_background_labeled=0.03))
    assert request.max_background_labeled == 0.03
    assert validation_request(trainer_pb2.ValidationPolicy()).max_background_labeled is None
    proto = validation_proto(ValidationPolicy(max_background_labeled=0.02))
    assert (
        proto is not None
        and proto.HasField("max_background_labeled")
        and proto.max_background_labeled == 0.02
    )
    assert not validation_proto(ValidationPolicy()).HasField("max_background_labeled")
