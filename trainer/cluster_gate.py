"""The load gate across a cluster: the same rule as trainer/gate.py (admit
below normal, stop at danger), applied per node on that node's own readings.

Pure decisions (no I/O), each with its reason:

1. A job is placed only on a node that is alive, has readings, and has room
   for what the job declares (its thread budget in CPUs, its memory) beside
   the jobs this Trainer already placed there. Ray's own accounting holds
   the same numbers (``entrypoint_num_cpus``, ``entrypoint_memory``); checking
   room first means Ray never gets a job it cannot place (such a job sits
   PENDING and cannot be stopped, ray-project/ray#58353).
2. On each node with room, ``gate.decide_admission`` decides on that node's
   readings, its running jobs and its own last admission / end / kill.
3. Of the nodes that admit, the least loaded (lowest CPU reading, then
   fewest of our jobs, then node id) gets the job. When none admits the job
   WAITs, and the reason names each node's verdict.
4. Overload is judged per node (``gate.decide_overload``): a node at danger
   stops its newest lowest-priority job; the other nodes are not touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from trainer import gate
from trainer.config import GatePolicy

MAX_REASON_CHARS = 600


@dataclasses.dataclass(frozen=True)
class NodeView:
    """One node as the gate sees it."""

    node_id: str
    address: str
    samples: Sequence[gate.Sample]
    running: Sequence[gate.RunningJob]
    cpus: float  # Ray's CPU resource on the node
    memory_bytes: float  # Ray's memory resource on the node
    placed_cpus: float = 0.0  # declared by the jobs this Trainer placed there
    placed_memory: float = 0.0
    last_admit: float | None = None
    last_end: float | None = None
    last_kill: float | None = None

    @property
    def name(self) -> str:
        return f"{self.node_id[:12]}@{self.address}"


@dataclasses.dataclass(frozen=True)
class Placement:
    decision: gate.Decision
    node_id: str = ""  # set when the decision is ADMIT


def place(
    nodes: Sequence[NodeView],
    candidate: gate.Candidate,
    cpus: float,
    memory_bytes: float,
    policy: GatePolicy,
    now: float,
) -> Placement:
    """Where the candidate runs, or why it waits (rules 1-3)."""
    if not nodes:
        return Placement(gate.Decision(gate.Action.WAIT, "no Ray node is alive to run the job"))
    admitted: list[tuple[gate.Decision, NodeView]] = []
    verdicts = []
    for node in nodes:
        free_cpus = node.cpus - node.placed_cpus
        if cpus > free_cpus + 1e-9:
            verdicts.append(
                f"{node.name}: no room ({free_cpus:g} of {node.cpus:g} CPUs free, the job needs {cpus:g})"
            )
            continue
        if memory_bytes and memory_bytes > node.memory_bytes - node.placed_memory:
            free = (node.memory_bytes - node.placed_memory) / 2**20
            verdicts.append(
                f"{node.name}: no room ({free:.0f} MiB free, the job needs {memory_bytes / 2**20:.0f} MiB)"
            )
            continue
        budget = gate.thread_budget_share(max(1, round(cpus)), node.cpus)
        node_candidate = dataclasses.replace(candidate, cpu_budget=budget)
        decision = gate.decide_admission(
            node.samples,
            now,
            node.running,
            node_candidate,
            policy,
            node.last_admit,
            node.last_end,
            node.last_kill,
        )
        if decision.action is gate.Action.ADMIT:
            admitted.append((decision, node))
        else:
            verdicts.append(f"{node.name}: {decision.reason}")
    if admitted:
        decision, node = min(
            admitted,
            key=lambda dn: (dn[0].cpu if dn[0].cpu is not None else 0.0, len(dn[1].running), dn[1].node_id),
        )
        reason = f"admitted on node {node.name}: {decision.reason.removeprefix('admitted: ')}"
        return Placement(dataclasses.replace(decision, reason=reason), node.node_id)
    reason = "no node can take it: " + "; ".join(verdicts)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return Placement(gate.Decision(gate.Action.WAIT, reason))


def overloaded(nodes: Sequence[NodeView], policy: GatePolicy, now: float) -> tuple[gate.Decision, str] | None:
    """The first node at danger and the job it stops (rule 4), or None."""
    for node in nodes:
        decision = gate.decide_overload(node.samples, now, list(node.running), policy, node.last_kill)
        if decision is not None:
            reason = f"node {node.name}: {decision.reason}"
            return dataclasses.replace(decision, reason=reason), node.node_id
    return None
