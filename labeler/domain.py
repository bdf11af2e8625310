"""Plain types the Labeler's parts share: what a label is bound to now, what a
model call returned or why it failed, and what a request gets back.

No gRPC here: the servicer turns these into protos, the TF Serving client into
calls, and the core (labeler.service) only ever sees these.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from labeler.config import LabelSpec
from modelspec.features import FeaturePipeline


class LabelState(enum.Enum):
    LOADING = "LOADING"  # no version served yet, or its features are loading
    AVAILABLE = "AVAILABLE"  # a version's features are loaded and the server serves it
    UNAVAILABLE = "UNAVAILABLE"  # the model server cannot be reached or the version cannot be loaded


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One model version's features, loaded once from its version directory."""

    version: int
    pipeline: FeaturePipeline
    metadata: dict
    # A bundle version's labels in output column order (modelspec.labels);
    # empty for a single-label model.
    columns: tuple[str, ...] = ()
    # label -> column of ``columns``, built once per version.
    column_index: dict[str, int] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class Binding:
    """A label as a request sees it: its config, the version in use (whose
    features and model always go together) and its serving state."""

    spec: LabelSpec
    loaded: LoadedVersion | None
    state: LabelState
    message: str = ""
    # Rollout fallback (issue 17): the version used before ``loaded``, kept
    # with its features while some replica may not serve ``loaded`` yet, and
    # how many polls in a row suggested otherwise (labeler.registry).
    previous: LoadedVersion | None = None
    polls_behind: int = 0
    polls_settled: int = 0
    # The model server answered NOT_FOUND for the version wanted (it is not served).
    not_served: bool = False


class ModelCallError(Exception):
    """A model server call failed; ``code_name`` is a gRPC status code name."""

    def __init__(self, code_name: str, message: str) -> None:
        super().__init__(f"{code_name}: {message}")
        self.code_name = code_name
        self.message = message


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One model's probabilities for a batch, and the version that answered."""

    probabilities: np.ndarray  # float [batch]; a bundle's: [batch, L]
    version: int
    # Per-document versions when a canary split the batch between versions.
    versions: tuple[int, ...] | None = None
    # A bundle's answer: the labels of its columns, from the version that answered.
    columns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float
    model: str
    model_version: int


@dataclasses.dataclass(frozen=True)
class LabelFailure:
    label: str
    model: str
    code_name: str
    message: str


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """results[i] holds the labels of documents[i], highest probability first."""

    results: list[list[LabelScore]]
    failures: list[LabelFailure]


@dataclasses.dataclass(frozen=True)
class CandidateInfo:
    """A candidate version under canary or shadow (labeler.rollout)."""

    model_version: int  # 0: none loaded
    percent: float
    state: LabelState
    message: str


@dataclasses.dataclass(frozen=True)
class LabelInfo:
    label: str
    model: str
    target: str
    model_version: int
    state: LabelState
    threshold: float
    message: str
    canary: CandidateInfo | None = None
    shadow: CandidateInfo | None = None
    # A bundle label's column in that version's output; None for a single-label model.
    column: int | None = None
