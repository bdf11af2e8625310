"""The pure part of sweeps: search-space checks (each naming the field),
trial generation (grid, seeded random, integer rounding, log scale) and the
choice of the best trial."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rpc.errors import InvalidArgument
from trainer.domain import (
    Direction,
    JobProgress,
    JobRecord,
    JobState,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    TrialView,
)
from trainer.recipes import FASTTEXT
from trainer.sweeps import best_trial, check_spec, generate_trials, trial_metric, trial_scored


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
    ],
)
def test_bad_specs_name_the_field(overrides, field, words):
    with pytest.raises(InvalidArgument) as err:
        check_spec(spec(**overrides), FASTTEXT, max_trials=20)
    assert field in str(err.value) and words in str(err.value), str(err.value)


def test_a_good_spec_passes():
    check_spec(spec(), FASTTEXT, max_trials=20)


def test_grid_is_the_product_in_name_order_with_defaults_filled_in():
    s = spec(
        search_space={
            "epochs": SearchSpace(minimum=2, maximum=4, grid_points=3),
            "embedding_dim": SearchSpace(values=(16, 32)),
        },
        base_params={"threads": 2},
    )
    trials = generate_trials(s, FASTTEXT)
    assert [(t["embedding_dim"], t["epochs"]) for t in trials] == [
        (16, 2),
        (16, 3),
        (16, 4),
        (32, 2),
        (32, 3),
        (32, 4),
    ]
    assert all(t["threads"] == 2 and t["batch_size"] == 64 for t in trials)


def test_grid_on_a_log_scale_rounds_to_distinct_integers():
    s = spec(
        search_space={"embedding_dim": SearchSpace(minimum=8, maximum=512, scale=Scale.LOG, grid_points=4)}
    )
    assert [t["embedding_dim"] for t in generate_trials(s, FASTTEXT)] == [8, 32, 128, 512]
    narrow = spec(search_space={"ngram_range": SearchSpace(minimum=1, maximum=2, grid_points=5)})
    assert [t["ngram_range"] for t in generate_trials(narrow, FASTTEXT)] == [1, 2]


def test_random_search_is_seeded_distinct_in_range_and_log_spread():
    s = spec(
        algorithm=SearchAlgorithm.RANDOM,
        search_space={
            "embedding_dim": SearchSpace(minimum=4, maximum=512, scale=Scale.LOG),
            "batch_size": SearchSpace(values=(32, 64)),
        },
        trial_budget=20,
        seed=7,
    )
    first, again = generate_trials(s, FASTTEXT), generate_trials(s, FASTTEXT)
    assert first == again and len(first) == 20
    assert len({(t["embedding_dim"], t["batch_size"]) for t in first}) == 20
    assert all(4 <= t["embedding_dim"] <= 512 and t["batch_size"] in (32, 64) for t in first)
    # Log scale: about as many draws below the geometric middle (~45) as above.
    below = sum(t["embedding_dim"] < math.sqrt(4 * 512) for t in first)
    assert 4 <= below <= 16
    other = generate_trials(dataclasses.replace(s, seed=8), FASTTEXT)
    assert other != first


def test_random_search_stops_when_the_space_is_exhausted():
    s = spec(
        algorithm=SearchAlgorithm.RANDOM,
        search_space={"ngram_range": SearchSpace(values=(1, 2, 3))},
        trial_budget=10,
    )
    assert sorted(t["ngram_range"] for t in generate_trials(s, FASTTEXT)) == [1, 2, 3]


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
