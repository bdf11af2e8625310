"""``trainer sweep plot ID --out FILE.png``: a sweep's held-out metric
against the compute it spent (trial-epochs), one line per trial, pruned
trials marked, and the best complete trial so far as a step line.

Compute is counted in trial order: trial ``i``'s epochs come after those of
trials ``0..i-1`` (as they run with ``max_parallel_trials`` 1). Needs
matplotlib (the ``plot`` extra); nothing else imports this module.
"""

from __future__ import annotations

import pathlib

from trainer.v1 import trainer_pb2

S = trainer_pb2


def curves(sweep: S.Sweep) -> list[tuple[S.Trial, list[tuple[int, float]]]]:
    """Each trial with its (cumulative trial-epochs, value) points."""
    out, spent = [], 0
    for trial in sorted(sweep.trials, key=lambda t: t.index):
        points = [(spent + v.epoch, v.value) for v in trial.intermediate_values]
        out.append((trial, points))
        if points:
            spent = points[-1][0]
    return out


def best_so_far(sweep: S.Sweep) -> list[tuple[int, float]]:
    """(trial-epochs spent, best complete metric) after each complete trial."""
    maximize = sweep.spec.direction != S.METRIC_DIRECTION_MINIMIZE
    best, out = None, []
    for trial, points in curves(sweep):
        if trial.trial_state == S.TRIAL_STATE_COMPLETE and trial.HasField("metric") and points:
            if best is None or (trial.metric > best if maximize else trial.metric < best):
                best = trial.metric
            out.append((points[-1][0], best))
    return out


def plot(sweep: S.Sweep, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for trial, points in curves(sweep):
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        pruned = trial.trial_state == S.TRIAL_STATE_PRUNED
        ax.plot(xs, ys, "-", lw=1, alpha=0.6, color="tab:red" if pruned else "tab:blue")
        if pruned:
            ax.plot(xs[-1], ys[-1], "x", color="tab:red", ms=8)
    best = best_so_far(sweep)
    if best:
        bx, by = zip(*best, strict=True)
        ax.step(bx, by, where="post", color="black", lw=2, label=f"best complete {sweep.spec.metric}")
    ax.plot([], [], "-", color="tab:blue", label="trial (held-out value per epoch)")
    ax.plot([], [], "-x", color="tab:red", label="pruned trial")
    ax.set_xlabel("compute spent (trial-epochs)")
    ax.set_ylabel(f"held-out {sweep.spec.metric}")
    algorithm = S.SearchAlgorithm.Name(sweep.spec.algorithm).removeprefix("SEARCH_ALGORITHM_")
    pruner = S.PrunerKind.Name(sweep.spec.pruner.kind).removeprefix("PRUNER_KIND_")
    ax.set_title(f"{sweep.sweep_id}: {algorithm}, pruner {pruner}, {len(sweep.trials)} trials")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
