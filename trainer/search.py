"""A sweep's search, on Optuna: the sampler that draws trials, the pruner
that stops poor ones early, and the study that remembers both, in a journal
file under the Trainer's state directory (``studies/<sweep_id>.journal``).

Optuna is embedded (no server): the sweep driver (trainer.sweeps) asks this
module for a trial's hyperparameters, reports each trial's held-out metric
after every epoch and tells how each trial ended. Nothing here starts a job.

- **Samplers** (``SweepSpec.algorithm``): TPE (``TPESampler``, the default;
  random for the first ``startup_trials``), RANDOM (``RandomSampler``) and
  GRID (``GridSampler`` over each hyperparameter's grid points, in an order
  shuffled by the seed). A fresh sampler seeded from (sweep seed, trial
  index, draw) is used for every draw, so a seeded sweep draws the same
  trials (given the same results) whether or not the Trainer restarted in
  between.
- **Distributions**: a list of values is a ``CategoricalDistribution`` of
  those integers; a range an ``IntDistribution`` (``log=True`` on a LOG
  scale): the recipes' hyperparameters are integers. A grid is each
  hyperparameter's points (a range: ``grid_points`` evenly spaced on its
  scale, rounded, repeats dropped).
- **Pruners** (``SweepSpec.pruner``): none (``NopPruner``), MEDIAN
  (``MedianPruner``), SUCCESSIVE_HALVING (``SuccessiveHalvingPruner``) and
  HYPERBAND (``HyperbandPruner``), stepping by epochs.
- **Trials** carry ``sweep_index`` (their index in the sweep) as a user
  attribute; a draw that repeats a configuration the sweep already has is
  ended as FAIL (no sampler learns from it) and never run; after
  SAMPLER_REPEATS such TPE draws in a row the next come from RandomSampler
  (TPE keeps proposing its favourite in a small space), and after
  MAX_REPEAT_DRAWS the search says it has nothing new (the sweep's reason).
- **Storage**: ``JournalStorage`` on a file, chosen over ``RDBStorage`` on
  SQLite after measuring both (``python -m bench.sweep --storage``; figures
  in docs/trainer.md): the journal was 3-6x faster to open, to run 30
  ask/report/tell cycles and to reopen, and needs no SQLAlchemy. Every
  append is written whole under a lock, so a SIGKILLed Trainer reopens it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import warnings
from collections.abc import Iterable, Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from rpc.errors import InvalidArgument
from trainer.domain import (
    Direction,
    JobState,
    PrunerKind,
    PrunerSpec,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    TrialState,
)
from trainer.recipes import Param, Recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DEFAULT_GRID_POINTS = 3
MAX_GRID_POINTS = 100
# A hyperparameter's list of values holds at most this many (the spec's
# serialized size is bounded apart, in trainer.sweeps).
MAX_VALUES = 256
# Draws in a row that only repeat configurations before the search concludes
# it has no new one to offer.
MAX_REPEAT_DRAWS = 20
# TPE draws that repeated a configuration before a draw falls back to random.
SAMPLER_REPEATS = 3
STUDY = "sweep"
INDEX_ATTR = "sweep_index"
REPEAT_ATTR = "repeat_of"
ENDED_ATTR = "search_ended"

# Pruner parameter ranges: (field, lowest, highest), checked by check_pruner.
_PRUNER_RANGES = {
    "startup_trials": (0, 1000),
    "warmup_epochs": (0, 200),
    "min_resource": (0, 200),
    "reduction_factor": (0, 100),
    "min_early_stopping_rate": (0, 20),
    "max_resource": (0, 200),
}


def _field(name: str) -> str:
    return f"spec.search_space[{name!r}]"


# -- the space -----------------------------------------------------------------------


def grid_values(space: SearchSpace, param: Param) -> list[int]:
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
    assert space.minimum is not None and space.maximum is not None, "check_space made sure"
    return float(space.minimum), float(space.maximum)


def check_space(name: str, space: SearchSpace, param: Param) -> None:
    """Raise InvalidArgument naming what is wrong with one hyperparameter's space."""
    bounds = f"{param.minimum}..{param.maximum}"
    has_range = space.minimum is not None or space.maximum is not None
    if space.values and has_range:
        raise InvalidArgument(f"{_field(name)}: give either values or a range, not both")
    if space.values:
        if len(space.values) > MAX_VALUES:
            raise InvalidArgument(
                f"{_field(name)}.values holds {len(space.values)} values; the limit is {MAX_VALUES} "
                "(give a range instead)"
            )
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


