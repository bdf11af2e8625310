"""The ``trainer.v1.Trainer`` gRPC servicer: proto -> core -> proto, nothing else.

Domain errors raised by the core become status codes in
rpc.server.ErrorMappingInterceptor.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from rpc.errors import InvalidArgument
from trainer.cgroup_limits import LimitSource, LoadLimits
from trainer.domain import (
    GateAction,
    GateDecision,
    HeldOutMetrics,
    JobProgress,
    JobRecord,
    JobRequest,
    JobResources,
    JobState,
    PushDecision,
    ValidationPolicy,
    ValidationRequest,
)
from trainer.service import TrainerService
from trainer.sweep_protos import sweep_proto, sweep_spec, sweep_states
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

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


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, service: TrainerService) -> None:
        self._service = service

    async def Start(self, request, context):
        return trainer_pb2.StartResponse(job=job_proto(self._service.start_job(job_request(request))))

    async def Status(self, request, context):
        record, lines = self._service.status(request.job_id, request.log_lines)
        return trainer_pb2.StatusResponse(
            job=job_proto(record), log_tail=lines, load_limits=load_limits_proto(self._service.load_limits())
        )

    async def Kill(self, request, context):
        return trainer_pb2.KillResponse(job=job_proto(await self._service.kill(request.job_id)))

    async def List(self, request, context):
        jobs = self._service.list_jobs(
            job_states(request.states), request.model, request.limit, request.sweep_id
        )
        return trainer_pb2.ListResponse(jobs=[job_proto(j) for j in jobs])

    async def StartSweep(self, request, context):
        view = self._service.sweeps.start_sweep(sweep_spec(request))
        return trainer_pb2.StartSweepResponse(sweep=sweep_proto(view))

    async def GetSweep(self, request, context):
        return trainer_pb2.GetSweepResponse(sweep=sweep_proto(self._service.sweeps.view(request.sweep_id)))

    async def ListSweeps(self, request, context):
        views = self._service.sweeps.list_sweeps(sweep_states(request.states), request.limit)
        return trainer_pb2.ListSweepsResponse(sweeps=[sweep_proto(v) for v in views])

    async def KillSweep(self, request, context):
        view = await self._service.sweeps.kill(request.sweep_id)
        return trainer_pb2.KillSweepResponse(sweep=sweep_proto(view))

    async def Watch(self, request, context):
        async for event in self._service.watch(request.job_id):
            if event.job is not None:
                yield trainer_pb2.WatchResponse(job=job_proto(event.job))
            elif event.line is not None:
                yield trainer_pb2.WatchResponse(log_line=event.line)


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
    values = {k: v for k, v in progress.to_json().items() if v is not None and k != "label_metrics"}
    out = trainer_pb2.Progress(**values)
    for label, m in progress.label_metrics.items():
        out.label_metrics[label].CopyFrom(
            trainer_pb2.HeldOutMetrics(precision=m.precision, recall=m.recall, f1=m.f1)
        )
    return out
