import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]

class LoadLimitSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_LIMIT_SOURCE_UNSPECIFIED: _ClassVar[LoadLimitSource]
    LOAD_LIMIT_SOURCE_NODE: _ClassVar[LoadLimitSource]
    LOAD_LIMIT_SOURCE_CGROUP_V1: _ClassVar[LoadLimitSource]
    LOAD_LIMIT_SOURCE_CGROUP_V2: _ClassVar[LoadLimitSource]

class PushOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUSH_OUTCOME_UNSPECIFIED: _ClassVar[PushOutcome]
    PUSH_OUTCOME_PUSHED: _ClassVar[PushOutcome]
    PUSH_OUTCOME_REJECTED: _ClassVar[PushOutcome]
    PUSH_OUTCOME_PUSHED_UNVALIDATED: _ClassVar[PushOutcome]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_KILLED: _ClassVar[JobState]
    JOB_STATE_STOPPING: _ClassVar[JobState]

class GateAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_ACTION_UNSPECIFIED: _ClassVar[GateAction]
    GATE_ACTION_ADMIT: _ClassVar[GateAction]
    GATE_ACTION_WAIT: _ClassVar[GateAction]
    GATE_ACTION_KILL: _ClassVar[GateAction]

class PrunerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRUNER_KIND_UNSPECIFIED: _ClassVar[PrunerKind]
    PRUNER_KIND_NONE: _ClassVar[PrunerKind]
    PRUNER_KIND_MEDIAN: _ClassVar[PrunerKind]
    PRUNER_KIND_SUCCESSIVE_HALVING: _ClassVar[PrunerKind]
    PRUNER_KIND_HYPERBAND: _ClassVar[PrunerKind]

class Scale(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALE_UNSPECIFIED: _ClassVar[Scale]
    SCALE_LINEAR: _ClassVar[Scale]
    SCALE_LOG: _ClassVar[Scale]

class SearchAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_ALGORITHM_UNSPECIFIED: _ClassVar[SearchAlgorithm]
    SEARCH_ALGORITHM_GRID: _ClassVar[SearchAlgorithm]
    SEARCH_ALGORITHM_RANDOM: _ClassVar[SearchAlgorithm]
    SEARCH_ALGORITHM_TPE: _ClassVar[SearchAlgorithm]

class MetricDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_DIRECTION_UNSPECIFIED: _ClassVar[MetricDirection]
    METRIC_DIRECTION_MAXIMIZE: _ClassVar[MetricDirection]
    METRIC_DIRECTION_MINIMIZE: _ClassVar[MetricDirection]

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_WAITING: _ClassVar[TrialState]
    TRIAL_STATE_RUNNING: _ClassVar[TrialState]
    TRIAL_STATE_COMPLETE: _ClassVar[TrialState]
    TRIAL_STATE_PRUNED: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]

class SweepState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SWEEP_STATE_UNSPECIFIED: _ClassVar[SweepState]
    SWEEP_STATE_RUNNING: _ClassVar[SweepState]
    SWEEP_STATE_PUSHING: _ClassVar[SweepState]
    SWEEP_STATE_SUCCEEDED: _ClassVar[SweepState]
    SWEEP_STATE_FAILED: _ClassVar[SweepState]
    SWEEP_STATE_KILLED: _ClassVar[SweepState]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
LOAD_LIMIT_SOURCE_UNSPECIFIED: LoadLimitSource
LOAD_LIMIT_SOURCE_NODE: LoadLimitSource
LOAD_LIMIT_SOURCE_CGROUP_V1: LoadLimitSource
LOAD_LIMIT_SOURCE_CGROUP_V2: LoadLimitSource
PUSH_OUTCOME_UNSPECIFIED: PushOutcome
PUSH_OUTCOME_PUSHED: PushOutcome
PUSH_OUTCOME_REJECTED: PushOutcome
PUSH_OUTCOME_PUSHED_UNVALIDATED: PushOutcome
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_KILLED: JobState
JOB_STATE_STOPPING: JobState
GATE_ACTION_UNSPECIFIED: GateAction
GATE_ACTION_ADMIT: GateAction
GATE_ACTION_WAIT: GateAction
GATE_ACTION_KILL: GateAction
PRUNER_KIND_UNSPECIFIED: PrunerKind
PRUNER_KIND_NONE: PrunerKind
PRUNER_KIND_MEDIAN: PrunerKind
PRUNER_KIND_SUCCESSIVE_HALVING: PrunerKind
PRUNER_KIND_HYPERBAND: PrunerKind
SCALE_UNSPECIFIED: Scale
SCALE_LINEAR: Scale
SCALE_LOG: Scale
SEARCH_ALGORITHM_UNSPECIFIED: SearchAlgorithm
SEARCH_ALGORITHM_GRID: SearchAlgorithm
SEARCH_ALGORITHM_RANDOM: SearchAlgorithm
SEARCH_ALGORITHM_TPE: SearchAlgorithm
METRIC_DIRECTION_UNSPECIFIED: MetricDirection
METRIC_DIRECTION_MAXIMIZE: MetricDirection
METRIC_DIRECTION_MINIMIZE: MetricDirection
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_WAITING: TrialState
TRIAL_STATE_RUNNING: TrialState
TRIAL_STATE_COMPLETE: TrialState
TRIAL_STATE_PRUNED: TrialState
TRIAL_STATE_FAILED: TrialState
SWEEP_STATE_UNSPECIFIED: SweepState
SWEEP_STATE_RUNNING: SweepState
SWEEP_STATE_PUSHING: SweepState
SWEEP_STATE_SUCCEEDED: SweepState
SWEEP_STATE_FAILED: SweepState
SWEEP_STATE_KILLED: SweepState

