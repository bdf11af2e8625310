"""Sweep messages of ``trainer.v1``: proto -> domain -> proto for the
servicer's sweep RPCs (kept apart from servicer.py's job translations)."""

from __future__ import annotations

from rpc.errors import InvalidArgument
from trainer import servicer
from trainer.domain import (
    Direction,
    PrunerKind,
    PrunerSpec,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    SweepState,
    SweepView,
    TrialState,
    TrialView,
    ValidationRequest,
)
from trainer.v1 import trainer_pb2

_HYPERPARAMETERS = [f.name for f in trainer_pb2.Hyperparameters.DESCRIPTOR.fields]
_SCALES = {
    trainer_pb2.SCALE_UNSPECIFIED: Scale.LINEAR,
    trainer_pb2.SCALE_LINEAR: Scale.LINEAR,
    trainer_pb2.SCALE_LOG: Scale.LOG,
}
# Unspecified is TPE for a new sweep (a stored sweep keeps what it ran with).
_ALGORITHMS = {
    trainer_pb2.SEARCH_ALGORITHM_UNSPECIFIED: SearchAlgorithm.TPE,
    trainer_pb2.SEARCH_ALGORITHM_RANDOM: SearchAlgorithm.RANDOM,
    trainer_pb2.SEARCH_ALGORITHM_GRID: SearchAlgorithm.GRID,
    trainer_pb2.SEARCH_ALGORITHM_TPE: SearchAlgorithm.TPE,
}
_PRUNERS = {
    trainer_pb2.PRUNER_KIND_UNSPECIFIED: PrunerKind.NONE,
    trainer_pb2.PRUNER_KIND_NONE: PrunerKind.NONE,
    trainer_pb2.PRUNER_KIND_MEDIAN: PrunerKind.MEDIAN,
    trainer_pb2.PRUNER_KIND_SUCCESSIVE_HALVING: PrunerKind.SUCCESSIVE_HALVING,
    trainer_pb2.PRUNER_KIND_HYPERBAND: PrunerKind.HYPERBAND,
}
_PRUNER_TO_PROTO = {v: k for k, v in _PRUNERS.items() if k != trainer_pb2.PRUNER_KIND_UNSPECIFIED}
_TRIAL_STATE_TO_PROTO = {s: trainer_pb2.TrialState.Value(f"TRIAL_STATE_{s.value}") for s in TrialState}
_DIRECTIONS = {
    trainer_pb2.METRIC_DIRECTION_MAXIMIZE: Direction.MAXIMIZE,
    trainer_pb2.METRIC_DIRECTION_MINIMIZE: Direction.MINIMIZE,
}
_SWEEP_STATE_TO_PROTO = {s: trainer_pb2.SweepState.Value(f"SWEEP_STATE_{s.value}") for s in SweepState}
_SWEEP_STATE_FROM_PROTO = {v: k for k, v in _SWEEP_STATE_TO_PROTO.items()}
_DIRECTION_TO_PROTO = {v: k for k, v in _DIRECTIONS.items()}
_ALGORITHM_TO_PROTO = {
    SearchAlgorithm.RANDOM: trainer_pb2.SEARCH_ALGORITHM_RANDOM,
    SearchAlgorithm.GRID: trainer_pb2.SEARCH_ALGORITHM_GRID,
    SearchAlgorithm.TPE: trainer_pb2.SEARCH_ALGORITHM_TPE,
}
_SCALE_TO_PROTO = {Scale.LINEAR: trainer_pb2.SCALE_LINEAR, Scale.LOG: trainer_pb2.SCALE_LOG}


def _enum(table: dict, value: int, field: str, allowed: str):
    if value not in table:
        raise InvalidArgument(f"{field} has an unknown value {value}; use {allowed}")
    return table[value]


