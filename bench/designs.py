"""The new-side designs, each an async ``call(i)`` that labels document
``i % len(docs)`` with K models:

- ``Sequential``: our features, one pooled channel, Predicts one model after another;
- ``Classify``: the Labeler's real gRPC server (its own process);
- ``FanoutFloor``: the same K Predicts with requests built in advance, fired
  at once by a bare asyncio client: what any fan-out pays at least;
- ``DirectFloor``: one prebuilt Predict to one model.
"""

from __future__ import annotations

import asyncio

import grpc

from labeler.model_client import ModelServerClient
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from modelspec.features import FeaturePipeline
from tfserving import codec
from tfserving.protos import predict_pb2

TIMEOUT_S = 30.0


def predict_request(model: str, pipeline: FeaturePipeline, words: list[str]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    codec.from_ndarray(pipeline.transform_one(words), request.inputs["input"], raw=True)
    return request


class Sequential:
    def __init__(self, target: str, pipelines: dict[str, FeaturePipeline], docs: list[list[str]]) -> None:
        self.client = ModelServerClient(target)
        self.pipelines, self.docs = pipelines, docs

    async def call(self, i: int) -> None:
        words = self.docs[i % len(self.docs)]
        loop = asyncio.get_running_loop()
        for model, pipeline in self.pipelines.items():
            await self.client.predict(
                model,
                None,
                "serving_default",
                "input",
                "probability",
                pipeline.transform_one(words),
                loop.time() + TIMEOUT_S,
            )

    async def close(self) -> None:
        await self.client.close()


class Classify:
    def __init__(self, target: str, docs: list[list[str]], timeout_s: float = TIMEOUT_S) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = labeler_pb2_grpc.LabelerStub(self.channel)
        self.docs, self.timeout_s = docs, timeout_s

    async def call(self, i: int) -> None:
        reply = await self.stub.Classify(
            labeler_pb2.ClassifyRequest(words=self.docs[i % len(self.docs)]), timeout=self.timeout_s
        )
        if reply.failures:
            f = reply.failures[0]
            raise RuntimeError(
                f"{len(reply.failures)} label(s) failed, e.g. {f.label}: {f.code_name}: {f.message}"
            )

    async def close(self) -> None:
        await self.channel.close()


class FanoutFloor:
    def __init__(
        self,
        target: str,
        pipelines: dict[str, FeaturePipeline],
        docs: list[list[str]],
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        # The Labeler's own channel and UNAVAILABLE retry loop, so the transport
        # is not what differs from Classify (the model server refuses streams
        # past its per-connection limit; both sides then retry the same way).
        self.client = ModelServerClient(target)
        self.requests = [[predict_request(m, p, words) for m, p in pipelines.items()] for words in docs]
        self.timeout_s = timeout_s

    async def call(self, i: int) -> None:
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        # The exact send path the Labeler uses, minus features and decoding.
        send, predict = self.client._call_with_retries, self.client._predict  # noqa: SLF001
        await asyncio.gather(*(send(predict, r, deadline) for r in self.requests[i % len(self.requests)]))

    async def close(self) -> None:
        await self.client.close()


class DirectFloor(FanoutFloor):
    def __init__(self, target: str, pipelines: dict[str, FeaturePipeline], docs: list[list[str]]) -> None:
        first = next(iter(pipelines))
        super().__init__(target, {first: pipelines[first]}, docs)
