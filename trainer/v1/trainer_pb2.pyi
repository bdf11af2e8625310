import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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

class GateAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_ACTION_UNSPECIFIED: _ClassVar[GateAction]
    GATE_ACTION_ADMIT: _ClassVar[GateAction]
    GATE_ACTION_WAIT: _ClassVar[GateAction]
    GATE_ACTION_KILL: _ClassVar[GateAction]
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
GATE_ACTION_UNSPECIFIED: GateAction
GATE_ACTION_ADMIT: GateAction
GATE_ACTION_WAIT: GateAction
GATE_ACTION_KILL: GateAction

class StartRequest(_message.Message):
    __slots__ = ("recipe", "model", "label", "corpus", "hyperparameters", "idempotency_key", "validation")
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    recipe: str
    model: str
    label: str
    corpus: str
    hyperparameters: Hyperparameters
    idempotency_key: str
    validation: ValidationPolicy
    def __init__(self, recipe: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., corpus: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., validation: _Optional[_Union[ValidationPolicy, _Mapping]] = ...) -> None: ...

class ValidationPolicy(_message.Message):
    __slots__ = ("floors", "max_regression", "regression_metric", "skip", "held_out_corpus")
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
    floors: _containers.ScalarMap[str, float]
    max_regression: float
    regression_metric: str
    skip: bool
    held_out_corpus: str
    def __init__(self, floors: _Optional[_Mapping[str, float]] = ..., max_regression: _Optional[float] = ..., regression_metric: _Optional[str] = ..., skip: _Optional[bool] = ..., held_out_corpus: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("states", "model", "limit")
    STATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    model: str
    limit: int
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("job_id", "recipe", "model", "label", "state", "reason", "pid", "create_time", "start_time", "end_time", "exit_code", "resources", "gate", "progress", "model_version", "attempts", "corpus", "hyperparameters", "validation", "push")
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
    def __init__(self, job_id: _Optional[str] = ..., recipe: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., pid: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., resources: _Optional[_Union[ResourceUsage, _Mapping]] = ..., gate: _Optional[_Union[GateDecision, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., model_version: _Optional[int] = ..., attempts: _Optional[int] = ..., corpus: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., validation: _Optional[_Union[ValidationPolicy, _Mapping]] = ..., push: _Optional[_Union[PushDecision, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy", "precision", "recall", "f1")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    precision: float
    recall: float
    f1: float
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ...) -> None: ...
