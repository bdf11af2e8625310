"""A bundle job's labels in the job store, including a store made before bundles."""

from __future__ import annotations

import sqlite3

from trainer import store as store_mod
from trainer.domain import JobRecord, JobState
from trainer.store import JobStore


def _record(job_id: str, labels: list[str]) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        recipe="fasttext",
        model="topics",
        label="" if labels else "影视",
        corpus="c.jsonl",
        params={"epochs": 1},
        state=JobState.QUEUED,
        create_time=1.0,
        labels=labels,
    )


def test_bundle_labels_round_trip_in_column_order(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    store.insert(_record("a", ["b", "a", "c"]))
    store.insert(_record("b", []))
    store.close()
    reopened = JobStore(tmp_path / "jobs.db")
    assert reopened.get("a").labels == ["b", "a", "c"]
    assert reopened.get("b").labels == [] and reopened.get("b").label == "影视"


def test_a_store_made_before_bundles_gains_the_labels_column(tmp_path):
    path = tmp_path / "old.db"
    old_schema = store_mod._SCHEMA.replace(",\n    labels TEXT NOT NULL DEFAULT '[]'", "")
    assert "labels TEXT" not in old_schema
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO jobs (job_id, recipe, model, label, corpus, params, state, create_time) "
        "VALUES ('old', 'fasttext', 'movie', '影视', 'c', '{}', 'SUCCEEDED', 1.0)"
    )
    db.commit()
    db.close()
    store = JobStore(path)
    assert store.get("old").labels == [] and store.get("old").label == "影视"
    store.insert(_record("new", ["x", "y"]))
    assert store.get("new").labels == ["x", "y"]


def test_a_bundles_label_metrics_survive_parse_store_and_job(tmp_path):
    from modelspec import report
    from trainer.domain import JobProgress, LabelMetrics
    from trainer.servicer import job_proto

    line = report.format_result(
        {
            "version": 3,
            "precision": 0.9,
            "recall": 0.8,
            "f1": 0.85,
            "label_metrics": {"b": {"precision": 1.0, "recall": 0.5, "f1": 0.666667}, "bad": "x"},
        }
    )
    parsed = report.parse_line(line)
    progress = JobProgress().with_report(parsed)
    assert progress.label_metrics == {"b": LabelMetrics(1.0, 0.5, 0.666667)} and progress.f1 == 0.85
    store = JobStore(tmp_path / "jobs.db")
    record = _record("m", ["b", "a"])
    store.insert(record)
    record.progress = progress
    store.update(record, "progress")
    store.close()
    job = JobStore(tmp_path / "jobs.db").get("m")
    assert job.progress.label_metrics == {"b": LabelMetrics(1.0, 0.5, 0.666667)}
    assert abs(job_proto(job).progress.f1 - 0.85) < 1e-6 and list(job_proto(job).labels) == ["b", "a"]
    metrics = job_proto(job).progress.label_metrics
    assert (
        set(metrics) == {"b"}
        and abs(metrics["b"].recall - 0.5) < 1e-9
        and abs(metrics["b"].f1 - 0.666667) < 1e-9
    )
