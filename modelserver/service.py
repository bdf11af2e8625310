"""TF Serving's request semantics over the model manager: Predict,
GetModelMetadata, GetModelStatus and HandleReloadConfigRequest, proto in,
proto out, with TF Serving's checks in TF Serving's order and its messages
(predict_util.cc, tensorflow/cc/saved_model/util.cc, server_core.cc,
get_model_metadata_impl.cc, get_model_status_impl.cc, model_service_impl.cc).

Knows nothing of gRPC: errors are rpc.errors ServiceErrors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import pathlib

import numpy as np

from modelserver import model_config as config_lib
from modelserver.batching import Batcher
from modelserver.loader import DEFAULT_SIGNATURE, LoadedVersion, Signature, TensorBinding
from modelserver.manager import ModelManager
from rpc import errors
from tfserving import codec
from tfserving.protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)

SIGNATURE_DEF_FIELD = "signature_def"


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated Predict: what to feed and fetch, and what to answer with."""

    signature_name: str
    feeds: list[tuple[TensorBinding, np.ndarray]]
    fetches: list[TensorBinding]


def _keys(keys) -> str:
    return errors.shown(",".join(sorted(keys)), quoted=False)


class PredictionCore:
    def __init__(
        self,
        manager: ModelManager,
        executor: concurrent.futures.Executor,
        max_tensor_bytes: int,
        batcher: Batcher | None = None,
        reload_base_path_root: pathlib.Path | None = None,
        working_dir: pathlib.Path | None = None,
    ) -> None:
        self.manager = manager
        self._executor = executor
        self._max_tensor_bytes = max_tensor_bytes
        self._batcher = batcher
        self._reload_root = reload_base_path_root
        self._working_dir = working_dir or pathlib.Path.cwd()

    # -- Predict -----------------------------------------------------------

    async def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise errors.InvalidArgument("Missing ModelSpec")
        loop = asyncio.get_running_loop()
        # The reference keeps this version's session open until we are done,
        # even if a poll swaps in a newer version meanwhile.
        with self.manager.servable(request.model_spec) as version:
            if self._batcher is None:
                return await loop.run_in_executor(self._executor, self._predict_now, version, request)
            plan = self.plan(version, request)
            key = (
                version,
                plan.signature_name,
                tuple((b.name, a.dtype.str, a.shape[1:]) for b, a in plan.feeds),
                tuple(b.name for b in plan.fetches),
            )
            outputs = await self._batcher.run(key, [a for _, a in plan.feeds], _executor_for(version, plan))
            return self._respond(version, request, plan, outputs)

    def _predict_now(
        self, version: LoadedVersion, request: predict_pb2.PredictRequest
    ) -> predict_pb2.PredictResponse:
        plan = self.plan(version, request)
        return self._respond(version, request, plan, version.run(plan.feeds, plan.fetches))

    def plan(self, version: LoadedVersion, request: predict_pb2.PredictRequest) -> _Plan:
        """Signature lookup and TF Serving's PreProcessPrediction."""
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = version.signatures.get(name)
        if signature is None:
            raise errors.FailedPrecondition(
                f'Serving signature key "{errors.shown(name, quoted=False)}" not found.'
            )
        _check_inputs_size(signature, request)
        feeds = self._input_values(signature, request)
        return _Plan(name, feeds, _fetches(signature, request))

    def _input_values(self, signature: Signature, request: predict_pb2.PredictRequest):
        feeds = []
        used = set()
        for alias in sorted(signature.inputs):
            binding = signature.inputs[alias]
            if alias in request.inputs:
                proto = request.inputs[alias]
                used.add(alias)
            elif alias in signature.defaults:
                proto = signature.defaults[alias]
            else:
                raise errors.InvalidArgument(
                    f"Signature input alias: {alias}(feed name: {binding.name}) not found in request and no "
                    f"default value provided. Inputs expected to be in the request {{{_keys(request.inputs)}}}, "
                    f"or default input alias set: {_keys(signature.defaults)}"
                )
            try:
                feeds.append((binding, codec.to_ndarray(proto, self._max_tensor_bytes)))
            except codec.TensorParseError as exc:
                raise errors.InvalidArgument(f"tensor parsing error: {alias}: {exc}") from None
        if request.inputs and len(used) != len(request.inputs):
            raise errors.InvalidArgument(
                f"Inputs contains invalid name. Used request inputs: {_keys(used)}, "
                f"request input: {_keys(request.inputs)}"
            )
        return feeds

    def _respond(self, version: LoadedVersion, request, plan: _Plan, outputs: list[np.ndarray]):
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = plan.signature_name
        response.model_spec.version.value = version.version
        for binding, array in zip(plan.fetches, outputs, strict=True):
            try:
                codec.from_ndarray(array, response.outputs[binding.alias])
            except codec.TensorEncodeError as exc:
                raise errors.Internal(f"output {binding.alias}: {exc}") from None
        return response

    # -- GetModelMetadata --------------------------------------------------

    def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        if not request.HasField("model_spec"):
            raise errors.InvalidArgument("Missing ModelSpec")
        if not request.metadata_field:
            raise errors.InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.InvalidArgument(
                    f"Metadata field {errors.shown(field, quoted=False)} is not supported (the only one is {SIGNATURE_DEF_FIELD})"
                )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        with self.manager.servable(request.model_spec) as version:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in version.meta_graph.signature_def.items():
                signatures.signature_def[key].CopyFrom(signature)
            response.model_spec.name = version.name
            response.model_spec.version.value = version.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        return response

    # -- ModelService ------------------------------------------------------

    def model_status(self, request: get_model_status_pb2.GetModelStatusRequest):
        if not request.HasField("model_spec"):
            raise errors.InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        statuses = self.manager.version_statuses(spec.name)
        if spec.HasField("version"):
            statuses = [(n, s) for n, s in statuses if n == spec.version.value]
            if not statuses:
                raise errors.NotFound(
                    f"Could not find version {spec.version.value} of model {errors.shown(spec.name, quoted=False)}"
                )
        elif not statuses:
            raise errors.NotFound(
                f"Could not find any versions of model {errors.shown(spec.name, quoted=False)}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, version_status in statuses:
            entry = response.model_version_status.add(version=number, state=version_status.state)
            entry.status.SetInParent()
            if version_status.error is not None:
                entry.status.error_code = errors.status_number(version_status.error.code)
                entry.status.error_message = str(version_status.error)
        return response

    async def reload_config(self, request: model_management_pb2.ReloadConfigRequest):
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise errors.InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        if self._reload_root is not None:
            config_lib.check_under_root(config, self._reload_root, self._working_dir)
        await self.manager.reload(config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        return response


def _check_inputs_size(signature: Signature, request: predict_pb2.PredictRequest) -> None:
    sent, expected = len(request.inputs), len(signature.inputs)
    if sent > expected or (sent < expected and not signature.defaults):
        extra = set(request.inputs) - set(signature.inputs)
        missing = set(signature.inputs) - set(request.inputs)
        raise errors.InvalidArgument(
            f"input size does not match signature: {sent}!={expected} len({{{_keys(request.inputs)}}}) != "
            f"len({{{_keys(signature.inputs)}}}). Sent extra: {{{_keys(extra)}}}. "
            f"Missing but required: {{{_keys(missing)}}}."
        )


def _fetches(signature: Signature, request: predict_pb2.PredictRequest) -> list[TensorBinding]:
    if not request.output_filter:
        return [signature.outputs[alias] for alias in sorted(signature.outputs)]
    fetches, seen = [], set()
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise errors.InvalidArgument(
                f"output tensor alias not found in signature: {errors.shown(alias, quoted=False)} Outputs expected to be in the set "
                f"{{{_keys(signature.outputs)}}}."
            )
        if alias in seen:
            raise errors.InvalidArgument(
                f"duplicate output tensor alias: {errors.shown(alias, quoted=False)}"
            )
        seen.add(alias)
        fetches.append(signature.outputs[alias])
    return fetches


def _executor_for(version: LoadedVersion, plan: _Plan):
    bindings = [binding for binding, _ in plan.feeds]

    def execute(inputs: list[np.ndarray]) -> list[np.ndarray]:
        # The batch holds its own reference: its callers may all be cancelled.
        if not version.retain():
            raise errors.Unavailable(f"{version.name} version {version.version} was unloaded; retry")
        try:
            return version.run(list(zip(bindings, inputs, strict=True)), plan.fetches)
        finally:
            version.release()

    return execute
