"""Conversion between ``trainer.v1`` messages and the Trainer's domain
types (trainer.domain), both ways, for jobs and sweeps: the one place that
knows both. The servicer and the sweep code use it; it imports neither."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from rpc.errors import InvalidArgument
from trainer.cgroup_limits import LimitSource, LoadLimits
from trainer.domain import (
    Direction,
    GateAction,
    GateDecision,
    HeldOutMetrics,
    JobProgress,
    JobRecord,
    JobRequest,
    JobResources,
    JobState,
    Placement,
    PrunerKind,
    PrunerSpec,
    PushDecision,
    Scale,
    SearchAlgorithm,
    SearchSpace,
    SweepSpec,
    SweepState,
    SweepView,
    TrialState,
    TrialView,
    ValidationPolicy,
    ValidationRequest,
)
from trainer.v1 import trainer_pb2

_STATE_TO_PROTO = {
    JobState.QUEUED: trainer_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: trainer_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: trainer_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: trainer_pb2.JOB_STATE_FAILED,
    JobState.KILLED: trainer_pb2.JOB_STATE_KILLED,
    JobState.STOPPING: trainer_pb2.JOB_STATE_STOPPING,
}
_GATE_ACTION_TO_PROTO = {
    GateAction.ADMIT: trainer_pb2.GATE_ACTION_ADMIT,
    GateAction.WAIT: trainer_pb2.GATE_ACTION_WAIT,
    GateAction.KILL: trainer_pb2.GATE_ACTION_KILL,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_HYPERPARAMETERS = [f.name for f in trainer_pb2.Hyperparameters.DESCRIPTOR.fields]
# trainer.job_limits.Priority values (0 LOW, 1 NORMAL, 2 HIGH); unspecified is NORMAL.
_PRIORITY_FROM_PROTO: dict[int, int] = {
    trainer_pb2.PRIORITY_UNSPECIFIED: 1,
    trainer_pb2.PRIORITY_LOW: 0,
    trainer_pb2.PRIORITY_NORMAL: 1,
    trainer_pb2.PRIORITY_HIGH: 2,
}
_PRIORITY_TO_PROTO = {
    0: trainer_pb2.PRIORITY_LOW,
    1: trainer_pb2.PRIORITY_NORMAL,
    2: trainer_pb2.PRIORITY_HIGH,
}


def priority_from_proto(value: int, field: str = "priority") -> int:
    if value not in _PRIORITY_FROM_PROTO:
        raise InvalidArgument(
            f"{field} has an unknown value {value}; use PRIORITY_LOW, PRIORITY_NORMAL or PRIORITY_HIGH"
        )
    return _PRIORITY_FROM_PROTO[value]


def job_request(request: trainer_pb2.StartRequest) -> JobRequest:
    hp = request.hyperparameters
    return JobRequest(
        model=request.model,
        label=request.label,
        recipe=request.recipe,
        corpus=request.corpus,
        params={name: getattr(hp, name) for name in _HYPERPARAMETERS if hp.HasField(name)},
        idempotency_key=request.idempotency_key,
        labels=tuple(request.labels),
        validation=validation_request(request.validation),
        deadline_s=float(request.deadline_seconds) if request.HasField("deadline_seconds") else None,
        deadline_at=request.deadline_time.ToNanoseconds() / 1e9
        if request.HasField("deadline_time")
        else None,
        max_retries=request.max_retries,
        priority=priority_from_proto(request.priority),
    )


def validation_request(policy: trainer_pb2.ValidationPolicy) -> ValidationRequest:
    return ValidationRequest(
        floors=dict(policy.floors),
        max_regression=policy.max_regression if policy.HasField("max_regression") else None,
        regression_metric=policy.regression_metric,
        skip=policy.skip,
        held_out_corpus=policy.held_out_corpus,
        max_background_labeled=(
            policy.max_background_labeled if policy.HasField("max_background_labeled") else None
        ),
    )


def validation_proto(policy: ValidationPolicy | None) -> trainer_pb2.ValidationPolicy | None:
    if policy is None:
        return None
    return trainer_pb2.ValidationPolicy(
        floors=policy.floors,
        max_regression=policy.max_regression,
        regression_metric=policy.regression_metric,
        skip=policy.skip,
        held_out_corpus=policy.held_out_corpus,
        max_background_labeled=policy.max_background_labeled,
    )


def _metrics_proto(metrics: HeldOutMetrics | None) -> trainer_pb2.HeldOutMetrics | None:
    if metrics is None:
        return None
    return trainer_pb2.HeldOutMetrics(
        precision=metrics.precision, recall=metrics.recall, f1=metrics.f1, documents=metrics.documents
    )


def push_proto(decision: PushDecision | None) -> trainer_pb2.PushDecision | None:
    if decision is None:
        return None
    return trainer_pb2.PushDecision(
        outcome=trainer_pb2.PushOutcome.Value(f"PUSH_OUTCOME_{decision.outcome.value}"),
        reason=decision.reason,
        candidate_version=decision.candidate_version,
        candidate_metrics=_metrics_proto(decision.candidate),
        served_version=decision.served_version,
        served_metrics=_metrics_proto(decision.served),
        failures=decision.failures,
        rejected_path=decision.rejected_path,
    )


def job_states(states) -> list[JobState]:
    try:
        return [_STATE_FROM_PROTO[s] for s in states]
    except KeyError as exc:
        raise InvalidArgument(
            f"unknown job state {exc.args[0]} in states; use QUEUED, RUNNING, STOPPING, SUCCEEDED, FAILED or KILLED"
        ) from None


_LIMIT_SOURCE_TO_PROTO = {
    LimitSource.NODE: trainer_pb2.LOAD_LIMIT_SOURCE_NODE,
    LimitSource.CGROUP_V1: trainer_pb2.LOAD_LIMIT_SOURCE_CGROUP_V1,
    LimitSource.CGROUP_V2: trainer_pb2.LOAD_LIMIT_SOURCE_CGROUP_V2,
}


def load_limits_proto(limits: LoadLimits) -> trainer_pb2.LoadLimits:
    return trainer_pb2.LoadLimits(
        cpu_cores=limits.cpu_cores,
        cpu_source=_LIMIT_SOURCE_TO_PROTO[limits.cpu_source],
        memory_bytes=limits.memory_bytes,
        memory_source=_LIMIT_SOURCE_TO_PROTO[limits.memory_source],
    )


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_proto(record: JobRecord) -> trainer_pb2.Job:
    return trainer_pb2.Job(
        job_id=record.job_id,
        recipe=record.recipe,
        model=record.model,
        label=record.label,
        labels=record.labels,
        state=_STATE_TO_PROTO[record.state],
        reason=record.reason,
        pid=record.pid,
        create_time=_timestamp(record.create_time),
        start_time=_timestamp(record.start_time),
        end_time=_timestamp(record.end_time),
        exit_code=record.exit_code,
        resources=_resources(record.resources),
        gate=_gate(record.gate),
        progress=_progress(record.progress),
        model_version=record.model_version,
        attempts=record.attempts,
        corpus=record.corpus,
        hyperparameters=trainer_pb2.Hyperparameters(
            **{k: v for k, v in record.params.items() if k in _HYPERPARAMETERS}
        ),
        validation=validation_proto(record.validation),
        push=push_proto(record.push),
        sweep_id=record.sweep_id,
        no_push=record.no_push,
        deadline_seconds=int(record.deadline_s) if record.deadline_s else None,
        deadline_time=_timestamp(record.deadline_at),
        run_seconds=record.run_s,
        max_retries=record.max_retries,
        retries=record.retries,
        priority=_PRIORITY_TO_PROTO.get(record.priority, trainer_pb2.PRIORITY_NORMAL),
        placement=_placement(record.placement),
    )


def _placement(placement: Placement) -> trainer_pb2.Placement | None:
    """Where the job's attempt runs (a job that never ran: unset)."""
    if not placement.executor:
        return None
    return trainer_pb2.Placement(
        executor=placement.executor, node=placement.node, address=placement.address, handle=placement.handle
    )


