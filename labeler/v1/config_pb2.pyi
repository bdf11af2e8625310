from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelerConfig(_message.Message):
    __slots__ = ("labels", "default_target", "model_root", "limits", "coalescing", "version_poll_interval_ms", "model_server_tls", "overload", "prediction_cache", "tracing", "canaries", "shadows", "bundles")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TARGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROOT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    COALESCING_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SERVER_TLS_FIELD_NUMBER: _ClassVar[int]
    OVERLOAD_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_CACHE_FIELD_NUMBER: _ClassVar[int]
    TRACING_FIELD_NUMBER: _ClassVar[int]
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelConfig]
    default_target: str
    model_root: str
    limits: RequestLimits
    coalescing: CoalescingConfig
    version_poll_interval_ms: int
    model_server_tls: TlsClientConfig
    overload: OverloadConfig
    prediction_cache: PredictionCacheConfig
    tracing: TracingConfig
    canaries: _containers.RepeatedCompositeFieldContainer[CanaryConfig]
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowConfig]
    bundles: _containers.RepeatedCompositeFieldContainer[BundleConfig]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelConfig, _Mapping]]] = ..., default_target: _Optional[str] = ..., model_root: _Optional[str] = ..., limits: _Optional[_Union[RequestLimits, _Mapping]] = ..., coalescing: _Optional[_Union[CoalescingConfig, _Mapping]] = ..., version_poll_interval_ms: _Optional[int] = ..., model_server_tls: _Optional[_Union[TlsClientConfig, _Mapping]] = ..., overload: _Optional[_Union[OverloadConfig, _Mapping]] = ..., prediction_cache: _Optional[_Union[PredictionCacheConfig, _Mapping]] = ..., tracing: _Optional[_Union[TracingConfig, _Mapping]] = ..., canaries: _Optional[_Iterable[_Union[CanaryConfig, _Mapping]]] = ..., shadows: _Optional[_Iterable[_Union[ShadowConfig, _Mapping]]] = ..., bundles: _Optional[_Iterable[_Union[BundleConfig, _Mapping]]] = ...) -> None: ...

class TracingConfig(_message.Message):
    __slots__ = ("enabled", "otlp_endpoint", "sample_ratio", "service_name")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    OTLP_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    otlp_endpoint: str
    sample_ratio: float
    service_name: str
    def __init__(self, enabled: _Optional[bool] = ..., otlp_endpoint: _Optional[str] = ..., sample_ratio: _Optional[float] = ..., service_name: _Optional[str] = ...) -> None: ...

class CanaryConfig(_message.Message):
    __slots__ = ("label", "version", "version_label", "percent")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    label: str
    version: int
    version_label: str
    percent: float
    def __init__(self, label: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ..., percent: _Optional[float] = ...) -> None: ...