def sweep_spec(request: trainer_pb2.StartSweepRequest) -> SweepSpec:
    spec = request.spec
    space = {}
    for name, s in spec.search_space.items():
        kind = s.WhichOneof("kind")
        if kind == "values":
            space[name] = SearchSpace(values=tuple(s.values.values))
        elif kind == "range":
            scale = _enum(_SCALES, s.range.scale, f"spec.search_space[{name!r}].range.scale", "LINEAR or LOG")
            space[name] = SearchSpace(
                minimum=s.range.min, maximum=s.range.max, scale=scale, grid_points=s.range.grid_points
            )
        else:
            space[name] = SearchSpace()
    base = spec.base_hyperparameters
    direction = None
    if spec.direction != trainer_pb2.METRIC_DIRECTION_UNSPECIFIED:
        direction = _enum(_DIRECTIONS, spec.direction, "spec.direction", "MAXIMIZE or MINIMIZE")
    return SweepSpec(
        model=spec.model,
        label=spec.label,
        recipe=spec.recipe,
        corpus=spec.corpus,
        base_params={n: getattr(base, n) for n in _HYPERPARAMETERS if base.HasField(n)},
        search_space=space,
        algorithm=_enum(_ALGORITHMS, spec.algorithm, "spec.algorithm", "TPE, GRID or RANDOM"),
        seed=spec.seed,
        trial_budget=spec.trial_budget,
        max_parallel=spec.max_parallel_trials or 1,
        metric=spec.metric,
        direction=direction,
        validation=servicer.validation_request(spec.validation),
        idempotency_key=request.idempotency_key,
        priority=servicer.priority_from_proto(spec.priority, "spec.priority"),
        pruner=_pruner(spec.pruner),
        startup_trials=spec.startup_trials,
    )


def _pruner(pruner: trainer_pb2.Pruner) -> PrunerSpec:
    kind = _enum(_PRUNERS, pruner.kind, "spec.pruner.kind", "NONE, MEDIAN, SUCCESSIVE_HALVING or HYPERBAND")
    return PrunerSpec(
        kind=kind,
        startup_trials=pruner.startup_trials,
        warmup_epochs=pruner.warmup_epochs,
        min_resource=pruner.min_resource,
        reduction_factor=pruner.reduction_factor,
        min_early_stopping_rate=pruner.min_early_stopping_rate,
        max_resource=pruner.max_resource,
    )


def _pruner_proto(pruner: PrunerSpec) -> trainer_pb2.Pruner:
    return trainer_pb2.Pruner(
        kind=_PRUNER_TO_PROTO[pruner.kind],
        startup_trials=pruner.startup_trials,
        warmup_epochs=pruner.warmup_epochs,
        min_resource=pruner.min_resource,
        reduction_factor=pruner.reduction_factor,
        min_early_stopping_rate=pruner.min_early_stopping_rate,
        max_resource=pruner.max_resource,
    )


def sweep_states(states) -> list[SweepState]:
    return [
        _enum(_SWEEP_STATE_FROM_PROTO, s, "states", "RUNNING, PUSHING, SUCCEEDED, FAILED or KILLED")
        for s in states
    ]


def _space_proto(space: SearchSpace) -> trainer_pb2.SearchSpace:
    if space.values:
        return trainer_pb2.SearchSpace(values=trainer_pb2.ValueList(values=space.values))
    return trainer_pb2.SearchSpace(
        range=trainer_pb2.Range(
            min=space.minimum,
            max=space.maximum,
            scale=_SCALE_TO_PROTO[space.scale],
            grid_points=space.grid_points,
        )
    )


def _hyperparameters(params: dict[str, int]) -> trainer_pb2.Hyperparameters:
    return trainer_pb2.Hyperparameters(**{k: v for k, v in params.items() if k in _HYPERPARAMETERS})


def _trial_proto(trial: TrialView) -> trainer_pb2.Trial:
    job = trial.job
    return trainer_pb2.Trial(
        index=trial.index,
        hyperparameters=_hyperparameters(trial.params),
        job_id=job.job_id if job else "",
        state=servicer.job_proto(job).state if job else trainer_pb2.JOB_STATE_UNSPECIFIED,
        reason=job.reason if job else "",
        metric=trial.metric,
        trial_state=_TRIAL_STATE_TO_PROTO[trial.state],
        intermediate_values=[trainer_pb2.IntermediateValue(epoch=e, value=v) for e, v in trial.intermediate],
    )


