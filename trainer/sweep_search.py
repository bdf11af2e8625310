"""A sweep's search: the spec checked against the recipe, the trials it
makes (grid or seeded random), a trial's metric and the best trial. Pure:
no store, no jobs (trainer.sweeps drives them)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable

from rpc.errors import InvalidArgument, shown
from trainer import lifecycle
from trainer.domain import (
    METRICS,
    Direction,
    JobRecord,
    JobState,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    TrialView,
)
from trainer.recipes import Param, Recipe

DEFAULT_GRID_POINTS = 3
MAX_GRID_POINTS = 100
# Random search draws this many times for a combination not tried yet before
# it concludes the space has fewer distinct points than the budget.
RANDOM_DRAWS = 200


# -- the pure part ------------------------------------------------------------------


def _field(name: str) -> str:
    return f"spec.search_space[{name!r}]"


def check_spec(spec: SweepSpec, recipe: Recipe, max_trials: int) -> None:
    """Raise InvalidArgument naming the field of ``spec`` that is wrong."""
    params = {p.name: p for p in recipe.params}
    if not spec.search_space:
        raise InvalidArgument(
            "spec.search_space is empty: give at least one hyperparameter with a list of values or a range"
        )
    for name, space in spec.search_space.items():
        param = params.get(name)
        if param is None:
            raise InvalidArgument(
                f"spec.search_space has an unknown hyperparameter {shown(name)}; recipe {recipe.name!r} has: "
                f"{', '.join(params)}"
            )
        if name in spec.base_params:
            raise InvalidArgument(
                f"{_field(name)}: {name} is also fixed in spec.base_hyperparameters; give it in one place"
            )
        _check_space(name, space, param)
    if not recipe.metrics:
        raise InvalidArgument(f"recipe {recipe.name!r} reports no held-out metric: it cannot be swept")
    if spec.metric not in recipe.metrics:
        raise InvalidArgument(
            f"spec.metric {shown(spec.metric)} is not a metric recipe {recipe.name!r} reports; use one of "
            f"{', '.join(recipe.metrics)}"
        )
    if spec.direction is None:
        raise InvalidArgument("spec.direction must be MAXIMIZE or MINIMIZE")
    if not 1 <= spec.trial_budget <= max_trials:
        raise InvalidArgument(
            f"spec.trial_budget must be 1..{max_trials} (this Trainer's maximum), got {spec.trial_budget}"
        )
    if spec.max_parallel < 1:
        raise InvalidArgument(f"spec.max_parallel_trials must be >= 1, got {spec.max_parallel}")
    if spec.algorithm is SearchAlgorithm.GRID:
        size = math.prod(len(_grid_values(space, params[name])) for name, space in spec.search_space.items())
        if size > spec.trial_budget:
            raise InvalidArgument(
                f"spec.trial_budget {spec.trial_budget} is smaller than the grid's {size} points: raise it, or "
                "give fewer values or grid_points, or use RANDOM search"
            )


def _check_space(name: str, space: SearchSpace, param: Param) -> None:
    bounds = f"{param.minimum}..{param.maximum}"
    has_range = space.minimum is not None or space.maximum is not None
    if space.values and has_range:
        raise InvalidArgument(f"{_field(name)}: give either values or a range, not both")
    if space.values:
        for v in space.values:
            if not float(v).is_integer() or not param.minimum <= v <= param.maximum:
                raise InvalidArgument(
                    f"{_field(name)}.values: {v:g} is not an integer in {bounds} (the recipe's bounds for {name})"
                )
        return
    if not has_range:
        raise InvalidArgument(f"{_field(name)} is empty: give a list of values or a range (min, max)")
    lo, hi = space.minimum, space.maximum
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        raise InvalidArgument(f"{_field(name)}.range needs both min and max")
    if lo > hi:
        raise InvalidArgument(f"{_field(name)}.range: min {lo:g} > max {hi:g}")
    if space.scale is Scale.LOG and lo <= 0:
        raise InvalidArgument(f"{_field(name)}.range: a LOG scale needs min > 0, got {lo:g}")
    if lo < param.minimum or hi > param.maximum:
        raise InvalidArgument(
            f"{_field(name)}.range {lo:g}..{hi:g} leaves the recipe's bounds {bounds} for {name}"
        )
    if math.ceil(lo) > math.floor(hi):
        raise InvalidArgument(f"{_field(name)}.range {lo:g}..{hi:g} holds no integer ({name} is an integer)")
    if not 0 <= space.grid_points <= MAX_GRID_POINTS:
        raise InvalidArgument(f"{_field(name)}.range.grid_points must be 0..{MAX_GRID_POINTS}")


def _grid_values(space: SearchSpace, param: Param) -> list[int]:
    """The distinct integer points of one hyperparameter's grid, in order."""
    if space.values:
        raw = list(space.values)
    else:
        n = space.grid_points or DEFAULT_GRID_POINTS
        lo, hi = _range(space)
        if n == 1 or lo == hi:
            raw = [lo]
        elif space.scale is Scale.LOG:
            raw = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (n - 1)) for i in range(n)]
        else:
            raw = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    # Hyperparameters are integers: round (inside the range), drop repeats.
    out: list[int] = []
    for v in raw:
        point = _clamp_int(v, space, param)
        if point not in out:
            out.append(point)
    return out


