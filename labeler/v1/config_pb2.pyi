from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelerConfig(_message.Message):
    __slots__ = ("labels", "default_target", "model_root", "limits", "coalescing", "version_poll_interval_ms", "model_server_tls", "bundles")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TARGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROOT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    COALESCING_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SERVER_TLS_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelConfig]
    default_target: str
    model_root: str
    limits: RequestLimits
    coalescing: CoalescingConfig
    version_poll_interval_ms: int
    model_server_tls: TlsClientConfig
    bundles: _containers.RepeatedCompositeFieldContainer[BundleConfig]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelConfig, _Mapping]]] = ..., default_target: _Optional[str] = ..., model_root: _Optional[str] = ..., limits: _Optional[_Union[RequestLimits, _Mapping]] = ..., coalescing: _Optional[_Union[CoalescingConfig, _Mapping]] = ..., version_poll_interval_ms: _Optional[int] = ..., model_server_tls: _Optional[_Union[TlsClientConfig, _Mapping]] = ..., bundles: _Optional[_Iterable[_Union[BundleConfig, _Mapping]]] = ...) -> None: ...

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
