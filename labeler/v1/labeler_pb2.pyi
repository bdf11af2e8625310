from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_STATE_UNSPECIFIED: _ClassVar[LabelState]
    LABEL_STATE_LOADING: _ClassVar[LabelState]
    LABEL_STATE_AVAILABLE: _ClassVar[LabelState]
    LABEL_STATE_UNAVAILABLE: _ClassVar[LabelState]
LABEL_STATE_UNSPECIFIED: LabelState
LABEL_STATE_LOADING: LabelState
LABEL_STATE_AVAILABLE: LabelState
LABEL_STATE_UNAVAILABLE: LabelState

class ClassifyRequest(_message.Message):
    __slots__ = ("words", "labels", "threshold")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    def __init__(self, words: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("labels", "failures")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    failures: _containers.RepeatedCompositeFieldContainer[LabelFailure]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[LabelFailure, _Mapping]]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("words",)
    WORDS_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, words: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("documents", "labels", "threshold")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    labels: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("results", "failures")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DocumentLabels]
    failures: _containers.RepeatedCompositeFieldContainer[LabelFailure]
    def __init__(self, results: _Optional[_Iterable[_Union[DocumentLabels, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[LabelFailure, _Mapping]]] = ...) -> None: ...

class DocumentLabels(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "probability", "model", "model_version")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    model: str
    model_version: int
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class LabelFailure(_message.Message):
    __slots__ = ("label", "model", "code", "code_name", "message")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    label: str
    model: str
    code: int
    code_name: str
    message: str
    def __init__(self, label: _Optional[str] = ..., model: _Optional[str] = ..., code: _Optional[int] = ..., code_name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListLabelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLabelsResponse(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelInfo]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelInfo, _Mapping]]] = ...) -> None: ...

class LabelInfo(_message.Message):
    __slots__ = ("label", "model", "target", "model_version", "state", "threshold", "message", "canary", "shadow", "column")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    label: str
    model: str
    target: str
    model_version: int
    state: LabelState
    threshold: float
    message: str
    canary: CandidateInfo
    shadow: CandidateInfo
    column: int
    def __init__(self, label: _Optional[str] = ..., model: _Optional[str] = ..., target: _Optional[str] = ..., model_version: _Optional[int] = ..., state: _Optional[_Union[LabelState, str]] = ..., threshold: _Optional[float] = ..., message: _Optional[str] = ..., canary: _Optional[_Union[CandidateInfo, _Mapping]] = ..., shadow: _Optional[_Union[CandidateInfo, _Mapping]] = ..., column: _Optional[int] = ...) -> None: ...

class CandidateInfo(_message.Message):
    __slots__ = ("model_version", "percent", "state", "message")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    percent: float
    state: LabelState
    message: str
    def __init__(self, model_version: _Optional[int] = ..., percent: _Optional[float] = ..., state: _Optional[_Union[LabelState, str]] = ..., message: _Optional[str] = ...) -> None: ...
