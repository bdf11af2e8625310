"""The Trainer on a real Ray cluster: a head and two worker nodes started by
this module on 127.0.0.1 (ray.cluster_utils.Cluster, one CPU each, free
ports, RAY_TMPDIR in the module's own directory), stopped and reaped at the
end. Every job is a Ray job running the fake recipe on a node.

Per-node load is scripted for the gate (tests.support.ray_support): on one
machine every node reports the same host readings.
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("TEXT_LABELER_REQUIRE_RAY"):
        raise  # CI installs the ray extra: a missing Ray is a failure there, not a skip
    pytest.skip("the ray extra is not installed (pip install '.[ray]')", allow_module_level=True)

from tests.support.ray_cluster import LoopbackCluster  # noqa: E402
from tests.support.ray_support import ScriptedNodeLoad, TcpProxy  # noqa: E402
from tests.support.trainer_support import (  # noqa: E402
    ENDED,
    alive,
    make_config,
    pids_from_log,
    running_trainer,
    write_spec,
)
from trainer.gate import GatePolicy  # noqa: E402
from trainer.ray_executor import RayExecutor, StorageProbeFailed  # noqa: E402
from trainer.v1 import trainer_pb2 as T  # noqa: E402

# The real rule (admit below 55%, stop at 95%) on scripted per-node readings.
NODE_GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0.0, window_s=0.5
)
BUSY, IDLE = 80.0, 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    c = LoopbackCluster(root, workers=2)
    try:
        yield c.start()
    finally:
        c.stop()


def ray_config(tmp_path, cluster, **overrides):
    values = dict(executor="ray", ray_address=cluster.address, gate=NODE_GATE, sample_interval_s=0.25)
    values.update(overrides)
    return make_config(tmp_path, **values)


def only(load: ScriptedNodeLoad, cluster: LoopbackCluster, name: str) -> None:
    """Only node ``name`` is below normal."""
    for other in cluster.nodes:
        load.set(cluster.node_id(other), IDLE if other == name else BUSY)


def test_jobs_are_placed_on_the_node_below_normal_and_shown_where_they_run(tmp_path, cluster):
    load = ScriptedNodeLoad(default=(BUSY, 10.0))
    config = ray_config(tmp_path, cluster)
    corpus = write_spec(config.data_root, "quick.json", epoch_s=0.05)
    with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
        # Every node busy: the job waits and says why, per node.
        job = trainer.start(corpus=corpus)
        time.sleep(1.0)
        waiting = trainer.status(job.job_id).job
        assert waiting.state == T.JOB_STATE_QUEUED
        assert "no node can take it" in waiting.gate.reason and "above normal" in waiting.gate.reason
        for target in ("w2", "w1"):
            only(load, cluster, target)
            done = trainer.wait(job.job_id, timeout=60)
            assert done.state == T.JOB_STATE_SUCCEEDED, done.reason
            assert done.placement.executor == "ray"
            names = {cluster.node_id(n): n for n in cluster.nodes}
            assert done.placement.node == cluster.node_id(target), (
                names.get(done.placement.node),
                done.gate.reason,
            )
            assert done.placement.handle == f"trainer-{job.job_id}.1"
            assert (config.model_root / "movie" / str(done.model_version)).is_dir()
            for other in cluster.nodes:
                load.set(cluster.node_id(other), BUSY)
            time.sleep(2 * NODE_GATE.window_s)  # the idle readings leave the window
            job = trainer.start(corpus=corpus)


def test_kill_ends_the_whole_tree_on_its_node(tmp_path, cluster):
    load = ScriptedNodeLoad()
    config = ray_config(tmp_path, cluster, kill_grace_s=1.0)
    corpus = write_spec(
        config.data_root, "tree.json", epoch_s=1.0, grandchildren=True, daemon=True, ignore_sigterm=True
    )
    with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
        job = trainer.start(corpus=corpus, hyperparameters=T.Hyperparameters(epochs=100))
        lines = trainer.wait_log(job.job_id, "pids ", timeout=60)
        pids = pids_from_log(lines)
        assert set(pids) == {"root", "grandchild", "escapee", "daemon"}
        assert all(alive(p) for p in pids.values())
        trainer.stub.Kill(T.KillRequest(job_id=job.job_id), timeout=10)
        killed = trainer.wait(job.job_id, timeout=60)
        assert killed.state == T.JOB_STATE_KILLED, killed.reason
        deadline = time.monotonic() + 20
        while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [name for name, p in pids.items() if alive(p)]


def test_a_sweep_of_four_trials_runs_across_the_nodes(tmp_path, cluster):
    S = T
    load = ScriptedNodeLoad()
    config = ray_config(tmp_path, cluster)
    corpus = write_spec(config.data_root, "peak.json", epoch_s=0.2, f1_peak_epochs=3)
    spec = S.SweepSpec(
        model="movie",
        label="影视",
        corpus=corpus,
        search_space={"epochs": S.SearchSpace(range=S.Range(min=1, max=4, grid_points=4))},
        algorithm=S.SEARCH_ALGORITHM_GRID,
        trial_budget=4,
        max_parallel_trials=3,
        metric="f1",
        direction=S.METRIC_DIRECTION_MAXIMIZE,
    )
    with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
        sweep = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep
        deadline = time.monotonic() + 180
        while True:
            sweep = trainer.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep.sweep_id), timeout=10).sweep
            if sweep.state in (S.SWEEP_STATE_SUCCEEDED, S.SWEEP_STATE_FAILED, S.SWEEP_STATE_KILLED):
                break
            assert time.monotonic() < deadline, sweep.reason
            time.sleep(0.2)
        assert sweep.state == S.SWEEP_STATE_SUCCEEDED, sweep.reason
        jobs = trainer.stub.List(T.ListRequest(sweep_id=sweep.sweep_id), timeout=10).jobs
        trials = [j for j in jobs if j.no_push]
        assert len(trials) == 4 and all(j.state == T.JOB_STATE_SUCCEEDED for j in trials)
        assert len({j.placement.node for j in trials}) >= 2  # spread over the nodes
        final = [j for j in jobs if not j.no_push]
        assert final and final[0].hyperparameters.epochs == 3


def test_the_ray_head_unreachable_queues_and_says_why(tmp_path):
    config = make_config(tmp_path, executor="ray", ray_address="http://127.0.0.1:9")
    with running_trainer(config) as trainer:
        job = trainer.start()
        time.sleep(1.5)
        queued = trainer.status(job.job_id).job
        assert queued.state == T.JOB_STATE_QUEUED
        assert queued.gate.reason.startswith("UNAVAILABLE: ") and "127.0.0.1:9" in queued.gate.reason


def test_work_resumes_when_the_ray_head_answers_again(tmp_path, cluster):
    """The head unreachable at start (the Trainer serves; the job queues with
    UNAVAILABLE), then reachable: the storage probe runs and the job runs."""
    proxy = TcpProxy(int(cluster.address.rsplit(":", 1)[1]))
    config = ray_config(tmp_path, cluster, ray_address=proxy.address, gate=NODE_GATE)
    load = ScriptedNodeLoad()
    try:
        with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
            job = trainer.start()
            time.sleep(1.5)
            queued = trainer.status(job.job_id).job
            assert queued.state == T.JOB_STATE_QUEUED and queued.gate.reason.startswith("UNAVAILABLE: ")
            proxy.on()
            done = trainer.wait(job.job_id, timeout=90)
            assert done.state == T.JOB_STATE_SUCCEEDED and done.placement.executor == "ray", done.reason
    finally:
        proxy.off()


def test_a_trainer_refuses_to_serve_when_the_nodes_cannot_use_the_storage(tmp_path, cluster):
    config = ray_config(tmp_path, cluster, ray_python=str(tmp_path / "no-such-python"))
    with pytest.raises(StorageProbeFailed, match="cannot use the shared storage"), running_trainer(config):
        pass


def test_a_sigkilled_trainer_reattaches_by_submission_id(tmp_path, cluster):
    from tests.integration.test_trainer_containment import FakeTrainer

    write_spec(tmp_path / "data", "slow.json", epoch_s=0.3)
    overrides = {
        "executor": "ray",
        "ray_address": cluster.address,
        "gate": {
            "cpu_normal": 101,
            "cpu_danger": 101,
            "memory_normal": 101,
            "memory_danger": 101,
            "warmup_s": 0,
            "window_s": 0.5,
        },
        "sample_interval_s": 0.25,
        "stop_jobs_on_exit": False,
    }
    first = FakeTrainer(tmp_path, "first", **overrides)
    job = first.stub.Start(
        T.StartRequest(
            model="movie", label="影视", corpus="slow.json", hyperparameters=T.Hyperparameters(epochs=20)
        ),
        timeout=10,
    ).job
    running = first.wait(job.job_id, [T.JOB_STATE_RUNNING], timeout=60)
    first.sigkill()
    second = FakeTrainer(tmp_path, "second", **overrides)
    try:
        again = second.wait(job.job_id, [T.JOB_STATE_RUNNING], timeout=30)
        assert "re-attached to Ray job trainer-" in again.reason, again.reason
        assert again.placement.handle == running.placement.handle and again.attempts == 1
        done = second.wait(job.job_id, ENDED, timeout=90)
        assert done.state == T.JOB_STATE_SUCCEEDED and done.attempts == 1, done.reason
    finally:
        second.stop()


def test_a_node_at_danger_stops_its_job_which_resumes_on_another_node(tmp_path, cluster):
    load = ScriptedNodeLoad()
    config = ray_config(tmp_path, cluster)
    corpus = write_spec(config.data_root, "danger.json", epoch_s=0.3)
    only(load, cluster, "w1")
    with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
        job = trainer.start(corpus=corpus, hyperparameters=T.Hyperparameters(epochs=30))
        first = trainer.wait(job.job_id, [T.JOB_STATE_RUNNING], timeout=60)
        assert first.placement.node == cluster.node_id("w1")
        trainer.wait_log(job.job_id, '"epoch": 3', timeout=60)
        load.set(cluster.node_id("w1"), IDLE, 97.0)  # memory danger on w1 (danger kills even a lone job)
        load.set(cluster.node_id("w2"), IDLE)
        done = trainer.wait(job.job_id, timeout=120)
        assert done.state == T.JOB_STATE_SUCCEEDED, done.reason
        assert done.attempts == 2 and done.placement.node == cluster.node_id("w2")
        log = list(trainer.status(job.job_id, 1000).log_tail)
        assert any(
            f"node {cluster.node_id('w1')[:12]}" in line and "memory 97.0% >= danger" in line for line in log
        )
        resumed = [line for line in log if "resumed after epoch" in line]
        assert resumed and int(resumed[-1].split()[-1]) >= 3


def test_a_worker_node_dying_mid_job_requeues_it_and_it_resumes_elsewhere(tmp_path, cluster):
    """Last in the module: it kills w1 (and adds a fresh worker back)."""
    load = ScriptedNodeLoad()
    config = ray_config(tmp_path, cluster)
    corpus = write_spec(config.data_root, "long.json", epoch_s=0.3)
    only(load, cluster, "w1")
    with running_trainer(config, executor=RayExecutor(config, node_load=load)) as trainer:
        job = trainer.start(corpus=corpus, hyperparameters=T.Hyperparameters(epochs=60))
        first = trainer.wait(job.job_id, [T.JOB_STATE_RUNNING], timeout=60)
        assert first.placement.node == cluster.node_id("w1")
        lines = trainer.wait_log(job.job_id, '"epoch": 3', timeout=60)
        old_root = pids_from_log(lines)["root"]
        only(load, cluster, "w2")
        cluster.kill_worker("w1")
        try:
            requeued = trainer.wait(job.job_id, [T.JOB_STATE_QUEUED, T.JOB_STATE_RUNNING], timeout=60)
            deadline = time.monotonic() + 90
            while True:
                now = trainer.status(job.job_id).job
                if now.attempts >= 2 or now.state in ENDED:
                    break
                assert time.monotonic() < deadline, now.reason
                time.sleep(0.1)
            done = trainer.wait(job.job_id, timeout=120)
            assert done.state == T.JOB_STATE_SUCCEEDED, done.reason
            assert done.attempts == 2 and done.placement.node == cluster.node_id("w2")
            log = list(trainer.status(job.job_id, 1000).log_tail)
            assert any("was lost" in line and "died" in line.lower() for line in log), log[-20:]
            resumed = [line for line in log if "resumed after epoch" in line]
            assert resumed and int(resumed[-1].split()[-1]) >= 3  # nothing lost: from its checkpoint
            # The old attempt (its node dead, its process alive on this machine) was fenced off.
            deadline = time.monotonic() + 20
            while alive(old_root) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not alive(old_root)
            # It was ended, not left to finish: its own log has no result line.
            old_log = pathlib.Path(config.ray_work_root) / "jobs" / job.job_id / "attempt-1" / "job.log"
            assert "result " not in old_log.read_text()
            versions = [p.name for p in (config.model_root / "movie").iterdir() if p.name.isdigit()]
            assert versions == [str(done.model_version)]
            assert requeued is not None
        finally:
            cluster.add_worker("w3")
