"""Jobs and the queue in SQLite (stdlib sqlite3, WAL), so a restarted Trainer
finds every job where it left it.

One connection, guarded by a lock; writes that decide something (the
idempotency check with its insert) run in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import pathlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

from trainer import lifecycle
from trainer.domain import (
    GateDecision,
    JobContainment,
    JobProgress,
    JobRecord,
    JobResources,
    JobState,
    Placement,
    PushDecision,
    SweepRecord,
    SweepSpec,
    SweepState,
    ValidationPolicy,
)

# 1: the first release; 2: process containment, validation before push;
# 3: sweeps, deadlines, retries, priorities; 4: one sequence for all of them
# (branches numbered their schemas apart: a database from any of them is
# upgraded by adding the columns it lacks, see _ADDED_COLUMNS); 5: bundles'
# labels; 6: placement (where an attempt runs).
SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    recipe TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    corpus TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    pid_create_time REAL NOT NULL DEFAULT 0,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    overload_kills INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    model_version INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    gate TEXT NOT NULL DEFAULT '{}',
    resources TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT,
    containment TEXT NOT NULL DEFAULT '{}',
    validation TEXT NOT NULL DEFAULT '',
    push TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_model ON jobs(model, seq);
"""

# Typed fields stored as JSON, with how each is read back.
_JSON_FIELDS: dict[str, Callable[[Any], Any]] = {
    "params": dict,
    "progress": JobProgress.from_json,
    "gate": GateDecision.from_json,
    "resources": JobResources.from_json,
    "containment": JobContainment.from_json,
    "labels": list,
    "placement": Placement.from_json,
}
# Stored as plain JSON values (no to_json).
_PLAIN_JSON_FIELDS = ("params", "labels")
# Typed fields stored as JSON ('' for None), with their decoders.
_TYPED_FIELDS: dict[str, Callable[[Any], Any]] = {
    "validation": ValidationPolicy.from_dict,
    "push": PushDecision.from_dict,
}
# The migration: every column added to ``jobs`` since schema 1, in the order
# added, with its SQL type. Opening a database adds each one it lacks, so any
# older database (schema 1, 2 or 3 of either numbering) reaches this schema.
_ADDED_COLUMNS: dict[str, str] = {
    # schema 2: process containment (trainer.jobs)
    "containment": "TEXT NOT NULL DEFAULT '{}'",
    # schema 2: validation before push (trainer.push)
    "validation": "TEXT NOT NULL DEFAULT ''",
    "push": "TEXT NOT NULL DEFAULT ''",
    # schema 3: sweeps (trainer.sweeps)
    "sweep_id": "TEXT NOT NULL DEFAULT ''",
    "no_push": "INTEGER NOT NULL DEFAULT 0",
    # schema 3: deadlines, retries, priorities (trainer.job_limits)
    "deadline_s": "REAL NOT NULL DEFAULT 0",
    "deadline_at": "REAL NOT NULL DEFAULT 0",
    "run_s": "REAL NOT NULL DEFAULT 0",
    "max_retries": "INTEGER NOT NULL DEFAULT 0",
    "retries": "INTEGER NOT NULL DEFAULT 0",
    "priority": "INTEGER NOT NULL DEFAULT 1",
    # schema 5: multi-label models (bundles): the labels in column order
    "labels": "TEXT NOT NULL DEFAULT '[]'",
    # schema 6: where a running attempt runs (trainer.executor)
    "placement": "TEXT NOT NULL DEFAULT '{}'",
}
_BOOL_FIELDS = ("no_push",)
_COLUMNS = [f.name for f in dataclasses.fields(JobRecord)]

_SWEEPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep_id TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    trials TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    create_time REAL NOT NULL,
    end_time REAL,
    final_job_id TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS sweeps_idempotency_key ON sweeps(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_sweep ON jobs(sweep_id, seq);
"""


class StoreError(RuntimeError):
    pass


def _to_row(record: JobRecord, fields: Iterable[str]) -> dict:
    row = {}
    for name in fields:
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            plain = value if name in _PLAIN_JSON_FIELDS else (value.to_json() if value is not None else {})
            value = json.dumps(plain, ensure_ascii=False, sort_keys=True)
        elif name == "state":
            value = value.value
        elif name == "idempotency_key":
            value = value or None
        elif name in _TYPED_FIELDS:
            value = (
                json.dumps(value.to_dict(), ensure_ascii=False, sort_keys=True) if value is not None else ""
            )
        row[name] = value
    return row


def _from_row(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in _COLUMNS}
    for name, read in _JSON_FIELDS.items():
        values[name] = read(json.loads(values[name]))
    values["state"] = JobState(values["state"])
    values["idempotency_key"] = values["idempotency_key"] or ""
    for name, decode in _TYPED_FIELDS.items():
        values[name] = decode(json.loads(values[name])) if values[name] else None
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    return JobRecord(**values)


def _sweep_from_row(row: sqlite3.Row) -> SweepRecord:
    return SweepRecord(
        sweep_id=row["sweep_id"],
        spec=SweepSpec.from_dict(json.loads(row["spec"])),
        trials=[{k: int(v) for k, v in t.items()} for t in json.loads(row["trials"])],
        state=SweepState(row["state"]),
        create_time=row["create_time"],
        reason=row["reason"],
        end_time=row["end_time"],
        final_job_id=row["final_job_id"],
        seq=row["seq"],
    )


class JobStore:
    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL is durable across process crashes (not
        # power loss), and keeps Start from waiting on an fsync.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this Trainer knows up to {SCHEMA_VERSION}"
            )
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, sql_type in _ADDED_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")
        self._db.executescript(_SWEEPS_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert a new job; with an idempotency key already used, return that
        job instead. Returns (job, created)."""
        fields = [c for c in _COLUMNS if c != "seq"]
        row = _to_row(record, fields)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if record.idempotency_key:
                    found = self._db.execute(
                        "SELECT * FROM jobs WHERE idempotency_key = ?", (record.idempotency_key,)
                    ).fetchone()
                    if found is not None:
                        self._db.execute("COMMIT")
                        return _from_row(found), False
                cursor = self._db.execute(
                    f"INSERT INTO jobs ({', '.join(fields)}) VALUES ({', '.join(':' + f for f in fields)})",
                    row,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        created = record.copy()
        assert cursor.lastrowid is not None  # set by the INSERT
        created.seq = cursor.lastrowid
        return created, True

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _from_row(row) if row is not None else None

    def transition(self, record: JobRecord, change: lifecycle.Change, now: float) -> JobRecord:
        """The one way a job's state changes: ``record`` after ``change``
        (trainer.lifecycle.apply, which stamps the times), written whole in
        one transaction that first checks the table against the state the
        store holds. Raises lifecycle.IllegalTransition (nothing written)
        for a transition the table does not allow, StoreError for a job not
        in the store. Returns the record as written."""
        new = lifecycle.apply(record, change, now)
        names = [c for c in _COLUMNS if c not in ("seq", "job_id")]
        row = _to_row(new, names)
        row["job_id"] = record.job_id
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute(
                    "SELECT state FROM jobs WHERE job_id = ?", (record.job_id,)
                ).fetchone()
                if found is None:
                    raise StoreError(f"job {record.job_id} is not in the store")
                lifecycle.check(JobState(found[0]), new.state, record.job_id)
                self._db.execute(
                    f"UPDATE jobs SET {', '.join(f'{n} = :{n}' for n in names)} WHERE job_id = :job_id", row
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def get_by_key(self, key: str) -> JobRecord | None:
        """The job an idempotency key made, if any."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
        return _from_row(row) if row is not None else None

    def update(self, record: JobRecord, *fields: str) -> None:
        """Write the named fields of ``record`` (all but the keys when none
        are named). The Trainer changes a state only by ``transition``; a
        write that names the state is checked against the table all the same
        (the same state again is allowed), so no path leaves an ended state."""
        names = list(fields) or [c for c in _COLUMNS if c not in ("seq", "job_id")]
        row = _to_row(record, names)
        row["job_id"] = record.job_id
        sql = f"UPDATE jobs SET {', '.join(f'{n} = :{n}' for n in names)} WHERE job_id = :job_id"
        with self._lock:
            if "state" not in names:
                cursor = self._db.execute(sql, row)
                if cursor.rowcount != 1:
                    raise StoreError(f"job {record.job_id} is not in the store")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute(
                    "SELECT state FROM jobs WHERE job_id = ?", (record.job_id,)
                ).fetchone()
                if found is None:
                    raise StoreError(f"job {record.job_id} is not in the store")
                if found[0] != record.state.value:
                    lifecycle.check(JobState(found[0]), record.state, record.job_id)
                self._db.execute(sql, row)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def list(
        self, states: Iterable[JobState] = (), model: str = "", limit: int = 100, sweep_id: str = ""
    ) -> list[JobRecord]:
        """Jobs newest first, optionally only those in ``states``, for ``model``, of ``sweep_id``."""
        where, args = [], []
        states = list(states)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args += [s.value for s in states]
        if model:
            where.append("model = ?")
            args.append(model)
        if sweep_id:
            where.append("sweep_id = ?")
            args.append(sweep_id)
        sql = (
            "SELECT * FROM jobs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_from_row(r) for r in rows]

    def next_queued(self, now: float) -> JobRecord | None:
        """The queued job whose backoff has passed with the highest priority, the oldest among those."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? AND not_before <= ? ORDER BY priority DESC, seq LIMIT 1",
                (JobState.QUEUED.value, now),
            ).fetchone()
        return _from_row(row) if row is not None else None

    def in_state(self, state: JobState) -> builtins.list[JobRecord]:  # `list` here: the method above
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY seq", (state.value,)
            ).fetchall()
        return [_from_row(r) for r in rows]

    # -- sweeps (trainer.sweeps) -------------------------------------------------

    def insert_sweep(self, sweep: SweepRecord) -> tuple[SweepRecord, bool]:
        """Insert a new sweep; with an idempotency key already used, return
        that sweep instead. Returns (sweep, created)."""
        key = sweep.spec.idempotency_key or None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if key:
                    found = self._db.execute(
                        "SELECT * FROM sweeps WHERE idempotency_key = ?", (key,)
                    ).fetchone()
                    if found is not None:
                        self._db.execute("COMMIT")
                        return _sweep_from_row(found), False
                cursor = self._db.execute(
                    "INSERT INTO sweeps (sweep_id, spec, trials, state, reason, create_time, end_time, "
                    "final_job_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sweep.sweep_id,
                        json.dumps(sweep.spec.to_dict(), ensure_ascii=False, sort_keys=True),
                        json.dumps(sweep.trials, sort_keys=True),
                        sweep.state.value,
                        sweep.reason,
                        sweep.create_time,
                        sweep.end_time,
                        sweep.final_job_id,
                        key,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return dataclasses.replace(sweep, seq=int(cursor.lastrowid or 0)), True

    def update_sweep(self, sweep: SweepRecord) -> None:
        """Write where a sweep is (its spec and trials never change)."""
        with self._lock:
            self._db.execute(
                "UPDATE sweeps SET state = ?, reason = ?, end_time = ?, final_job_id = ? WHERE sweep_id = ?",
                (sweep.state.value, sweep.reason, sweep.end_time, sweep.final_job_id, sweep.sweep_id),
            )

    def get_sweep(self, sweep_id: str) -> SweepRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return _sweep_from_row(row) if row is not None else None

    def get_sweep_by_key(self, key: str) -> SweepRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sweeps WHERE idempotency_key = ?", (key,)).fetchone()
        return _sweep_from_row(row) if row is not None else None

    def list_sweeps(self, states: Iterable[SweepState] = (), limit: int = 100) -> builtins.list[SweepRecord]:
        """Sweeps newest first, optionally only those in ``states``."""
        states = list(states)
        where = f" WHERE state IN ({', '.join('?' for _ in states)})" if states else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM sweeps{where} ORDER BY seq DESC LIMIT ?", [*(s.value for s in states), limit]
            ).fetchall()
        return [_sweep_from_row(r) for r in rows]
