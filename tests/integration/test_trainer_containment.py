"""No process of a job escapes Kill, across Trainer restarts, and nothing
the Trainer does waits out a kill grace in front of a caller (issue 15,
cases 4 and 5).

The Trainer here is a process of its own (tests.support.trainer_fake_server) so it
can be SIGKILLed and restarted like a real one; its jobs run the fake recipe
with a grandchild in the job's session, an escapee that left it (setsid) and
a daemon started with ``setsid -f`` (a new session, reparented away)."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest

from tests.support.cgroup_support import unavailable, wait_recorded
from tests.support.trainer_support import ENDED, alive, make_config, pids_from_log, write_spec
from trainer import cgroup
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.timeout(240)
S = trainer_pb2
OPEN = {
    "cpu_normal": 101,
    "cpu_danger": 101,
    "memory_normal": 101,
    "memory_danger": 101,
    "warmup_s": 0,
    "window_s": 0.2,
}


class FakeTrainer:
    """``python -m tests.support.trainer_fake_server`` on a free port."""

    def __init__(self, root: pathlib.Path, name: str, **config) -> None:
        self.port_file = root / f"{name}.port"
        self.port_file.unlink(missing_ok=True)
        self.log_path = root / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.trainer_fake_server",
                    str(root),
                    str(self.port_file),
                    json.dumps(config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not self.port_file.exists() or not self.port_file.read_text().strip():
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "the Trainer did not start"
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port_file.read_text().strip()}")
        self.stub = trainer_pb2_grpc.TrainerStub(self.channel)

    def status(self, job_id: str, lines: int = 0) -> trainer_pb2.StatusResponse:
        return self.stub.Status(S.StatusRequest(job_id=job_id, log_lines=lines), timeout=10)

    def wait(self, job_id: str, states=ENDED, timeout: float = 60.0) -> trainer_pb2.Job:
        deadline = time.monotonic() + timeout
        while (job := self.status(job_id).job).state not in tuple(states):
            assert time.monotonic() < deadline, f"{job_id} still {S.JobState.Name(job.state)}: {job.reason}"
            time.sleep(0.05)
        return job

    def wait_pids(self, job_id: str, needle: str = '"daemon"') -> dict[str, int]:
        deadline = time.monotonic() + 60
        while True:
            pids = pids_from_log(list(self.status(job_id, 1000).log_tail))
            if needle.strip('"') in pids:
                return pids
            assert time.monotonic() < deadline, "the job never printed its pids"
            time.sleep(0.05)

    def sigkill(self) -> None:
        self.channel.close()
        self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def wait_gone(pids, timeout: float = 30.0) -> list[int]:
    """The pids still alive after ``timeout`` (zombies count as gone: not ours to reap)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def root(tmp_path):
    make_config(tmp_path)  # writes the default fake corpus
    yield tmp_path
    # Whatever a failing test left: no process of ours outlives it.
    for proc in psutil.process_iter():
        try:
            if "daemon-" in " ".join(proc.cmdline()) and str(tmp_path) in " ".join(proc.cmdline()):
                proc.kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("cgroups", ["", "none"], ids=["cgroup-if-allowed", "no-cgroup"])
def test_a_setsid_daemon_and_an_escapee_do_not_survive_kill_after_a_sigkilled_trainer(root, cgroups):
    # "none": session, recorded descendants and the environment marker only.
    spec = write_spec(root / "data", "tree.json", epoch_s=30, grandchildren=True, daemon=True)
    first = FakeTrainer(root, "first", gate=OPEN, stop_jobs_on_exit=False, cgroup_root=cgroups)
    try:
        job = first.stub.Start(S.StartRequest(model="movie", label="影视", corpus=spec), timeout=10).job
        first.wait(job.job_id, [S.JOB_STATE_RUNNING])
        pids = first.wait_pids(job.job_id)
        assert set(pids) == {"root", "grandchild", "escapee", "daemon"}
        # The Trainer records what it has seen (pids as they appear): wait for it on disk.
        strays = [pids["grandchild"], pids["escapee"], pids["daemon"]]
        recorded = wait_recorded(root / "state" / "jobs.sqlite3", job.job_id, strays)
        if cgroups == "":
            # Where the machine gives jobs a cgroup, the job ran in one, with every process of its tree.
            parent = cgroup.find_parent()
            if parent is None:
                unavailable("v2", "no writable cgroup v2 here: the job ran without one")
            assert recorded["cgroup"].startswith(str(parent)), recorded
            assert set(pids.values()) <= set(cgroup.members(recorded["cgroup"])), (pids, recorded)
        else:
            assert recorded["cgroup"] == "" and recorded["marker"] == f"{job.job_id}.1"
    finally:
        first.sigkill()
    assert all(alive(p) for p in pids.values())  # the jobs outlive their Trainer

    second = FakeTrainer(root, "second", gate=OPEN, stop_jobs_on_exit=False, cgroup_root=cgroups)
    try:
        reattached = second.status(job.job_id).job
        assert reattached.state == S.JOB_STATE_RUNNING and "re-attached" in reattached.reason
        stopping = second.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=10).job
        assert stopping.state == S.JOB_STATE_STOPPING
        assert second.wait(job.job_id).state == S.JOB_STATE_KILLED
        assert wait_gone(pids.values()) == [], pids
    finally:
        second.stop()