def _validation_request_proto(request: ValidationRequest) -> trainer_pb2.ValidationPolicy:
    return trainer_pb2.ValidationPolicy(
        floors=request.floors,
        max_regression=request.max_regression,
        regression_metric=request.regression_metric,
        skip=request.skip,
        held_out_corpus=request.held_out_corpus,
    )


def sweep_proto(view: SweepView) -> trainer_pb2.Sweep:
    sweep, spec = view.sweep, view.sweep.spec
    return trainer_pb2.Sweep(
        sweep_id=sweep.sweep_id,
        spec=trainer_pb2.SweepSpec(
            recipe=spec.recipe,
            model=spec.model,
            label=spec.label,
            corpus=spec.corpus,
            base_hyperparameters=_hyperparameters(spec.base_params),
            search_space={k: _space_proto(v) for k, v in spec.search_space.items()},
            algorithm=_ALGORITHM_TO_PROTO[spec.algorithm],
            seed=spec.seed,
            trial_budget=spec.trial_budget,
            max_parallel_trials=spec.max_parallel,
            metric=spec.metric,
            direction=_DIRECTION_TO_PROTO[spec.direction] if spec.direction else None,
            validation=_validation_request_proto(spec.validation),
            priority=servicer._PRIORITY_TO_PROTO.get(spec.priority, trainer_pb2.PRIORITY_NORMAL),
            pruner=_pruner_proto(spec.pruner),
            startup_trials=spec.startup_trials,
        ),
        state=_SWEEP_STATE_TO_PROTO[sweep.state],
        reason=sweep.reason,
        trials=[_trial_proto(t) for t in view.trials],
        best=_trial_proto(view.best) if view.best else None,
        final_job=servicer.job_proto(view.final_job) if view.final_job else None,
        create_time=servicer._timestamp(sweep.create_time),
        end_time=servicer._timestamp(sweep.end_time),
        trial_epochs=view.trial_epochs,
    )


# A ListSweeps response stops before this many bytes (a default client takes
# 4 MiB); the rest comes with next_page_token. One sweep in a list is cut to
# MAX_LISTED_SWEEP_BYTES, one in GetSweep to MAX_SWEEP_BYTES (specs are
# bounded at StartSweep, but a store may hold sweeps from before the bound).
MAX_LIST_BYTES = 2 * 1024 * 1024
MAX_LISTED_SWEEP_BYTES = 256 * 1024
MAX_SWEEP_BYTES = 3 * 1024 * 1024
SHOWN_VALUES = 64


def fit(sweep: trainer_pb2.Sweep, limit: int) -> trainer_pb2.Sweep:
    """``sweep`` within ``limit`` bytes: if larger, its spec's value lists
    keep their first SHOWN_VALUES values, and its reason says so."""
    if sweep.ByteSize() <= limit:
        return sweep
    cut = []
    for name, space in sweep.spec.search_space.items():
        values = space.values.values
        if space.WhichOneof("kind") == "values" and len(values) > SHOWN_VALUES:
            cut.append(f"{name} ({len(values)})")
            del values[SHOWN_VALUES:]
    sweep.spec.validation.held_out_corpus = sweep.spec.validation.held_out_corpus[:1024]
    if cut:
        sweep.reason += (
            f" [this response shows the first {SHOWN_VALUES} values of spec.search_space {', '.join(cut)}]"
        )
    return sweep


def page_seq(token: str) -> int:
    """The store position a ListSweeps page_token continues from (0: the start)."""
    if not token:
        return 0
    if not token.isdigit() or len(token) > 18:
        raise InvalidArgument("page_token must be a next_page_token from an earlier ListSweeps response")
    return int(token)


def list_sweeps_response(views: list[SweepView]) -> trainer_pb2.ListSweepsResponse:
    """Sweeps in order until the next would pass MAX_LIST_BYTES (at least one)."""
    reply = trainer_pb2.ListSweepsResponse()
    size = 0
    for i, view in enumerate(views):
        sweep = fit(sweep_proto(view), MAX_LISTED_SWEEP_BYTES)
        size += sweep.ByteSize() + 8
        if i and size > MAX_LIST_BYTES:
            reply.next_page_token = str(views[i - 1].sweep.seq)
            break
        reply.sweeps.append(sweep)
    return reply