class ShadowConfig(_message.Message):
    __slots__ = ("label", "version", "version_label", "sample_percent", "max_in_flight")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    label: str
    version: int
    version_label: str
    sample_percent: float
    max_in_flight: int
    def __init__(self, label: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ..., sample_percent: _Optional[float] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class OverloadConfig(_message.Message):
    __slots__ = ("disabled", "max_classify_in_flight", "max_classify_queued", "max_predicts_per_target", "queue_deadline_share_percent", "max_queue_wait_ms", "excess_calls", "congested_queue_wait_ms", "congestion_interval_ms")
    class ExcessCalls(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EXCESS_CALLS_UNSPECIFIED: _ClassVar[OverloadConfig.ExcessCalls]
        EXCESS_CALLS_HOLD: _ClassVar[OverloadConfig.ExcessCalls]
        EXCESS_CALLS_REFUSE: _ClassVar[OverloadConfig.ExcessCalls]
    EXCESS_CALLS_UNSPECIFIED: OverloadConfig.ExcessCalls
    EXCESS_CALLS_HOLD: OverloadConfig.ExcessCalls
    EXCESS_CALLS_REFUSE: OverloadConfig.ExcessCalls
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_CLASSIFY_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CLASSIFY_QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_PREDICTS_PER_TARGET_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEADLINE_SHARE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    EXCESS_CALLS_FIELD_NUMBER: _ClassVar[int]
    CONGESTED_QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    CONGESTION_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    max_classify_in_flight: int
    max_classify_queued: int
    max_predicts_per_target: int
    queue_deadline_share_percent: int
    max_queue_wait_ms: int
    excess_calls: OverloadConfig.ExcessCalls
    congested_queue_wait_ms: int
    congestion_interval_ms: int
    def __init__(self, disabled: _Optional[bool] = ..., max_classify_in_flight: _Optional[int] = ..., max_classify_queued: _Optional[int] = ..., max_predicts_per_target: _Optional[int] = ..., queue_deadline_share_percent: _Optional[int] = ..., max_queue_wait_ms: _Optional[int] = ..., excess_calls: _Optional[_Union[OverloadConfig.ExcessCalls, str]] = ..., congested_queue_wait_ms: _Optional[int] = ..., congestion_interval_ms: _Optional[int] = ...) -> None: ...

class PredictionCacheConfig(_message.Message):
    __slots__ = ("disabled", "max_bytes")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    max_bytes: int
    def __init__(self, disabled: _Optional[bool] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class BundleConfig(_message.Message):
    __slots__ = ("model", "target", "signature_name", "input_name", "output_name", "threshold", "label_thresholds", "version", "version_label", "timeout_ms")
    class LabelThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LABEL_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    target: str
    signature_name: str
    input_name: str
    output_name: str
    threshold: float
    label_thresholds: _containers.ScalarMap[str, float]
    version: int
    version_label: str
    timeout_ms: int
    def __init__(self, model: _Optional[str] = ..., target: _Optional[str] = ..., signature_name: _Optional[str] = ..., input_name: _Optional[str] = ..., output_name: _Optional[str] = ..., threshold: _Optional[float] = ..., label_thresholds: _Optional[_Mapping[str, float]] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class TlsClientConfig(_message.Message):
    __slots__ = ("ca_file", "cert_file", "key_file", "server_name")
    CA_FILE_FIELD_NUMBER: _ClassVar[int]
    CERT_FILE_FIELD_NUMBER: _ClassVar[int]
    KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ca_file: str
    cert_file: str
    key_file: str
    server_name: str
    def __init__(self, ca_file: _Optional[str] = ..., cert_file: _Optional[str] = ..., key_file: _Optional[str] = ..., server_name: _Optional[str] = ...) -> None: ...

class LabelConfig(_message.Message):
    __slots__ = ("label", "model", "target", "signature_name", "input_name", "output_name", "threshold", "version", "version_label", "timeout_ms")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    label: str
    model: str
    target: str
    signature_name: str
    input_name: str
    output_name: str
    threshold: float
    version: int
    version_label: str
    timeout_ms: int
    def __init__(self, label: _Optional[str] = ..., model: _Optional[str] = ..., target: _Optional[str] = ..., signature_name: _Optional[str] = ..., input_name: _Optional[str] = ..., output_name: _Optional[str] = ..., threshold: _Optional[float] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RequestLimits(_message.Message):
    __slots__ = ("max_words", "max_word_bytes", "max_batch_documents")
    MAX_WORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    max_words: int
    max_word_bytes: int
    max_batch_documents: int
    def __init__(self, max_words: _Optional[int] = ..., max_word_bytes: _Optional[int] = ..., max_batch_documents: _Optional[int] = ...) -> None: ...

class CoalescingConfig(_message.Message):
    __slots__ = ("enabled", "max_delay_us", "max_batch_documents")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    max_delay_us: int
    max_batch_documents: int
    def __init__(self, enabled: _Optional[bool] = ..., max_delay_us: _Optional[int] = ..., max_batch_documents: _Optional[int] = ...) -> None: ...
