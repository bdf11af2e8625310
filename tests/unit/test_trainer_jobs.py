"""Job processes and logs, on real subprocesses and real files."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import psutil
import pytest

from modelspec.report import (
    ProgressReport,
    ResultReport,
    ValidationReport,
    format_progress,
    format_result,
    parse_line,
)
from tests.support.cgroup_support import unavailable
from tests.support.trainer_support import alive, pids_from_log
from trainer import cgroup
from trainer.domain import JobProgress
from trainer.jobs import MARKER_ENV, JobLog, JobProcess, job_env

pytestmark = pytest.mark.timeout(60)


def spawn_fake(tmp_path, marker: str = "", cgroup_dir=None, **spec) -> tuple[JobProcess, JobLog]:
    corpus = tmp_path / "spec.json"
    corpus.write_text(json.dumps({"epoch_s": 30, **spec}))
    log = JobLog(tmp_path / "job.log", max_bytes=64 * 1024)
    argv = [
        sys.executable,
        "-m",
        "tests.support.trainer_fake_recipe",
        "--model",
        "movie",
        "--label",
        "影视",
        "--corpus",
        str(corpus),
        "--model-root",
        str(tmp_path / "models"),
        "--epochs",
        "3",
        "--threads",
        "1",
    ]
    env = job_env(1, marker)
    return JobProcess.spawn(
        argv, cwd=tmp_path / "work", env=env, log_path=log.path, cgroup_dir=cgroup_dir
    ), log


def wait_pids(log: JobLog, keys: set[str]) -> dict[str, int]:
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines += log.read_lines()
        pids = pids_from_log(lines)
        if keys <= pids.keys():
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no pids line in {lines}")


def wait_gone(pids, timeout: float = 10.0) -> list[int]:
    """The pids still alive after ``timeout`` (init reaps orphans soon, not at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_terminate_kills_the_whole_tree_and_reaps_the_root(tmp_path):
    job, log = spawn_fake(tmp_path, grandchildren=True)
    pids = wait_pids(log, {"root", "grandchild", "escapee"})
    assert pids["root"] == job.pid
    assert os.getsid(pids["escapee"]) != job.pid  # left the session: only found through the tree
    assert job.usage().rss_bytes > 0
    code = job.terminate(grace_s=5)
    assert code == -15  # SIGTERM, reaped by us: no zombie
    assert wait_gone(pids.values()) == []
    assert job.exited()


def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    job, log = spawn_fake(tmp_path, grandchildren=True, ignore_sigterm=True)
    pids = wait_pids(log, {"root", "grandchild", "escapee"})
    started = time.monotonic()
    code = job.terminate(grace_s=0.5)
    assert code == -9
    assert wait_gone(pids.values()) == []
    assert time.monotonic() - started < 30  # bounded: grace, then SIGKILL


def test_terminate_after_a_natural_exit_clears_strays(tmp_path):
    job, log = spawn_fake(tmp_path, epoch_s=0.01, grandchildren=True)
    pids = wait_pids(log, {"root", "grandchild", "escapee"})
    job.usage()  # the scheduler measures jobs while they run: the escapee gets tracked
    deadline = time.monotonic() + 30
    while not job.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.exited()
    assert alive(pids["grandchild"]) and alive(pids["escapee"])  # left behind by the job
    assert job.terminate(grace_s=2) == 0
    assert wait_gone([pids["grandchild"], pids["escapee"]]) == []


def test_attach_recognises_the_same_process_only(tmp_path):
    job, log = spawn_fake(tmp_path)
    try:
        again = JobProcess.attach(job.pid, job.create_time)
        assert again.alive and again.proc is not None
        impostor = JobProcess.attach(job.pid, job.create_time - 100)  # same pid, another start: reused
        assert not impostor.alive and impostor.proc is None
    finally:
        job.terminate(grace_s=2)
    assert not JobProcess.attach(job.pid, job.create_time).alive


def test_terminate_finds_a_setsid_daemon_by_the_job_marker(tmp_path):
    # Issue 15 case 4: `setsid -f` leaves the session and the tree at once;
    # only the environment marker it inherited still names its job.
    job, log = spawn_fake(tmp_path, marker="movie-1.1", daemon=True)
    pids = wait_pids(log, {"root", "daemon"})
    assert os.getsid(pids["daemon"]) != job.pid and psutil.Process(pids["daemon"]).ppid() != job.pid
    job.terminate(grace_s=2)
    assert wait_gone(pids.values()) == []


def test_a_daemon_in_the_job_cgroup_is_ended_without_a_marker(tmp_path):
    parent = cgroup.find_parent()
    if parent is None:
        unavailable("v2", "no writable cgroup v2 on this machine")
    cgroup_dir = cgroup.create(parent, f"unit-{os.getpid()}")
    job, log = spawn_fake(tmp_path, cgroup_dir=cgroup_dir, daemon=True, ignore_sigterm=True)
    pids = wait_pids(log, {"root", "daemon"})
    assert pids["daemon"] in cgroup.members(str(cgroup_dir))
    assert job.containment().cgroup == str(cgroup_dir)
    job.terminate(grace_s=0.5)
    assert wait_gone(pids.values()) == []
    assert not cgroup_dir.exists()  # removed once empty


def test_attach_with_the_recorded_containment_finds_an_escapee_of_a_dead_root(tmp_path):
    # Issue 15 case 4 across a restart: the descendants seen while the job ran
    # are recorded (pid + create time) and a new JobProcess finds them.
    job, log = spawn_fake(tmp_path, grandchildren=True)
    pids = wait_pids(log, {"root", "grandchild", "escapee"})
    job.usage()
    record = job.containment()
    assert {p.pid for p in record.descendants} >= {pids["grandchild"], pids["escapee"]}
    os.killpg(job.pid, signal.SIGKILL)  # the root's session dies; the escapee is elsewhere
    job.popen.wait(timeout=10)  # reap the root: only the escapee is left
    assert alive(pids["escapee"])
    restarted = JobProcess.attach(job.pid, job.create_time, record)
    assert not restarted.alive
    restarted.terminate(grace_s=2)
    assert wait_gone([pids["escapee"]]) == []


def test_job_env_carries_the_thread_budget_and_the_marker():
    assert job_env(1, "movie-1.2")[MARKER_ENV] == "movie-1.2"
    assert MARKER_ENV not in job_env(1)
    env = job_env(2)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "2"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_log_reads_new_complete_lines_only(tmp_path):
    log = JobLog(tmp_path / "a.log", max_bytes=4096)
    with open(log.path, "ab") as f:
        f.write("一\ntwo\npart".encode())
    assert log.read_lines() == ["一", "two"]
    with open(log.path, "ab") as f:
        f.write(b"ial\n\xff bad\nend")
    assert log.read_lines() == ["partial", "\ufffd bad"]
    assert log.read_lines(final=True) == ["end"]
    assert log.read_lines() == []


def test_log_is_trimmed_to_its_newest_half_when_over_the_limit(tmp_path):
    log = JobLog(tmp_path / "big.log", max_bytes=4096)
    with open(log.path, "ab") as f:
        for i in range(1000):
            f.write(f"line {i}\n".encode())
    assert len(log.read_lines()) == 1000
    log.trim()
    size = log.path.stat().st_size
    assert size <= 4096
    tail = log.tail(5)
    assert tail == [f"line {i}" for i in range(995, 1000)]
    assert log.path.read_text().startswith("[trainer] ... log trimmed")
    with open(log.path, "ab") as f:
        f.write(b"after trim\n")
    assert log.read_lines() == ["after trim"]


def test_tail_reads_the_last_lines(tmp_path):
    log = JobLog(tmp_path / "t.log", max_bytes=1 << 20)
    log.note("hello")
    with open(log.path, "ab") as f:
        f.write(b"x" * 20000 + b"\nlast\n")
    assert log.tail(2) == ["x" * 4096 + " ...", "last"]
    assert JobLog(tmp_path / "missing.log", 4096).tail(5) == []


def test_progress_and_result_lines_are_parsed():
    assert parse_line('progress {"epoch": 2, "epochs": 5, "loss": 0.5}') == ProgressReport(2, 5, loss=0.5)
    assert parse_line("Epoch 2/5 ...") is None
    assert parse_line("progress not json") is None
    assert parse_line("result [1, 2]") is None
    progress = JobProgress().with_report(
        parse_line('progress {"epoch": 2, "loss": 0.5, "junk": 1, "accuracy": true}')
    )
    assert progress == JobProgress(epoch=2, loss=0.5)
    result = parse_line(
        'result {"version": 17, "precision": 0.9, "f1": 0.8, "per_label": {"影视": {"f1": 0.8}}}'
    )
    assert isinstance(result, ResultReport) and result.version == 17
    assert result.extra == {"per_label": {"影视": {"f1": 0.8}}}  # extra metrics are kept, not rejected
    assert progress.with_report(result).f1 == 0.8
    assert parse_line('result {"version": "17"}').version == 0
    # The validation verdict line (trainer.push reads it) leaves the progress as it is.
    verdict = parse_line('validation {"outcome": "PUSHED", "reason": "ok"}')
    assert verdict == ValidationReport({"outcome": "PUSHED", "reason": "ok"})
    assert progress.with_report(verdict) == progress
    assert parse_line("validation [1]") is None


def test_the_recipe_side_writes_what_the_trainer_side_reads():
    line = format_result({"version": 3, "version_dir": "/m/3", "f1": 0.5, "seconds": 1.5})
    assert parse_line(line) == ResultReport(3, "/m/3", f1=0.5, extra={"seconds": 1.5})
    assert parse_line(format_progress(ProgressReport(1, 4, loss=0.25))) == ProgressReport(1, 4, loss=0.25)
