"""Status shows the load limits the gate applies: a container's cgroup limits
(a fake cgroup v2 tree read by the real sampler) or the node's."""

from __future__ import annotations

import psutil

from tests.support.trainer_support import make_config, running_trainer
from tests.unit.test_trainer_cgroup_limits import NODE, v2_tree
from trainer.cgroup_limits import LoadReader
from trainer.gate import LoadSampler
from trainer.v1 import trainer_pb2 as S


def test_status_shows_the_cgroup_limits_the_gate_measures_against(tmp_path):
    v2_tree(tmp_path / "root")
    sampler = LoadSampler(interval_s=0.05, reader=LoadReader.detect(tmp_path / "root", NODE))
    with running_trainer(make_config(tmp_path), sampler) as trainer:
        job = trainer.start("movie", "影视", hyperparameters=S.Hyperparameters(epochs=1))
        limits = trainer.status(job.job_id).load_limits
        done = trainer.wait(job.job_id)
    assert (limits.cpu_cores, limits.cpu_source) == (0.5, S.LOAD_LIMIT_SOURCE_CGROUP_V2)
    assert (limits.memory_bytes, limits.memory_source) == (1 << 30, S.LOAD_LIMIT_SOURCE_CGROUP_V2)
    # The gate decided on readings relative to those limits (the fake pod: 25% memory).
    assert done.gate.action == S.GATE_ACTION_ADMIT and abs(done.gate.memory_percent - 25.0) < 0.01


def test_status_shows_the_node_when_the_sampler_does_not_say(tmp_path):
    with running_trainer(make_config(tmp_path)) as trainer:
        limits = trainer.status(trainer.start().job_id).load_limits
    assert limits.cpu_source == S.LOAD_LIMIT_SOURCE_NODE and limits.memory_source == S.LOAD_LIMIT_SOURCE_NODE
    assert limits.cpu_cores == psutil.cpu_count() and limits.memory_bytes == psutil.virtual_memory().total
