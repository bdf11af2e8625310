"""A TensorFlow Serving gRPC client (Predict, GetModelStatus) that never starts
the TensorFlow runtime: protos come from tfserving.protos and tensors go
through tfserving.codec (requests as raw ``tensor_content``).

One long-lived ``grpc.aio`` channel per target, made once and shared by every
request (``ClientPool``). The same client talks to tensorflow/serving and to
labeler-modelserver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence

import grpc
import numpy as np

from labeler.domain import ModelCallError, Prediction
from rpc import server as rpc_server
from rpc.security import DEFAULT_MAX_MESSAGE_BYTES, ClientSecurity, channel_credentials
from tfserving import codec
from tfserving.protos import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    types_pb2,
)

log = logging.getLogger(__name__)

# The output dtypes read as probabilities.
_PROBABILITY_DTYPES = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF})
# What one output may decode to: no more than a reply may carry on the wire
# (a few typed values with a huge shape must not make the Labeler allocate more).
_MAX_OUTPUT_BYTES = rpc_server.DEFAULT_MAX_MESSAGE_BYTES

# Transparent retries for a model server that is briefly unreachable; the
# caller's loop (predict) keeps retrying UNAVAILABLE while its deadline allows.
_RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.02s",
    "maxBackoff": "0.2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_BACKOFF_START_S = 0.02
_BACKOFF_MAX_S = 0.25


def channel_options(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[tuple[str, object]]:
    """Options for a model server channel: raised message limits, retries on
    UNAVAILABLE, round-robin over every address of a ``dns:///`` target (so
    several replicas share the load) and quick reconnects after an outage."""
    service_config: dict[str, object] = {
        "methodConfig": [
            {
                "name": [
                    {"service": "tensorflow.serving.PredictionService"},
                    {"service": "tensorflow.serving.ModelService"},
                ],
                "retryPolicy": _RETRY_POLICY,
            }
        ]
    }
    options: list[tuple[str, object]] = [
        *rpc_server.message_size_options(max_message_bytes),
        ("grpc.enable_retries", 1),
        # gRPC's default reconnect backoff grows to 120 s; a model server that
        # comes back should be used again within a couple of seconds.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30000),
        ("grpc.keepalive_timeout_ms", 10000),
    ]
    if target.startswith("dns:") or (target.startswith(("ipv4:", "ipv6:")) and "," in target):
        # A name or a list of replicas' addresses: spread over all of them.
        service_config["loadBalancingConfig"] = [{"round_robin": {}}]
        options.append(("grpc.lb_policy_name", "round_robin"))
    options.append(("grpc.service_config", json.dumps(service_config)))
    return options


def _call_error(exc: grpc.aio.AioRpcError, target: str, waited_s: float) -> ModelCallError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelCallError(
            code.name, f"model server {target} did not answer within {waited_s * 1000:.0f} ms"
        )
    return ModelCallError(code.name, f"model server {target}: {exc.details() or code.name}")


class ModelServerClient:
    """Predict and GetModelStatus against one model server target."""

    def __init__(self, target: str, tls: ClientSecurity | None = None) -> None:
        """``tls``: TLS (and mutual TLS) to the server; None: plaintext."""
        self.target = target
        options = channel_options(target)
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            credentials = channel_credentials(tls.tls, required=True)
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=[*options, *tls.channel_options()]
            )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
        self._status = model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus

    async def predict(
        self,
        model: str,
        version: int | None,
        signature_name: str,
        input_name: str,
        output_name: str,
        features: np.ndarray,
        deadline: float,
        retry_unavailable: bool = True,
        metadata: Sequence[tuple[str, str]] | None = None,
        columns: int | None = None,
    ) -> Prediction:
        """One Predict for a batch of feature rows; ``deadline`` is an event-loop
        time. UNAVAILABLE is retried with jittered backoff while time remains
        (unless ``retry_unavailable`` is off: the server is known to be down).
        ``columns``: a bundle's label count; its answer is [batch, columns]."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        codec.from_ndarray(features, request.inputs[input_name], raw=True)
        response = await self._call_with_retries(
            self._predict, request, deadline, retry_unavailable, metadata
        )
        if output_name not in response.outputs:
            raise ModelCallError(
                "FAILED_PRECONDITION",
                f"model {model} answered without output {output_name!r} (it has "
                f"{sorted(response.outputs)}); set output_name in the Labeler config",
            )
        output = response.outputs[output_name]
        if output.dtype not in _PROBABILITY_DTYPES:
            raise ModelCallError(
                "INTERNAL",
                f"model {model} output {output_name!r}: unsupported tensor dtype "
                f"{codec.dtype_name(output.dtype)} (probabilities are DT_FLOAT, DT_DOUBLE or DT_HALF)",
            )
        try:
            values = codec.to_ndarray(output, _MAX_OUTPUT_BYTES)
        except codec.TensorParseError as exc:
            raise ModelCallError("INTERNAL", f"model {model} output {output_name!r}: {exc}") from exc
        batch = features.shape[0]
        if values.size == 0 or values.shape[0] != batch:
            raise ModelCallError(
                "INTERNAL",
                f"model {model} returned output {output_name!r} of shape {list(values.shape)} "
                f"for a batch of {batch}",
            )
        answered = response.model_spec.version.value if response.model_spec.HasField("version") else version
        if columns is not None:
            matrix = values.reshape(batch, -1)
            if matrix.shape[1] != columns:
                raise ModelCallError(
                    "FAILED_PRECONDITION",
                    f"model {model} version {answered} returned {matrix.shape[1]} columns but its artifacts "
                    f"name {columns} labels; re-export the bundle",
                )
            return Prediction(matrix.astype(np.float64), int(answered or 0))
        # [batch, 1] (or [batch]) probabilities of the positive class.
        probabilities = values.reshape(batch, -1)[:, -1].astype(np.float64)
        return Prediction(probabilities, int(answered or 0))

    async def model_status(
        self,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float = 2.0,
    ) -> list[tuple[int, str, str]]:
        """(version, state name, error message) of each version the server reports."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        elif version_label:
            request.model_spec.version_label = version_label
        loop = asyncio.get_running_loop()
        response = await self._call_with_retries(self._status, request, loop.time() + timeout)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            (int(s.version), states.Name(s.state), s.status.error_message)
            for s in response.model_version_status
        ]

    async def _call_with_retries(
        self,
        method,
        request,
        deadline: float,
        retry_unavailable: bool = True,
        metadata: Sequence[tuple[str, str]] | None = None,
    ):
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_START_S
        started = loop.time()
        unavailable: grpc.aio.AioRpcError | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await method(request, timeout=remaining, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    if unavailable is None or exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise _call_error(exc, self.target, loop.time() - started) from None
                    break  # still unreachable when time ran out: say so
                unavailable = exc
                if not retry_unavailable:
                    break
                pause = random.uniform(0.5, 1.0) * backoff
                if loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        waited_ms = (loop.time() - started) * 1000
        if unavailable is not None:
            raise ModelCallError(
                "UNAVAILABLE",
                f"model server {self.target}: {unavailable.details()} (retried for {waited_ms:.0f} ms)",
            )
        raise ModelCallError("DEADLINE_EXCEEDED", f"no time left to call model server {self.target}")

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)


class ClientPool:
    """One client (one channel) per target, created on first use and reused."""

    def __init__(self, tls: ClientSecurity | None = None) -> None:
        self._clients: dict[str, ModelServerClient] = {}
        self._closing: set[asyncio.Task] = set()
        self._tls = tls

    def get(self, target: str) -> ModelServerClient:
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = ModelServerClient(target, self._tls)
        return client

    def use_tls(self, tls: ClientSecurity | None, grace: float = 10.0) -> None:
        """New channels use ``tls``; when it changed, the old channels close
        in the background (after ``grace``) and are made anew on next use."""
        if tls != self._tls:
            self._tls = tls
            self.retain([], grace)

    def retain(self, targets: Sequence[str], grace: float = 10.0) -> None:
        """Close, in the background, the channels of targets no longer
        configured, giving requests already using them ``grace`` seconds."""
        keep = set(targets)
        for target in [t for t in self._clients if t not in keep]:
            task = asyncio.ensure_future(self._clients.pop(target).close(grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close(None) for c in clients), *self._closing, return_exceptions=True)
