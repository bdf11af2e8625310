"""Malformed and hostile requests to a real Trainer server (the fake recipe's
registry, a real SQLite job store, real job processes): each gets a clear
status naming the problem; the server keeps serving; the job store holds
exactly the valid jobs and passes ``PRAGMA integrity_check``; a job's argv is
the registry's, request strings only ever as whole, separate items, and no
shell ever runs."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets
import sqlite3
import sys

import grpc
import psutil
import pytest

from tests.support.trainer_support import FAKE, RunningTrainer, make_config, running_trainer, write_spec
from trainer.config import TrainerConfig
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(180)

S = trainer_pb2
CODE = grpc.StatusCode
HP = S.Hyperparameters


@dataclasses.dataclass
class Hostile:
    trainer: RunningTrainer
    config: TrainerConfig
    outside: pathlib.Path
    valid_jobs: list[str]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Hostile:
    root = tmp_path_factory.mktemp("trainer")
    config = make_config(root)
    outside = root / "outside"
    outside.mkdir()
    write_spec(outside, "fake.json")
    data = config.data_root
    write_spec(data, "slow.json", epoch_s=30)
    os.symlink(outside / "fake.json", data / "escape.json")
    os.symlink(outside, data / "linkdir")
    os.symlink(data / "loop.json", data / "loop.json")
    (data / "subdir").mkdir()
    os.mkfifo(data / "fifo.json")  # reading it would block forever
    with running_trainer(config) as trainer:
        first = trainer.start("movie", "影视")
        yield Hostile(trainer, config, outside, [first.job_id])


def start(**fields) -> S.StartRequest:
    return S.StartRequest(**{"model": "movie", "label": "影视", **fields})


TEN_KB = "m" * 10_240
START_REJECTED = {
    "model with a slash": (start(model="a/b"), CODE.INVALID_ARGUMENT, "model name 'a/b' is not allowed"),
    "model ..": (start(model=".."), CODE.INVALID_ARGUMENT, "model name '..' is not allowed"),
    "model ../etc": (start(model="../etc"), CODE.INVALID_ARGUMENT, "model name '../etc'"),
    "model with a NUL": (start(model="movie\x00"), CODE.INVALID_ARGUMENT, "model name 'movie\\x00'"),
    "model of 10 KB": (
        start(model=TEN_KB),
        CODE.INVALID_ARGUMENT,
        "(10240 characters) is not allowed: use 1-63",
    ),
    "model empty": (start(model=""), CODE.INVALID_ARGUMENT, "model name '' is not allowed"),
    "model like an option": (start(model="-rf"), CODE.INVALID_ARGUMENT, "model name '-rf'"),
    "model with a shell command": (start(model="movie;rm -rf /"), CODE.INVALID_ARGUMENT, "lowercase letters"),
    "label empty": (start(label=""), CODE.INVALID_ARGUMENT, "label '' is not allowed"),
    "label with a NUL": (start(label="影视\x00"), CODE.INVALID_ARGUMENT, "printable characters"),
    "label with a newline": (start(label="影视\nprogress {}"), CODE.INVALID_ARGUMENT, "printable characters"),
    "label padded": (start(label=" 影视"), CODE.INVALID_ARGUMENT, "leading or trailing spaces"),
    "label of 10 KB": (start(label="影" * 3500), CODE.INVALID_ARGUMENT, "give 1-64 printable characters"),
    "label like an option": (
        start(label="--model-root=/etc"),
        CODE.INVALID_ARGUMENT,
        "not starting with '-'",
    ),
    "corpus absolute": (
        start(corpus="/etc/passwd"),
        CODE.INVALID_ARGUMENT,
        "is absolute: give a path relative",
    ),
    "corpus ..": (start(corpus="../outside/fake.json"), CODE.INVALID_ARGUMENT, "contains '..'"),
    "corpus inner ..": (
        start(corpus="subdir/../../outside/fake.json"),
        CODE.INVALID_ARGUMENT,
        "contains '..'",
    ),
    "corpus symlink out": (
        start(corpus="escape.json"),
        CODE.INVALID_ARGUMENT,
        "leads outside the Trainer's data root",
    ),
    "corpus through a symlinked dir": (
        start(corpus="linkdir/fake.json"),
        CODE.INVALID_ARGUMENT,
        "leads outside the Trainer's data root",
    ),
    "corpus symlink loop": (start(corpus="loop.json"), CODE.INVALID_ARGUMENT, "is a symlink loop"),
    "corpus a directory": (start(corpus="subdir"), CODE.INVALID_ARGUMENT, "is not a regular file"),
    "corpus a FIFO": (start(corpus="fifo.json"), CODE.INVALID_ARGUMENT, "is not a regular file"),
    "corpus missing": (
        start(corpus="missing.json"),
        CODE.NOT_FOUND,
        "does not exist in the Trainer's data root",
    ),
    "corpus with a NUL": (start(corpus="fake.json\x00.txt"), CODE.INVALID_ARGUMENT, "corpus must be a path"),
    "corpus of 10 KB": (start(corpus="a/" * 5120), CODE.INVALID_ARGUMENT, "corpus must be a path of 1-1024"),
    "recipe with a shell command": (
        start(recipe="fake; rm -rf /"),
        CODE.INVALID_ARGUMENT,
        "unknown recipe 'fake; rm -rf /'; this Trainer runs: fake",
    ),
    "recipe as a path": (start(recipe="../trainer_fake_recipe"), CODE.INVALID_ARGUMENT, "unknown recipe"),
    "recipe as a module": (start(recipe="os"), CODE.INVALID_ARGUMENT, "unknown recipe 'os'"),
    "recipe of 10 KB": (
        start(recipe=TEN_KB),
        CODE.INVALID_ARGUMENT,
        "(10240 characters); this Trainer runs: fake",
    ),
    "epochs 0": (
        start(hyperparameters=HP(epochs=0)),
        CODE.INVALID_ARGUMENT,
        "hyperparameter epochs must be an integer in 1..200 (default 3), got 0",
    ),
    "epochs 201": (start(hyperparameters=HP(epochs=201)), CODE.INVALID_ARGUMENT, "got 201"),
    "epochs 2**32-1": (start(hyperparameters=HP(epochs=2**32 - 1)), CODE.INVALID_ARGUMENT, "got 4294967295"),
    "threads 0": (
        start(hyperparameters=HP(threads=0)),
        CODE.INVALID_ARGUMENT,
        "threads must be an integer in 1..64",
    ),
    "threads 65": (start(hyperparameters=HP(threads=65)), CODE.INVALID_ARGUMENT, "got 65"),
    "a hyperparameter the recipe lacks": (
        start(hyperparameters=HP(batch_size=8)),
        CODE.INVALID_ARGUMENT,
        "recipe 'fake' has no hyperparameter batch_size",
    ),
    "idempotency key with a NUL": (
        start(idempotency_key="k\x00"),
        CODE.INVALID_ARGUMENT,
        "idempotency_key must be",
    ),
    "idempotency key of 10 KB": (start(idempotency_key=TEN_KB), CODE.INVALID_ARGUMENT, "at most 128"),
}


def rejected(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def assert_still_serving(trainer: RunningTrainer) -> None:
    reply = trainer.stub.List(S.ListRequest(limit=1), timeout=10)
    assert len(reply.jobs) == 1


@pytest.mark.parametrize("case", list(START_REJECTED))
def test_start_rejects_hostile_requests(hostile, case):
    request, code, says = START_REJECTED[case]
    err = rejected(lambda: hostile.trainer.stub.Start(request, timeout=10))
    assert err.code() == code, err.details()
    assert says in err.details()
    assert_still_serving(hostile.trainer)


JOB_IDS = {
    "empty": ("", CODE.INVALID_ARGUMENT, "job_id is required"),
    "a path": ("../../etc/passwd", CODE.NOT_FOUND, "no job '../../etc/passwd'"),
    "SQL": ("' OR '1'='1", CODE.NOT_FOUND, "no job \"' OR '1'='1\""),
    "NUL": ("movie-\x00", CODE.INVALID_ARGUMENT, "job_id must be at most 128 printable characters"),
    "10 KB": (TEN_KB, CODE.INVALID_ARGUMENT, "job_id must be at most 128"),
    "unknown": ("movie-000000000000", CODE.NOT_FOUND, "`trainer list` shows the jobs"),
}


@pytest.mark.parametrize("case", list(JOB_IDS))
@pytest.mark.parametrize("rpc", ["Status", "Kill", "Watch"])
def test_job_ids_that_name_no_job(hostile, rpc, case):
    job_id, code, says = JOB_IDS[case]
    stub = hostile.trainer.stub
    calls = {
        "Status": lambda: stub.Status(S.StatusRequest(job_id=job_id), timeout=10),
        "Kill": lambda: stub.Kill(S.KillRequest(job_id=job_id), timeout=10),
        "Watch": lambda: list(stub.Watch(S.WatchRequest(job_id=job_id), timeout=10)),
    }
    err = rejected(calls[rpc])
    assert err.code() == code, err.details()
    assert says in err.details()
    assert_still_serving(hostile.trainer)


OTHER_REJECTED = {
    "log_lines 1001": ("Status", S.StatusRequest(log_lines=1001), "log_lines must be 0..1000"),
    "log_lines 2**32-1": ("Status", S.StatusRequest(log_lines=2**32 - 1), "got 4294967295"),
    "list limit 5000": ("List", S.ListRequest(limit=5000), "limit must be 0..1000 (0 means 100), got 5000"),
    "list unknown state": ("List", S.ListRequest(states=[99]), "unknown job state 99"),
    "list state UNSPECIFIED": (
        "List",
        S.ListRequest(states=[S.JOB_STATE_UNSPECIFIED]),
        "unknown job state 0",
    ),
    "list model SQL": (
        "List",
        S.ListRequest(model="x' OR '1'='1"),
        "model name \"x' OR '1'='1\" is not allowed",
    ),
    "list model path": ("List", S.ListRequest(model="../movie"), "model name '../movie'"),
}


@pytest.mark.parametrize("case", list(OTHER_REJECTED))
def test_other_arguments_out_of_bounds(hostile, case):
    rpc, request, says = OTHER_REJECTED[case]
    if rpc == "Status":
        request.job_id = hostile.valid_jobs[0]
    err = rejected(lambda: getattr(hostile.trainer.stub, rpc)(request, timeout=10))
    assert err.code() == CODE.INVALID_ARGUMENT, err.details()
    assert says in err.details()
    assert_still_serving(hostile.trainer)


@pytest.mark.parametrize("method", ["Start", "Status", "Kill", "List", "Watch"])
def test_undecodable_requests_are_invalid_argument(hostile, method):
    call = hostile.trainer.channel.unary_unary if method != "Watch" else hostile.trainer.channel.unary_stream
    err = rejected(
        lambda: (
            list(call(f"/trainer.v1.Trainer/{method}")(b"\x0a\x05ab", timeout=10))
            if method == "Watch"
            else call(f"/trainer.v1.Trainer/{method}")(b"\x0a\x05ab", timeout=10)
        )
    )
    assert err.code() == CODE.INVALID_ARGUMENT, err.details()
    assert "could not be parsed" in err.details()
    assert_still_serving(hostile.trainer)


def test_a_reused_idempotency_key_with_other_parameters_is_refused(hostile):
    trainer = hostile.trainer
    job = trainer.start("star", "明星", idempotency_key="same-key", hyperparameters=HP(epochs=1))
    hostile.valid_jobs.append(job.job_id)
    err = rejected(
        lambda: trainer.stub.Start(
            start(model="star", label="明星", idempotency_key="same-key", hyperparameters=HP(epochs=2)),
            timeout=10,
        )
    )
    assert err.code() == CODE.ALREADY_EXISTS and f"already started job {job.job_id}" in err.details()


def test_request_strings_reach_the_job_only_as_whole_argv_items_and_no_shell_runs(hostile):
    trainer, config = hostile.trainer, hostile.config
    marker = pathlib.Path(f"/tmp/pwn{secrets.token_hex(3)}")
    label = f"$(touch {marker})`touch {marker}`;|&<>*?~!#'\"\\ 影视"
    corpus = write_spec(config.data_root, f"we ird;$(touch {marker.name}) *.json", epoch_s=30)
    job = trainer.start("fashion", label, corpus=corpus, hyperparameters=HP(epochs=2, threads=3))
    hostile.valid_jobs.append(job.job_id)
    try:
        trainer.wait_log(job.job_id, "pids ")  # the recipe runs
        running = trainer.status(job.job_id).job
        assert running.state == S.JOB_STATE_RUNNING and running.label == label
        process = psutil.Process(running.pid)
        expected = FAKE.argv(
            model="fashion",
            label=label,
            corpus=str(config.data_root / corpus),
            model_root=str(config.model_root),
            params={"epochs": 2, "threads": 3},
            checkpoint_dir=str(config.checkpoint_dir(job.job_id)),
            python=sys.executable,
        )
        assert process.cmdline() == expected
        assert expected[expected.index("--label") + 1] == label
        # Spawned straight from the Trainer (this process), no shell in between.
        assert process.ppid() == os.getpid()
        assert not marker.exists() and not (config.work_dir(job.job_id) / marker.name).exists()
    finally:
        trainer.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=30)
    killed = trainer.wait(job.job_id)
    assert killed.state == S.JOB_STATE_KILLED
    assert not marker.exists()


def test_after_it_all_the_store_holds_exactly_the_valid_jobs_and_is_intact(hostile):
    trainer = hostile.trainer
    last = trainer.start("beauty", "美妆")
    hostile.valid_jobs.append(last.job_id)
    for job_id in hostile.valid_jobs:
        trainer.wait(job_id)
    listed = trainer.stub.List(S.ListRequest(), timeout=10).jobs
    assert [j.job_id for j in listed] == list(reversed(hostile.valid_jobs))  # newest first, nothing else
    assert trainer.status(hostile.valid_jobs[0]).job.state == S.JOB_STATE_SUCCEEDED
    with sqlite3.connect(hostile.config.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT job_id FROM jobs ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == hostile.valid_jobs
    # Nothing was written outside the Trainer's own directories.
    assert sorted(p.name for p in hostile.outside.iterdir()) == ["fake.json"]
