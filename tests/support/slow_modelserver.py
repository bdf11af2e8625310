"""A controllable stand-in for a model server, for the Labeler's overload,
cancellation and cache tests: a real gRPC server on 127.0.0.1:0 (production
interceptors) speaking TF Serving's PredictionService and ModelService, whose
Predict takes ``delay_s`` and counts what it sees: Predicts started, running,
finished, cancelled by the caller, and rows asked for.

Its answer is a deterministic function of the feature row and the version,
so a cached answer can be compared with a fresh one and two versions differ.
The Labeler needs the features of each version on disk: ``write_features``
puts a small vocabulary into ``<model_root>/<model>/<version>/assets.extra``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib

import grpc
import numpy as np

from modelspec.features import FeaturePipeline, FeatureSettings
from rpc import server as rpc_server
from tests.support.labeler_support import SAMPLE_LABELS
from tfserving import codec
from tfserving.protos import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

WORDS = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影", "口红", "明星", "时装", "新款"]


def write_features(model_root: pathlib.Path, model: str, version: int) -> None:
    """The features of a stand-in version, for the label labeler_config binds to ``model``."""
    pipeline = FeaturePipeline(WORDS, {}, FeatureSettings(cutlen=8, ngram_range=1, maxlen=8))
    pipeline.save(
        model_root / model / str(version),
        label=SAMPLE_LABELS.get(model, model),
        model=model,
        signature_name="serving_default",
        input_name="input",
        output_name="probability",
    )


def probability(row: np.ndarray, version: int) -> float:
    """The stand-in model: the same row and version always give the same answer."""
    return float((int(np.asarray(row, dtype=np.int64).sum()) * 7 + version * 13) % 97) / 97.0


@dataclasses.dataclass
class Counts:
    started: int = 0
    running: int = 0
    finished: int = 0
    cancelled: int = 0
    rows: int = 0
    peak_running: int = 0


class SlowModelServer(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):
    def __init__(self, versions: dict[str, list[int]], delay_s: float = 0.0) -> None:
        self.versions = versions
        self.delay_s = delay_s
        self.counts = Counts()
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> SlowModelServer:
        self._server = rpc_server.new_server(rpc_server.DrainInterceptor())
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self, self._server)
        self.port = rpc_server.bind(self._server, "127.0.0.1:0")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def GetModelStatus(self, request, context):
        versions = self.versions.get(request.model_spec.name)
        if not versions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model_spec.name} not found")
        states = get_model_status_pb2.ModelVersionStatus.State
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[
                get_model_status_pb2.ModelVersionStatus(version=v, state=states.Value("AVAILABLE"))
                for v in versions
            ]
        )

    async def Predict(self, request, context):
        spec = request.model_spec
        version = spec.version.value
        if version not in self.versions.get(spec.name, []):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{spec.name} version {version} is not served")
        features = codec.to_ndarray(request.inputs["input"], 64 * 1024 * 1024)
        c = self.counts
        c.started += 1
        c.running += 1
        c.rows += features.shape[0]
        c.peak_running = max(c.peak_running, c.running)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            c.cancelled += 1
            raise
        finally:
            c.running -= 1
        c.finished += 1
        out = np.array([[probability(row, version)] for row in features], dtype=np.float32)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name
        codec.from_ndarray(out, response.outputs["probability"], raw=True)
        return response
