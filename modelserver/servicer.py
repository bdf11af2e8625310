"""The gRPC servicers: thin, proto in -> core -> proto out. Errors are domain
errors, mapped to status codes by rpc.server's ErrorMappingInterceptor."""

from __future__ import annotations

from modelserver.service import PredictionCore
from rpc import errors
from tfserving.protos import model_service_pb2_grpc, prediction_service_pb2_grpc

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


def _unsupported(method: str) -> errors.Unimplemented:
    return errors.Unimplemented(
        f"{method} is not implemented by labeler-modelserver; use Predict (Predict and "
        "GetModelMetadata are the supported PredictionService methods)"
    )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: PredictionCore) -> None:
        self._core = core

    async def Predict(self, request, context):
        return await self._core.predict(request)

    async def GetModelMetadata(self, request, context):
        return self._core.model_metadata(request)

    async def Classify(self, request, context):
        raise _unsupported("Classify")

    async def Regress(self, request, context):
        raise _unsupported("Regress")

    async def MultiInference(self, request, context):
        raise _unsupported("MultiInference")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: PredictionCore) -> None:
        self._core = core

    async def GetModelStatus(self, request, context):
        return self._core.model_status(request)

    async def HandleReloadConfigRequest(self, request, context):
        return await self._core.reload_config(request)
