"""The pure part of sweeps and their search on Optuna (trainer.search, a real
study in a journal file): search-space and pruner checks (each naming the
field), the bounds on a spec's size, trial drawing (grid, seeded random and
TPE, integer rounding, log scale, reproducible across a reopened study),
pruning from per-epoch values, and the choice of the best trial."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rpc.errors import InvalidArgument
from trainer import search
from trainer.domain import (
    Direction,
    JobProgress,
    JobRecord,
    JobState,
    PrunerKind,
    PrunerSpec,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    TrialView,
)
from trainer.recipes import FASTTEXT
from trainer.sweeps import MAX_SPEC_BYTES, best_trial, check_spec, planned_trials, trial_metric, trial_scored


def spec(**overrides) -> SweepSpec:
    values = dict(
        model="movie",
        label="影视",
        search_space={"embedding_dim": SearchSpace(values=(16, 32, 64))},
        metric="f1",
        direction=Direction.MAXIMIZE,
        trial_budget=6,
        algorithm=SearchAlgorithm.GRID,
    )
    values.update(overrides)
    return SweepSpec(**values)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (dict(search_space={}), "spec.search_space", "is empty"),
        (
            dict(search_space={"learning": SearchSpace(values=(1,))}),
            "spec.search_space",
            "unknown hyperparameter",
        ),
        (dict(search_space={"epochs": SearchSpace()}), "spec.search_space['epochs']", "is empty"),
        (
            dict(search_space={"epochs": SearchSpace(minimum=9, maximum=3)}),
            "spec.search_space['epochs'].range",
            "min 9 > max 3",
        ),
        (
            dict(search_space={"epochs": SearchSpace(minimum=0, maximum=3, scale=Scale.LOG)}),
            "spec.search_space['epochs'].range",
            "LOG scale needs min > 0",
        ),
        (
            dict(search_space={"epochs": SearchSpace(minimum=1, maximum=500)}),
            "spec.search_space['epochs'].range",
            "recipe's bounds 1..200",
        ),
        (
            dict(search_space={"ngram_range": SearchSpace(values=(1, 4))}),
            "spec.search_space['ngram_range'].values",
            "4 is not an integer in 1..3",
        ),
        (
            dict(search_space={"epochs": SearchSpace(values=(2.5,))}),
            "spec.search_space['epochs'].values",
            "not an integer",
        ),
        (
            dict(search_space={"epochs": SearchSpace(values=(2,), minimum=1, maximum=3)}),
            "spec.search_space['epochs']",
            "not both",
        ),
        (
            dict(base_params={"embedding_dim": 8}),
            "spec.search_space['embedding_dim']",
            "also fixed in spec.base_hyperparameters",
        ),
        (dict(metric="accuracy"), "spec.metric", "not a metric recipe 'fasttext' reports"),
        (dict(direction=None), "spec.direction", "MAXIMIZE or MINIMIZE"),
        (dict(trial_budget=0), "spec.trial_budget", "1..20"),
        (dict(trial_budget=21), "spec.trial_budget", "got 21"),
        (dict(trial_budget=2), "spec.trial_budget", "smaller than the grid's 3 points"),
        (dict(max_parallel=0), "spec.max_parallel_trials", ">= 1"),
        (dict(startup_trials=1001), "spec.startup_trials", "0..1000"),
        (
            dict(search_space={"epochs": SearchSpace(values=tuple(range(1, 201)) * 2)}),
            "spec.search_space['epochs'].values",
            "the limit is 256",
        ),
        (
            dict(pruner=PrunerSpec(PrunerKind.MEDIAN, warmup_epochs=201)),
            "spec.pruner.warmup_epochs",
            "0..200",
        ),
        (
            dict(pruner=PrunerSpec(PrunerKind.HYPERBAND, reduction_factor=1)),
            "spec.pruner.reduction_factor",
            "2..100",
        ),
        (
            dict(pruner=PrunerSpec(PrunerKind.HYPERBAND, min_resource=5, max_resource=3)),
            "spec.pruner.min_resource",
            "> spec.pruner.max_resource 3",
        ),
        (
            dict(pruner=PrunerSpec(PrunerKind.SUCCESSIVE_HALVING, min_early_stopping_rate=21)),
            "spec.pruner.min_early_stopping_rate",
            "0..20",
        ),
    ],
)
def test_bad_specs_name_the_field(overrides, field, words):
    with pytest.raises(InvalidArgument) as err:
        check_spec(spec(**overrides), FASTTEXT, max_trials=20)
    assert field in str(err.value) and words in str(err.value), str(err.value)


def test_a_good_spec_passes():
    check_spec(spec(), FASTTEXT, max_trials=20)


def draws(tmp_path, s: SweepSpec, n: int, name: str = "s", reopen_at: int | None = None) -> list[dict]:
    """Trials 0..n-1 drawn through a real study (reopened at ``reopen_at``, as
    a restarted Trainer would), with defaults and base values filled in."""
    path = tmp_path / f"{name}.journal"
    study = search.SweepStudy(path, s, FASTTEXT)
    out = []
    for i in range(n):
        if i == reopen_at:
            study = search.SweepStudy(path, s, FASTTEXT)
        params = study.draw(i)
        if params is None:
            break
        out.append(FASTTEXT.validate({**s.base_params, **params}))
    return out


def test_grid_draws_every_point_once_with_defaults_filled_in(tmp_path):
    s = spec(
        search_space={
            "epochs": SearchSpace(minimum=2, maximum=4, grid_points=3),
            "embedding_dim": SearchSpace(values=(16, 32)),
        },
        base_params={"threads": 2},
    )
    trials = draws(tmp_path, s, 6)
    assert sorted((t["embedding_dim"], t["epochs"]) for t in trials) == [
        (16, 2),
        (16, 3),
        (16, 4),
        (32, 2),
        (32, 3),
        (32, 4),
    ]
    assert all(t["threads"] == 2 and t["batch_size"] == 64 for t in trials)
    assert trials == draws(tmp_path, s, 6, "again")  # seeded: the same order


def test_grid_on_a_log_scale_rounds_to_distinct_integers():
    log = SearchSpace(minimum=8, maximum=512, scale=Scale.LOG, grid_points=4)
    assert search.grid_values(log, FASTTEXT.params[2]) == [8, 32, 128, 512]
    narrow = SearchSpace(minimum=1, maximum=2, grid_points=5)
    assert search.grid_values(narrow, FASTTEXT.params[4]) == [1, 2]


@pytest.mark.parametrize("algorithm", [SearchAlgorithm.RANDOM, SearchAlgorithm.TPE])
def test_random_and_tpe_are_seeded_distinct_in_range_and_survive_a_reopen(tmp_path, algorithm):
    s = spec(
        algorithm=algorithm,
        search_space={
            "embedding_dim": SearchSpace(minimum=4, maximum=512, scale=Scale.LOG),
            "batch_size": SearchSpace(values=(32, 64)),
        },
        trial_budget=20,
        seed=7,
    )
    first = draws(tmp_path, s, 20, "a")
    assert first == draws(tmp_path, s, 20, "b", reopen_at=9)  # a restart in between changes nothing
    assert len({(t["embedding_dim"], t["batch_size"]) for t in first}) == 20
    assert all(4 <= t["embedding_dim"] <= 512 and t["batch_size"] in (32, 64) for t in first)
    if algorithm is SearchAlgorithm.RANDOM:
        # Log scale: about as many draws below the geometric middle (~45) as above.
        below = sum(t["embedding_dim"] < math.sqrt(4 * 512) for t in first)
        assert 4 <= below <= 16
    assert draws(tmp_path, dataclasses.replace(s, seed=8), 20, "c") != first


def test_a_small_space_caps_the_trials_and_says_so(tmp_path):
    s = spec(
        algorithm=SearchAlgorithm.RANDOM,
        search_space={"ngram_range": SearchSpace(values=(1, 2))},
        trial_budget=100,
    )
    study = search.SweepStudy(tmp_path / "s.journal", s, FASTTEXT)
    planned, note = planned_trials(s, study.size())
    assert planned == 2 and "only 2 distinct configuration(s): 2 of the budget's 100 trials run" in note
    assert sorted(t["ngram_range"] for t in draws(tmp_path, s, 2, "d")) == [1, 2]
    assert planned_trials(dataclasses.replace(s, trial_budget=2), 2) == (2, "")
    # Past the space's points a draw only repeats: the search says it has nothing new.
    for i in range(2):
        study.draw(i)
    assert study.draw(2) is None


def test_a_spec_over_the_size_limit_is_refused_naming_the_limit():
    values = tuple(float(v) for v in range(1, 201))
    space = {p.name: SearchSpace(values=values[: min(p.maximum, 200)]) for p in FASTTEXT.params[:8]}
    huge = spec(algorithm=SearchAlgorithm.RANDOM, search_space=space, trial_budget=20)
    huge = dataclasses.replace(
        huge, validation=dataclasses.replace(huge.validation, held_out_corpus="x" * 70_000)
    )
    with pytest.raises(InvalidArgument) as err:
        check_spec(huge, FASTTEXT, max_trials=20)
    assert f"the limit is {MAX_SPEC_BYTES} bytes" in str(err.value)


def test_the_median_pruner_prunes_a_poor_trial_and_keeps_its_values(tmp_path):
    s = spec(
        algorithm=SearchAlgorithm.TPE,
        search_space={"embedding_dim": SearchSpace(minimum=4, maximum=512)},
        pruner=PrunerSpec(PrunerKind.MEDIAN),
    )
    study = search.SweepStudy(tmp_path / "p.journal", s, FASTTEXT)
    study.draw(0), study.draw(1)
    assert [study.report(0, e, 0.5 + 0.1 * e) for e in (1, 2, 3)] == [False] * 3
    study.tell(0, 0.8)
    assert study.report(1, 1, 0.05) is True  # worse than the median at epoch 1
    reopened = search.SweepStudy(tmp_path / "p.journal", s, FASTTEXT)
    pruned = reopened.record(1)
    assert pruned is not None and pruned.state is search.OptunaState.PRUNED
    assert pruned.intermediate == ((1, 0.05),)
    reopened.tell(1, None)  # its job ends KILLED afterwards: it stays PRUNED
    assert reopened.record(1).state is search.OptunaState.PRUNED
    assert search.trial_state(reopened.record(1), JobState.KILLED, None).value == "PRUNED"
    assert reopened.record(0).intermediate == ((1, 0.6), (2, 0.7), (3, 0.8))


@pytest.mark.parametrize("kind", list(PrunerKind))
def test_every_pruner_kind_maps_onto_an_optuna_pruner(kind):
    import optuna

    pruner = search.make_pruner(PrunerSpec(kind))
    expected = {
        PrunerKind.NONE: optuna.pruners.NopPruner,
        PrunerKind.MEDIAN: optuna.pruners.MedianPruner,
        PrunerKind.SUCCESSIVE_HALVING: optuna.pruners.SuccessiveHalvingPruner,
        PrunerKind.HYPERBAND: optuna.pruners.HyperbandPruner,
    }[kind]
    assert isinstance(pruner, expected)


def _job(state: JobState, f1: float | None, no_push: bool = True) -> JobRecord:
    progress = JobProgress(f1=f1)
    return JobRecord(
        "j", "fasttext", "movie", "影视", "c", {}, state, 0.0, progress=progress, no_push=no_push
    )


def test_best_trial_by_direction_ignores_unfinished_and_failed_trials():
    trials = [
        TrialView(0, {}, _job(JobState.SUCCEEDED, 0.5), 0.5),
        TrialView(1, {}, _job(JobState.SUCCEEDED, 0.8), 0.8),
        TrialView(2, {}, _job(JobState.RUNNING, None), None),
        TrialView(3, {}, _job(JobState.SUCCEEDED, 0.8), 0.8),
    ]
    assert best_trial(trials, Direction.MAXIMIZE).index == 1  # the earliest of a tie
    assert best_trial(trials, Direction.MINIMIZE).index == 0
    assert best_trial([], Direction.MAXIMIZE) is None
    assert trial_metric(_job(JobState.FAILED, 0.9), "f1") is None
    assert trial_metric(_job(JobState.SUCCEEDED, 0.9), "f1") == 0.9


def test_only_a_no_push_job_with_a_metric_counts_as_a_scored_trial():
    assert "held-out f1 0.700" in trial_scored(_job(JobState.RUNNING, 0.7))
    assert trial_scored(_job(JobState.RUNNING, None)) == ""
    assert trial_scored(_job(JobState.RUNNING, 0.7, no_push=False)) == ""