class StartRequest(_message.Message):
    __slots__ = ("recipe", "model", "label", "corpus", "hyperparameters", "idempotency_key", "validation", "deadline_seconds", "deadline_time", "max_retries", "priority", "labels")
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    recipe: str
    model: str
    label: str
    corpus: str
    hyperparameters: Hyperparameters
    idempotency_key: str
    validation: ValidationPolicy
    deadline_seconds: int
    deadline_time: _timestamp_pb2.Timestamp
    max_retries: int
    priority: Priority
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, recipe: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., corpus: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., validation: _Optional[_Union[ValidationPolicy, _Mapping]] = ..., deadline_seconds: _Optional[int] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_retries: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidationPolicy(_message.Message):
    __slots__ = ("floors", "max_regression", "regression_metric", "skip", "held_out_corpus", "max_background_labeled")
    class FloorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FLOORS_FIELD_NUMBER: _ClassVar[int]
    MAX_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_METRIC_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_CORPUS_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKGROUND_LABELED_FIELD_NUMBER: _ClassVar[int]
    floors: _containers.ScalarMap[str, float]
    max_regression: float
    regression_metric: str
    skip: bool
    held_out_corpus: str
    max_background_labeled: float
    def __init__(self, floors: _Optional[_Mapping[str, float]] = ..., max_regression: _Optional[float] = ..., regression_metric: _Optional[str] = ..., skip: _Optional[bool] = ..., held_out_corpus: _Optional[str] = ..., max_background_labeled: _Optional[float] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "batch_size", "embedding_dim", "cutlen", "ngram_range", "maxlen", "max_vocab", "min_ngram_count", "threads")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    CUTLEN_FIELD_NUMBER: _ClassVar[int]
    NGRAM_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAXLEN_FIELD_NUMBER: _ClassVar[int]
    MAX_VOCAB_FIELD_NUMBER: _ClassVar[int]
    MIN_NGRAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    embedding_dim: int
    cutlen: int
    ngram_range: int
    maxlen: int
    max_vocab: int
    min_ngram_count: int
    threads: int
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., cutlen: _Optional[int] = ..., ngram_range: _Optional[int] = ..., maxlen: _Optional[int] = ..., max_vocab: _Optional[int] = ..., min_ngram_count: _Optional[int] = ..., threads: _Optional[int] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("job_id", "log_lines")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_LINES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    log_lines: int
    def __init__(self, job_id: _Optional[str] = ..., log_lines: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("job", "log_tail", "load_limits")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    LOAD_LIMITS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    log_tail: _containers.RepeatedScalarFieldContainer[str]
    load_limits: LoadLimits
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., log_tail: _Optional[_Iterable[str]] = ..., load_limits: _Optional[_Union[LoadLimits, _Mapping]] = ...) -> None: ...

class LoadLimits(_message.Message):
    __slots__ = ("cpu_cores", "cpu_source", "memory_bytes", "memory_source")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: float
    cpu_source: LoadLimitSource
    memory_bytes: int
    memory_source: LoadLimitSource
    def __init__(self, cpu_cores: _Optional[float] = ..., cpu_source: _Optional[_Union[LoadLimitSource, str]] = ..., memory_bytes: _Optional[int] = ..., memory_source: _Optional[_Union[LoadLimitSource, str]] = ...) -> None: ...

class KillRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class KillResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("states", "model", "limit", "sweep_id")
    STATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    model: str
    limit: int
    sweep_id: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., model: _Optional[str] = ..., limit: _Optional[int] = ..., sweep_id: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("job", "log_line")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LOG_LINE_FIELD_NUMBER: _ClassVar[int]
    job: Job
    log_line: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., log_line: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "recipe", "model", "label", "state", "reason", "pid", "create_time", "start_time", "end_time", "exit_code", "resources", "gate", "progress", "model_version", "attempts", "corpus", "hyperparameters", "validation", "push", "sweep_id", "no_push", "deadline_seconds", "deadline_time", "run_seconds", "max_retries", "retries", "priority", "labels", "placement")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    NO_PUSH_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    recipe: str
    model: str
    label: str
    state: JobState
    reason: str
    pid: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    exit_code: int
    resources: ResourceUsage
    gate: GateDecision
    progress: Progress
    model_version: int
    attempts: int
    corpus: str
    hyperparameters: Hyperparameters
    validation: ValidationPolicy
    push: PushDecision
    sweep_id: str
    no_push: bool
    deadline_seconds: int
    deadline_time: _timestamp_pb2.Timestamp
    run_seconds: float
    max_retries: int
    retries: int
    priority: Priority
    labels: _containers.RepeatedScalarFieldContainer[str]
    placement: Placement
    def __init__(self, job_id: _Optional[str] = ..., recipe: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., pid: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., resources: _Optional[_Union[ResourceUsage, _Mapping]] = ..., gate: _Optional[_Union[GateDecision, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., model_version: _Optional[int] = ..., attempts: _Optional[int] = ..., corpus: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., validation: _Optional[_Union[ValidationPolicy, _Mapping]] = ..., push: _Optional[_Union[PushDecision, _Mapping]] = ..., sweep_id: _Optional[str] = ..., no_push: _Optional[bool] = ..., deadline_seconds: _Optional[int] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_seconds: _Optional[float] = ..., max_retries: _Optional[int] = ..., retries: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., labels: _Optional[_Iterable[str]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("executor", "node", "address", "handle")
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    executor: str
    node: str
    address: str
    handle: str
    def __init__(self, executor: _Optional[str] = ..., node: _Optional[str] = ..., address: _Optional[str] = ..., handle: _Optional[str] = ...) -> None: ...

class PushDecision(_message.Message):
    __slots__ = ("outcome", "reason", "candidate_version", "candidate_metrics", "served_version", "served_metrics", "failures", "rejected_path")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_METRICS_FIELD_NUMBER: _ClassVar[int]
    SERVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_METRICS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_PATH_FIELD_NUMBER: _ClassVar[int]
    outcome: PushOutcome
    reason: str
    candidate_version: int
    candidate_metrics: HeldOutMetrics
    served_version: int
    served_metrics: HeldOutMetrics
    failures: _containers.RepeatedScalarFieldContainer[str]
    rejected_path: str
    def __init__(self, outcome: _Optional[_Union[PushOutcome, str]] = ..., reason: _Optional[str] = ..., candidate_version: _Optional[int] = ..., candidate_metrics: _Optional[_Union[HeldOutMetrics, _Mapping]] = ..., served_version: _Optional[int] = ..., served_metrics: _Optional[_Union[HeldOutMetrics, _Mapping]] = ..., failures: _Optional[_Iterable[str]] = ..., rejected_path: _Optional[str] = ...) -> None: ...

class HeldOutMetrics(_message.Message):
    __slots__ = ("precision", "recall", "f1", "documents")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    f1: float
    documents: int
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., documents: _Optional[int] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "rss_bytes", "machine_cpu_percent", "machine_memory_percent", "read_time")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MACHINE_CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MACHINE_MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    rss_bytes: int
    machine_cpu_percent: float
    machine_memory_percent: float
    read_time: _timestamp_pb2.Timestamp
    def __init__(self, cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., machine_cpu_percent: _Optional[float] = ..., machine_memory_percent: _Optional[float] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GateDecision(_message.Message):
    __slots__ = ("action", "reason", "cpu_percent", "memory_percent", "decide_time")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    action: GateAction
    reason: str
    cpu_percent: float
    memory_percent: float
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, action: _Optional[_Union[GateAction, str]] = ..., reason: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy", "precision", "recall", "f1", "label_metrics")
    class LabelMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HeldOutMetrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HeldOutMetrics, _Mapping]] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    LABEL_METRICS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    precision: float
    recall: float
    f1: float
    label_metrics: _containers.MessageMap[str, HeldOutMetrics]
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., label_metrics: _Optional[_Mapping[str, HeldOutMetrics]] = ...) -> None: ...

class StartSweepRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: SweepSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[SweepSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SweepSpec(_message.Message):
    __slots__ = ("recipe", "model", "label", "corpus", "base_hyperparameters", "search_space", "algorithm", "seed", "trial_budget", "max_parallel_trials", "metric", "direction", "validation", "priority", "pruner", "startup_trials", "labels")
    class SearchSpaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SearchSpace
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SearchSpace, _Mapping]] = ...) -> None: ...
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    BASE_HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_TRIALS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TRIALS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    recipe: str
    model: str
    label: str
    corpus: str
    base_hyperparameters: Hyperparameters
    search_space: _containers.MessageMap[str, SearchSpace]
    algorithm: SearchAlgorithm
    seed: int
    trial_budget: int
    max_parallel_trials: int
    metric: str
    direction: MetricDirection
    validation: ValidationPolicy
    priority: Priority
    pruner: Pruner
    startup_trials: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, recipe: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., corpus: _Optional[str] = ..., base_hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., search_space: _Optional[_Mapping[str, SearchSpace]] = ..., algorithm: _Optional[_Union[SearchAlgorithm, str]] = ..., seed: _Optional[int] = ..., trial_budget: _Optional[int] = ..., max_parallel_trials: _Optional[int] = ..., metric: _Optional[str] = ..., direction: _Optional[_Union[MetricDirection, str]] = ..., validation: _Optional[_Union[ValidationPolicy, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., pruner: _Optional[_Union[Pruner, _Mapping]] = ..., startup_trials: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Pruner(_message.Message):
    __slots__ = ("kind", "startup_trials", "warmup_epochs", "min_resource", "reduction_factor", "min_early_stopping_rate", "max_resource")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TRIALS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_EARLY_STOPPING_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    kind: PrunerKind
    startup_trials: int
    warmup_epochs: int
    min_resource: int
    reduction_factor: int
    min_early_stopping_rate: int
    max_resource: int
    def __init__(self, kind: _Optional[_Union[PrunerKind, str]] = ..., startup_trials: _Optional[int] = ..., warmup_epochs: _Optional[int] = ..., min_resource: _Optional[int] = ..., reduction_factor: _Optional[int] = ..., min_early_stopping_rate: _Optional[int] = ..., max_resource: _Optional[int] = ...) -> None: ...

class SearchSpace(_message.Message):
    __slots__ = ("values", "range")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    values: ValueList
    range: Range
    def __init__(self, values: _Optional[_Union[ValueList, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("min", "max", "scale", "grid_points")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    GRID_POINTS_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    scale: Scale
    grid_points: int
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., scale: _Optional[_Union[Scale, str]] = ..., grid_points: _Optional[int] = ...) -> None: ...

class StartSweepResponse(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: Sweep
    def __init__(self, sweep: _Optional[_Union[Sweep, _Mapping]] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class GetSweepResponse(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: Sweep
    def __init__(self, sweep: _Optional[_Union[Sweep, _Mapping]] = ...) -> None: ...

class ListSweepsRequest(_message.Message):
    __slots__ = ("states", "limit", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[SweepState]
    limit: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[SweepState, str]]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSweepsResponse(_message.Message):
    __slots__ = ("sweeps", "next_page_token")
    SWEEPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sweeps: _containers.RepeatedCompositeFieldContainer[Sweep]
    next_page_token: str
    def __init__(self, sweeps: _Optional[_Iterable[_Union[Sweep, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class KillSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class KillSweepResponse(_message.Message):
    __slots__ = ("sweep",)
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    sweep: Sweep
    def __init__(self, sweep: _Optional[_Union[Sweep, _Mapping]] = ...) -> None: ...

class Sweep(_message.Message):
    __slots__ = ("sweep_id", "spec", "state", "reason", "trials", "best", "final_job", "create_time", "end_time", "trial_epochs")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    FINAL_JOB_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    spec: SweepSpec
    state: SweepState
    reason: str
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    best: Trial
    final_job: Job
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    trial_epochs: int
    def __init__(self, sweep_id: _Optional[str] = ..., spec: _Optional[_Union[SweepSpec, _Mapping]] = ..., state: _Optional[_Union[SweepState, str]] = ..., reason: _Optional[str] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., best: _Optional[_Union[Trial, _Mapping]] = ..., final_job: _Optional[_Union[Job, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trial_epochs: _Optional[int] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("index", "hyperparameters", "job_id", "state", "reason", "metric", "trial_state", "intermediate_values")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TRIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    index: int
    hyperparameters: Hyperparameters
    job_id: str
    state: JobState
    reason: str
    metric: float
    trial_state: TrialState
    intermediate_values: _containers.RepeatedCompositeFieldContainer[IntermediateValue]
    def __init__(self, index: _Optional[int] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., metric: _Optional[float] = ..., trial_state: _Optional[_Union[TrialState, str]] = ..., intermediate_values: _Optional[_Iterable[_Union[IntermediateValue, _Mapping]]] = ...) -> None: ...

class IntermediateValue(_message.Message):
    __slots__ = ("epoch", "value")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    value: float
    def __init__(self, epoch: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