def check_pruner(pruner: PrunerSpec) -> None:
    """Raise InvalidArgument naming a pruner parameter out of its range."""
    for name, (lo, hi) in _PRUNER_RANGES.items():
        value = getattr(pruner, name)
        if not lo <= value <= hi:
            raise InvalidArgument(f"spec.pruner.{name} must be {lo}..{hi}, got {value}")
    if pruner.reduction_factor == 1:
        raise InvalidArgument("spec.pruner.reduction_factor must be 2..100 (0 means 3), got 1")
    if pruner.max_resource and pruner.min_resource > pruner.max_resource:
        raise InvalidArgument(
            f"spec.pruner.min_resource {pruner.min_resource} > spec.pruner.max_resource {pruner.max_resource}"
        )


def distributions(spec: SweepSpec, recipe: Recipe) -> dict[str, BaseDistribution]:
    """Each searched hyperparameter's Optuna distribution (a grid: its points)."""
    params = {p.name: p for p in recipe.params}
    out: dict[str, BaseDistribution] = {}
    for name in sorted(spec.search_space):
        space = spec.search_space[name]
        if spec.algorithm is SearchAlgorithm.GRID or space.values:
            choices = grid_values(space, params[name])
            out[name] = CategoricalDistribution(sorted(choices))
        else:
            lo, hi = _range(space)
            out[name] = IntDistribution(math.ceil(lo), math.floor(hi), log=space.scale is Scale.LOG)
    return out


def space_size(dists: Mapping[str, BaseDistribution]) -> int:
    """How many distinct configurations the space holds."""
    size = 1
    for d in dists.values():
        if isinstance(d, CategoricalDistribution):
            size *= len(d.choices)
        else:
            assert isinstance(d, IntDistribution)
            size *= d.high - d.low + 1
    return size


def planned_trials(spec: SweepSpec, space_size: int) -> tuple[int, str]:
    """How many trials a sweep runs, and a note when the space holds fewer
    distinct configurations than its budget ("" when it does not)."""
    if space_size >= spec.trial_budget:
        return spec.trial_budget, ""
    return space_size, (
        f"the search space holds only {space_size} distinct configuration(s): {space_size} of the budget's "
        f"{spec.trial_budget} trials run"
    )


def startup_trials(spec: SweepSpec) -> int:
    return spec.startup_trials or max(1, min(10, spec.trial_budget // 3))


def make_sampler(spec: SweepSpec, dists: Mapping[str, BaseDistribution], index: int, draw: int):
    """A fresh sampler for one draw, seeded from (seed, trial index, draw)."""
    if spec.algorithm is SearchAlgorithm.GRID:
        # One seed for the whole grid: its shuffled order is the same for every draw.
        grid = {name: list(d.choices) for name, d in dists.items() if isinstance(d, CategoricalDistribution)}
        return optuna.samplers.GridSampler(grid, seed=spec.seed % 2**32)
    seed = _seed(spec, index, draw)
    if spec.algorithm is SearchAlgorithm.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=startup_trials(spec), constant_liar=spec.max_parallel > 1
    )


def _seed(spec: SweepSpec, index: int, draw: int) -> int:
    return (spec.seed * 1_000_003 + index * 1_009 + draw) % 2**32


def make_pruner(pruner: PrunerSpec) -> optuna.pruners.BasePruner:
    if pruner.kind is PrunerKind.MEDIAN:
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials or 1, n_warmup_steps=pruner.warmup_epochs + 1
        )
    if pruner.kind is PrunerKind.SUCCESSIVE_HALVING:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource or 1,
            reduction_factor=pruner.reduction_factor or 3,
            min_early_stopping_rate=pruner.min_early_stopping_rate,
        )
    if pruner.kind is PrunerKind.HYPERBAND:
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource or 1,
            max_resource=pruner.max_resource or "auto",
            reduction_factor=pruner.reduction_factor or 3,
        )
    return optuna.pruners.NopPruner()


