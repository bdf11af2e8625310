"""The cluster gate's pure decisions (trainer.cluster_gate), the Ray
dashboard's node readings (trainer.ray_jobs.parse_nodes) and the lifecycle's
rule 8 (a lost attempt is requeued at once)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trainer import cluster_gate, gate, lifecycle
from trainer.config import GatePolicy
from trainer.domain import JobRecord, JobState
from trainer.ray_jobs import parse_nodes

POLICY = GatePolicy(warmup_s=0.0, window_s=1.0)
NOW = 1000.0


def samples(cpu: float, memory: float = 10.0) -> list[gate.Sample]:
    return [gate.Sample(NOW - 2 + i * 0.1, NOW - 2 + (i + 1) * 0.1, cpu, memory) for i in range(20)]


def node(
    name: str, cpu: float, *, cpus: float = 1.0, placed: float = 0.0, running=()
) -> cluster_gate.NodeView:
    return cluster_gate.NodeView(
        name, "127.0.0.1", samples(cpu), list(running), cpus, 2**34, placed_cpus=placed
    )


def test_the_least_loaded_node_below_normal_gets_the_job():
    nodes = [node("a", 60.0), node("b", 30.0), node("c", 20.0)]
    placed = cluster_gate.place(nodes, gate.Candidate("j"), 1.0, 0, POLICY, NOW)
    assert placed.decision.action is gate.Action.ADMIT and placed.node_id == "c"
    assert placed.decision.reason.startswith("admitted on node c")


def test_a_node_without_room_is_skipped_and_every_verdict_is_named():
    nodes = [node("a", 10.0, placed=1.0), node("b", 70.0)]
    placed = cluster_gate.place(nodes, gate.Candidate("j"), 1.0, 0, POLICY, NOW)
    assert placed.decision.action is gate.Action.WAIT and placed.node_id == ""
    assert "a@127.0.0.1: no room (0 of 1 CPUs free" in placed.decision.reason
    assert "b@127.0.0.1: load at or above normal" in placed.decision.reason


def test_no_node_alive_waits():
    placed = cluster_gate.place([], gate.Candidate("j"), 1.0, 0, POLICY, NOW)
    assert placed.decision.action is gate.Action.WAIT and "no Ray node is alive" in placed.decision.reason


def test_a_node_at_danger_stops_its_own_newest_lowest_priority_job():
    jobs = [
        gate.RunningJob("old", 1.0, 50.0, 50.0, priority=1),
        gate.RunningJob("new", 2.0, 50.0, 50.0, priority=1),
    ]
    nodes = [
        node("calm", 20.0, running=[gate.RunningJob("x", 3.0, 20.0, 20.0)]),
        node("hot", 99.0, running=jobs),
    ]
    decision, node_id = cluster_gate.overloaded(nodes, POLICY, NOW)
    assert node_id == "hot" and decision.job_id == "new" and decision.reason.startswith("node hot@")


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 2)), min_size=1, max_size=6), st.integers(1, 2))
def test_a_job_is_only_ever_placed_below_normal_with_room(levels, threads):
    nodes = [node(f"n{i}", cpu, cpus=2.0, placed=placed) for i, (cpu, placed) in enumerate(levels)]
    placed = cluster_gate.place(nodes, gate.Candidate("j"), float(threads), 0, POLICY, NOW)
    if placed.decision.action is gate.Action.ADMIT:
        chosen = next(n for n in nodes if n.node_id == placed.node_id)
        assert chosen.samples[-1].cpu < POLICY.cpu_normal
        assert chosen.cpus - chosen.placed_cpus >= threads - 1e-9
        # and it is the least loaded of those that qualified
        fits = [
            n
            for n in nodes
            if n.samples[-1].cpu < POLICY.cpu_normal and n.cpus - n.placed_cpus >= threads - 1e-9
        ]
        assert chosen.samples[-1].cpu == min(n.samples[-1].cpu for n in fits)
    else:
        assert all(
            n.samples[-1].cpu >= POLICY.cpu_normal or n.cpus - n.placed_cpus < threads - 1e-9 for n in nodes
        )


def test_parse_nodes_reads_the_dashboard_summary():
    reply = {
        "data": {
            "summary": [
                {
                    "cpu": 12.5,
                    "mem": [100, 60, 40.0, 40],
                    "raylet": {
                        "nodeId": "abc",
                        "state": "ALIVE",
                        "isHeadNode": True,
                        "nodeManagerAddress": "10.0.0.1",
                        "resourcesTotal": {"CPU": 8.0, "memory": 1e9},
                    },
                },
                {"cpu": None, "mem": None, "raylet": {"nodeId": "def", "state": "DEAD"}},
                {"raylet": {}},
            ]
        }
    }
    first, second = parse_nodes(reply, now=5.0)
    assert (
        first.node_id,
        first.alive,
        first.is_head,
        first.cpu_percent,
        first.memory_percent,
        first.cpus,
    ) == (
        "abc",
        True,
        True,
        12.5,
        40.0,
        8.0,
    )
    assert second.alive is False and second.cpu_percent is None


def test_a_lost_attempt_is_requeued_at_once_and_an_ended_job_stays_ended():
    rec = JobRecord("j", "fake", "m", "l", "c", {}, JobState.RUNNING, 0.0, attempts=2, start_time=10.0)
    change = lifecycle.decide(rec, lifecycle.Lost("its node n died"), lifecycle.RequeuePolicy(), 20.0)
    assert change is not None and change.state is JobState.QUEUED and change.fields["not_before"] == 20.0
    assert "attempt 2 was lost (its node n died)" in change.reason
    after = lifecycle.apply(rec, change, 20.0)
    assert after.attempts == 2 and after.run_s == 10.0 and after.pid == 0
    ended = JobRecord("j", "fake", "m", "l", "c", {}, JobState.KILLED, 0.0)
    assert lifecycle.decide(ended, lifecycle.Lost("x"), lifecycle.RequeuePolicy(), 20.0) is None