def _clamp_int(value: float, space: SearchSpace, param: Param) -> int:
    lo = math.ceil(space.minimum) if space.minimum is not None else param.minimum
    hi = math.floor(space.maximum) if space.maximum is not None else param.maximum
    return int(min(hi, max(lo, round(value))))


def _range(space: SearchSpace) -> tuple[float, float]:
    """A range space's bounds (check_spec made sure a space without values has both)."""
    assert space.minimum is not None and space.maximum is not None
    return float(space.minimum), float(space.maximum)


def _sample(space: SearchSpace, param: Param, rng: random.Random) -> int:
    if space.values:
        return int(rng.choice(space.values))
    lo, hi = _range(space)
    if space.scale is Scale.LOG:
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        value = rng.uniform(lo, hi)
    return _clamp_int(value, space, param)


def generate_trials(spec: SweepSpec, recipe: Recipe) -> list[dict[str, int]]:
    """Every trial's full hyperparameters (base, sampled, defaults), in the
    order they run. Grid: the cartesian product of each hyperparameter's
    points (names in sorted order). Random: ``trial_budget`` distinct draws
    from ``random.Random(seed)``, fewer when the space holds fewer points.
    Deterministic for a given spec."""
    params = {p.name: p for p in recipe.params}
    names = sorted(spec.search_space)
    if spec.algorithm is SearchAlgorithm.GRID:
        axes = [_grid_values(spec.search_space[n], params[n]) for n in names]
        combos = [dict(zip(names, point, strict=True)) for point in itertools.product(*axes)]
    else:
        rng = random.Random(spec.seed)
        combos, seen = [], set()
        for _ in range(spec.trial_budget):
            for _ in range(RANDOM_DRAWS):
                combo = {n: _sample(spec.search_space[n], params[n], rng) for n in names}
                key = tuple(combo[n] for n in names)
                if key not in seen:
                    break
            else:
                break  # the space is exhausted
            seen.add(key)
            combos.append(combo)
    return [recipe.validate({**spec.base_params, **combo}) for combo in combos[: spec.trial_budget]]


def trial_metric(job: JobRecord | None, metric: str) -> float | None:
    """A finished trial's held-out ``metric`` (None unless it succeeded and reported it)."""
    if job is None or job.state is not JobState.SUCCEEDED:
        return None
    value = getattr(job.progress, metric, None) if metric in METRICS else None
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def best_trial(trials: Iterable[TrialView], direction: Direction | None) -> TrialView | None:
    """The trial with the best metric; on a tie the earliest (``direction``
    None, never so after check_spec, maximizes)."""
    best, best_metric = None, 0.0
    sign = -1.0 if direction is Direction.MINIMIZE else 1.0
    for trial in trials:
        if trial.metric is None:
            continue
        if best is None or sign * (trial.metric - best_metric) > 0:
            best, best_metric = trial, trial.metric
    return best


# How a trial that exited 0 is judged is the lifecycle's business (rule 3).
trial_scored = lifecycle.trial_scored


def trial_key(sweep_id: str, index: int) -> str:
    return f"{sweep_id}/trial-{index}"


def final_key(sweep_id: str) -> str:
    return f"{sweep_id}/final"