def pruner_words(pruner: PrunerSpec) -> str:
    return {
        PrunerKind.MEDIAN: "median",
        PrunerKind.SUCCESSIVE_HALVING: "successive halving",
        PrunerKind.HYPERBAND: "Hyperband",
    }.get(pruner.kind, "no")


# -- the study ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What the study knows of one sweep trial."""

    state: OptunaState
    intermediate: tuple[tuple[int, float], ...]
    value: float | None


def study_path(state_dir: pathlib.Path, sweep_id: str) -> pathlib.Path:
    return state_dir / "studies" / f"{sweep_id}.journal"


class SweepStudy:
    """One sweep's Optuna study. Not thread-safe: the sweep driver's one task uses it."""

    def __init__(self, path: pathlib.Path, spec: SweepSpec, recipe: Recipe) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.spec = spec
        self.dists = distributions(spec, recipe)
        self.study = optuna.create_study(
            storage=JournalStorage(JournalFileBackend(str(path))),
            study_name=STUDY,
            direction="minimize" if spec.direction is Direction.MINIMIZE else "maximize",
            pruner=make_pruner(spec.pruner),
            load_if_exists=True,
        )
        self._by_index: dict[int, FrozenTrial] = {}
        self._refresh()

    def _refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        self._by_index = {t.user_attrs[INDEX_ATTR]: t for t in trials if INDEX_ATTR in t.user_attrs}
        # A draw whose index was never recorded (the Trainer died between
        # ask and set_user_attr) is ended, so no sampler counts it as running.
        for t in trials:
            if t.state is OptunaState.RUNNING and INDEX_ATTR not in t.user_attrs:
                self.study.tell(t.number, state=OptunaState.FAIL, skip_if_finished=True)

    def size(self) -> int:
        return space_size(self.dists)

    def plan(self) -> tuple[int, str]:
        """How many trials the sweep runs, and why fewer than its budget ("" if not)."""
        planned, note = planned_trials(self.spec, self.size())
        ended = self.study.user_attrs.get(ENDED_ATTR)
        if isinstance(ended, int) and ended < planned:
            note = (
                f"the search found no new configuration after {ended} trials ({MAX_REPEAT_DRAWS} draws "
                f"in a row repeated earlier ones): {ended} of the budget's {self.spec.trial_budget} trials ran"
            )
            planned = ended
        return planned, note

    def end_search(self, trials: int) -> None:
        """The search has nothing new after ``trials`` trials (kept in the study)."""
        self.study.set_user_attr(ENDED_ATTR, trials)

    def summary(self, trials: int) -> str:
        """ "; N of M trials pruned; <why fewer trials than the budget>" ("" if neither)."""
        pruned = len(list(self.pruned()))
        _, note = self.plan()
        parts = ([f"{pruned} of {trials} trials pruned"] if pruned else []) + ([note] if note else [])
        return "".join(f"; {p}" for p in parts)

    def draw(self, index: int) -> dict[str, int] | None:
        """Trial ``index``'s hyperparameters (the same ones again if it was
        drawn before); None when MAX_REPEAT_DRAWS draws in a row only
        repeated configurations the sweep has (the space is used up)."""
        known = self._by_index.get(index)
        if known is not None:
            return {k: int(v) for k, v in known.params.items()}
        seen = {self._key(t.params): t for t in self._by_index.values()}
        for attempt in range(MAX_REPEAT_DRAWS):
            self.study.sampler = make_sampler(self.spec, self.dists, index, attempt)
            if attempt >= SAMPLER_REPEATS and self.spec.algorithm is SearchAlgorithm.TPE:
                # TPE keeps proposing its favourite of a small space: explore instead.
                self.study.sampler = optuna.samplers.RandomSampler(seed=_seed(self.spec, index, attempt))
            trial = self.study.ask(dict(self.dists))
            params = {k: int(v) for k, v in trial.params.items()}
            earlier = seen.get(self._key(params))
            if earlier is None:
                trial.set_user_attr(INDEX_ATTR, index)
                self._refresh()
                return params
            # A repeat: ended as FAIL (which no sampler learns from), never run.
            self._neutral()
            trial.set_user_attr(REPEAT_ATTR, earlier.user_attrs[INDEX_ATTR])
            self.study.tell(trial, state=OptunaState.FAIL)
        return None

    def _neutral(self) -> None:
        """Tell and report through a sampler whose after_trial does nothing
        (GridSampler's calls Study.stop, meant for optimize loops only)."""
        self.study.sampler = optuna.samplers.RandomSampler(seed=0)

    @staticmethod
    def _key(params: Mapping[str, object]) -> tuple:
        return tuple(sorted((k, int(v)) for k, v in params.items()))  # type: ignore[call-overload]

    def record(self, index: int) -> TrialRecord | None:
        t = self._by_index.get(index)
        if t is None:
            return None
        steps = tuple(sorted((int(s), float(v)) for s, v in t.intermediate_values.items()))
        return TrialRecord(t.state, steps, t.value)

    def report(self, index: int, epoch: int, value: float, judge: bool = True) -> bool:
        """Record trial ``index``'s metric after ``epoch``; True if the pruner
        (asked when ``judge``) says stop (the trial is then told PRUNED)."""
        t = self._by_index.get(index)
        if t is None or t.state is not OptunaState.RUNNING or epoch in t.intermediate_values:
            return False
        self._neutral()
        trial = optuna.trial.Trial(self.study, t._trial_id)
        trial.report(value, epoch)
        prune = judge and trial.should_prune()
        if prune:
            self.study.tell(t.number, state=OptunaState.PRUNED, skip_if_finished=True)
        self._refresh()
        return bool(prune)

    def tell(self, index: int, value: float | None) -> None:
        """Trial ``index`` ended: with its metric (COMPLETE) or without (FAIL).
        A trial already ended (PRUNED, say) stays as it is."""
        t = self._by_index.get(index)
        if t is None or t.state is not OptunaState.RUNNING:
            return
        self._neutral()
        if value is not None and math.isfinite(value):
            self.study.tell(t.number, value, skip_if_finished=True)
        else:
            self.study.tell(t.number, state=OptunaState.FAIL, skip_if_finished=True)
        self._refresh()

    def pruned(self) -> Iterable[int]:
        return [i for i, t in self._by_index.items() if t.state is OptunaState.PRUNED]


def trial_state(record: TrialRecord | None, job_state: JobState | None, metric: float | None) -> TrialState:
    """A trial's state from its study record (PRUNED is the study's word),
    its job's state (None: no job yet) and its metric."""
    if record is not None and record.state is OptunaState.PRUNED:
        return TrialState.PRUNED
    if job_state is None or job_state is JobState.QUEUED:
        return TrialState.WAITING
    if not job_state.ended:
        return TrialState.RUNNING
    return TrialState.COMPLETE if metric is not None else TrialState.FAILED


def grid_size(spec: SweepSpec, recipe: Recipe) -> int:
    params = {p.name: p for p in recipe.params}
    return math.prod(len(grid_values(s, params[n])) for n, s in spec.search_space.items())


__all__ = [
    "MAX_GRID_POINTS",
    "MAX_VALUES",
    "SweepStudy",
    "TrialRecord",
    "check_pruner",
    "check_space",
    "distributions",
    "grid_size",
    "grid_values",
    "make_pruner",
    "make_sampler",
    "planned_trials",
    "space_size",
    "study_path",
    "trial_state",
]
