"""TensorFlow Serving's protobuf and gRPC modules, without the TensorFlow runtime.

The modules live in ``tfserving.generated``, which scripts/gen_tfs_protos.py
writes at build time (``make venv``, the Docker build stage) from the installed
tensorflow-serving-api and tensorflow packages without importing them. They add
the upstream descriptors, byte for byte and under their upstream file names
(``tensorflow/core/framework/tensor.proto`` ...), to protobuf's default pool,
so a process that also imports TensorFlow (the model server) shares message
classes with it instead of conflicting. Importing them costs protobuf alone:
no ``tensorflow`` module is ever loaded (see docs/benchmarks.md).

Everything imports TF Serving protos from here, never from ``tfserving.generated``.
"""

from __future__ import annotations

try:
    from tfserving.generated.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tfserving.generated.tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_log_pb2,
        prediction_service_pb2_grpc,
        status_pb2,
    )
    from tfserving.generated.tensorflow_serving.config import model_server_config_pb2
except ModuleNotFoundError as exc:  # pragma: no cover - a checkout that skipped the build step
    if not (exc.name or "").startswith("tfserving.generated"):
        raise
    raise ModuleNotFoundError(
        "TF Serving's protobuf modules have not been generated: run `make protos` "
        "(or `python scripts/gen_tfs_protos.py` with tensorflow-serving-api installed)",
        name=exc.name,
    ) from exc

__all__ = [
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
    "model_pb2",
    "predict_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "model_management_pb2",
    "prediction_service_pb2_grpc",
    "model_service_pb2_grpc",
    "model_server_config_pb2",
    "status_pb2",
    "prediction_log_pb2",
]