def test_a_trainer_killed_while_stopping_a_job_records_it_killed_after_restart(root):
    # The job ignores SIGTERM and the grace is long: the Kill is still under
    # way when the Trainer dies. Before, such a job came back "lost" (FAILED).
    spec = write_spec(
        root / "data", "stubborn.json", epoch_s=30, grandchildren=True, daemon=True, ignore_sigterm=True
    )
    first = FakeTrainer(root, "first", gate=OPEN, stop_jobs_on_exit=False, kill_grace_s=120)
    try:
        job = first.stub.Start(S.StartRequest(model="movie", label="影视", corpus=spec), timeout=10).job
        pids = first.wait_pids(job.job_id)
        # Kill answers at once, without waiting out the 120 s grace.
        stopping = first.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=30).job
        assert stopping.state == S.JOB_STATE_STOPPING
    finally:
        first.sigkill()
    second = FakeTrainer(root, "second", gate=OPEN, stop_jobs_on_exit=False, kill_grace_s=1)
    try:
        killed = second.wait(job.job_id)
        assert killed.state == S.JOB_STATE_KILLED, killed.reason
        assert "killed by a Kill request" in killed.reason
        assert wait_gone(pids.values()) == [], pids
    finally:
        second.stop()


def test_a_restarted_trainer_answers_while_it_still_clears_a_dead_jobs_strays(root):
    # The job's root dies while the Trainer is down; its strays ignore
    # SIGTERM, and the kill grace is long. Before, the Trainer waited out
    # that grace before it bound its port.
    spec = write_spec(
        root / "data", "stubborn.json", epoch_s=30, grandchildren=True, daemon=True, ignore_sigterm=True
    )
    first = FakeTrainer(root, "first", gate=OPEN, stop_jobs_on_exit=False)
    try:
        job = first.stub.Start(S.StartRequest(model="movie", label="影视", corpus=spec), timeout=10).job
        pids = first.wait_pids(job.job_id)
        wait_recorded(root / "state" / "jobs.sqlite3", job.job_id, [pids["grandchild"], pids["escapee"]])
    finally:
        first.sigkill()
    psutil.Process(pids["root"]).kill()
    assert wait_gone([pids["root"]]) == []
    second = FakeTrainer(root, "second", gate=OPEN, stop_jobs_on_exit=False, kill_grace_s=60)
    try:
        judged = second.status(job.job_id).job  # answered...
        strays = [pids["grandchild"], pids["escapee"], pids["daemon"]]
        assert all(_running(p) for p in strays)  # ...while the strays still wait for their SIGKILL
        assert judged.state == S.JOB_STATE_FAILED and "lost" in judged.reason
    finally:
        assert second.stop() == 0
    # Its shutdown (within its budget) took them with it, or they are still
    # being ended: no stray outlives a Trainer that knew of it for long.
    for pid in strays:
        if _running(pid):
            psutil.Process(pid).kill()


def test_shutdown_with_stop_jobs_on_exit_ends_within_its_budget_even_with_a_long_grace(root):
    # Before, shutdown waited out the kill grace per job (17 s seen; 60 s here),
    # past the 10 s a container runtime gives before SIGKILL.
    spec = write_spec(
        root / "data", "stubborn.json", epoch_s=30, grandchildren=True, daemon=True, ignore_sigterm=True
    )
    trainer = FakeTrainer(
        root, "only", gate=OPEN, stop_jobs_on_exit=True, kill_grace_s=60, shutdown_budget_s=3
    )
    job = trainer.stub.Start(S.StartRequest(model="movie", label="影视", corpus=spec), timeout=10).job
    pids = trainer.wait_pids(job.job_id)
    trainer.proc.send_signal(signal.SIGTERM)
    try:
        code = trainer.proc.wait(30)  # a generous bound: half the grace the old code waited out
    except subprocess.TimeoutExpired:
        trainer.proc.kill()
        pytest.fail("the Trainer did not stop within 30 s of SIGTERM")
    assert code == 0
    assert wait_gone(pids.values(), timeout=5) == [], pids
    again = FakeTrainer(
        root, "again", gate={**OPEN, "cpu_normal": 50, "cpu_danger": 101}, stop_jobs_on_exit=False
    )
    try:
        requeued = again.status(job.job_id).job
        assert requeued.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING), requeued.reason
        again.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=10)
        again.wait(job.job_id)
    finally:
        again.stop()


def test_the_machine_here_gives_jobs_a_cgroup_or_says_why_not():
    # Documentation by test: which containment this machine gets.
    parent = cgroup.find_parent()
    if parent is None:
        unavailable(
            "v2", "no writable cgroup v2 here: jobs are tracked by session, marker and recorded descendants"
        )
    assert (parent / "cgroup.procs").exists()
