"""The ``labeler.v1.Labeler`` gRPC servicer: proto -> core -> proto, nothing else.

Domain errors raised by the core become status codes in
rpc.server.ErrorMappingInterceptor.
"""

from __future__ import annotations

from labeler.domain import CandidateInfo, LabelFailure, LabelInfo, LabelScore, LabelState
from labeler.service import LabelerService
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc import errors

_STATE = {
    LabelState.LOADING: labeler_pb2.LABEL_STATE_LOADING,
    LabelState.AVAILABLE: labeler_pb2.LABEL_STATE_AVAILABLE,
    LabelState.UNAVAILABLE: labeler_pb2.LABEL_STATE_UNAVAILABLE,
}


class LabelerServicer(labeler_pb2_grpc.LabelerServicer):
    def __init__(self, service: LabelerService) -> None:
        self._service = service

    async def Classify(self, request, context):
        labels, failures = await self._service.classify(
            request.words, request.labels, _threshold(request), context.time_remaining()
        )
        return labeler_pb2.ClassifyResponse(labels=_scores(labels), failures=_failures(failures))

    async def ClassifyBatch(self, request, context):
        result = await self._service.classify_batch(
            [d.words for d in request.documents],
            request.labels,
            _threshold(request),
            context.time_remaining(),
        )
        return labeler_pb2.ClassifyBatchResponse(
            results=[labeler_pb2.DocumentLabels(labels=_scores(r)) for r in result.results],
            failures=_failures(result.failures),
        )

    async def ListLabels(self, request, context):
        return labeler_pb2.ListLabelsResponse(labels=[_info(i) for i in self._service.list_labels()])


def _threshold(request) -> float | None:
    return request.threshold if request.HasField("threshold") else None


def _scores(scores: list[LabelScore]) -> list[labeler_pb2.LabelScore]:
    return [
        labeler_pb2.LabelScore(
            label=s.label, probability=s.probability, model=s.model, model_version=s.model_version
        )
        for s in scores
    ]


def _failures(failures: list[LabelFailure]) -> list[labeler_pb2.LabelFailure]:
    return [
        labeler_pb2.LabelFailure(
            label=f.label,
            model=f.model,
            code=errors.status_number(f.code_name),
            code_name=f.code_name,
            message=f.message,
        )
        for f in failures
    ]


def _info(info: LabelInfo) -> labeler_pb2.LabelInfo:
    return labeler_pb2.LabelInfo(
        label=info.label,
        model=info.model,
        target=info.target,
        model_version=info.model_version,
        state=_STATE[info.state],
        threshold=info.threshold,
        message=info.message,
        canary=_candidate(info.canary),
        shadow=_candidate(info.shadow),
        column=info.column,
    )


def _candidate(candidate: CandidateInfo | None) -> labeler_pb2.CandidateInfo | None:
    if candidate is None:
        return None
    return labeler_pb2.CandidateInfo(
        model_version=candidate.model_version,
        percent=candidate.percent,
        state=_STATE[candidate.state],
        message=candidate.message,
    )