def _resources(res: JobResources) -> trainer_pb2.ResourceUsage:
    return trainer_pb2.ResourceUsage(
        cpu_percent=res.cpu_percent,
        rss_bytes=res.rss_bytes,
        machine_cpu_percent=res.machine_cpu_percent,
        machine_memory_percent=res.machine_memory_percent,
        read_time=_timestamp(res.read_time),
    )


def _gate(decision: GateDecision | None) -> trainer_pb2.GateDecision | None:
    if decision is None:
        return None
    return trainer_pb2.GateDecision(
        action=_GATE_ACTION_TO_PROTO[decision.action],
        reason=decision.reason,
        cpu_percent=decision.cpu,
        memory_percent=decision.memory,
        decide_time=_timestamp(decision.decided_at),
    )


def _progress(progress: JobProgress) -> trainer_pb2.Progress:
    # Fields not reported stay unset (proto3 zero).
    # (A trial's per-epoch held-out values are shown by GetSweep, as its intermediate values.)
    skip = ("label_metrics", "held_out", "held_out_epoch")
    values = {k: v for k, v in progress.to_json().items() if v is not None and k not in skip}
    out = trainer_pb2.Progress(**values)
    for label, m in progress.label_metrics.items():
        out.label_metrics[label].CopyFrom(
            trainer_pb2.HeldOutMetrics(precision=m.precision, recall=m.recall, f1=m.f1)
        )
    return out


# -- sweeps ---------------------------------------------------------------------------

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
_PRUNER_FIELDS = [f.name for f in trainer_pb2.Pruner.DESCRIPTOR.fields if f.name != "kind"]
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
        validation=validation_request(spec.validation),
        idempotency_key=request.idempotency_key,
        priority=priority_from_proto(spec.priority, "spec.priority"),
        pruner=PrunerSpec(
            kind=_enum(
                _PRUNERS,
                spec.pruner.kind,
                "spec.pruner.kind",
                "NONE, MEDIAN, SUCCESSIVE_HALVING or HYPERBAND",
            ),
            **{name: getattr(spec.pruner, name) for name in _PRUNER_FIELDS},
        ),
        startup_trials=spec.startup_trials,
        labels=tuple(spec.labels),
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
        state=job_proto(job).state if job else trainer_pb2.JOB_STATE_UNSPECIFIED,
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
            priority=_PRIORITY_TO_PROTO.get(spec.priority, trainer_pb2.PRIORITY_NORMAL),
            pruner=trainer_pb2.Pruner(
                kind=_PRUNER_TO_PROTO[spec.pruner.kind],
                **{name: getattr(spec.pruner, name) for name in _PRUNER_FIELDS},
            ),
            startup_trials=spec.startup_trials,
            labels=list(spec.labels),
        ),
        state=_SWEEP_STATE_TO_PROTO[sweep.state],
        reason=sweep.reason,
        trials=[_trial_proto(t) for t in view.trials],
        best=_trial_proto(view.best) if view.best else None,
        final_job=job_proto(view.final_job) if view.final_job else None,
        create_time=_timestamp(sweep.create_time),
        end_time=_timestamp(sweep.end_time),
        trial_epochs=view.trial_epochs,
    )
