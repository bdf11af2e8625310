"""TensorFlow Serving's generated protobuf modules, without the TensorFlow runtime.

``tensorflow_serving.apis`` imports ``tensorflow.core.framework.*_pb2``, and
importing any ``tensorflow.*`` module runs the ``tensorflow`` package's
``__init__``, which starts the whole runtime (about 2 s and 590 MB). The
generated modules themselves only need protobuf (0.15 s, 44 MB). So, when
TensorFlow is not already imported, we put a bare package object named
``tensorflow`` in ``sys.modules`` just long enough to import the generated
modules, then take it away: a later ``import tensorflow`` (the model server,
training) still runs the real ``__init__`` and finds these modules in place.

Everything on the Labeler's path imports TF Serving protos from here.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any


def _import_generated(names: list[str]) -> list[Any]:
    if "tensorflow" in sys.modules:
        return [importlib.import_module(n) for n in names]
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the 'tensorflow' package (for its generated protobuf modules) is not installed; "
            "install tensorflow-serving-api"
        )
    placeholder = types.ModuleType("tensorflow")
    placeholder.__path__ = list(spec.submodule_search_locations)
    placeholder.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None, is_package=True)
    placeholder.__spec__.submodule_search_locations = placeholder.__path__
    sys.modules["tensorflow"] = placeholder
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        if sys.modules.get("tensorflow") is placeholder:
            del sys.modules["tensorflow"]


(
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
    model_pb2,
    predict_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    prediction_service_pb2_grpc,
    model_service_pb2_grpc,
    model_server_config_pb2,
    status_pb2,
) = _import_generated(
    [
        "tensorflow.core.framework.tensor_pb2",
        "tensorflow.core.framework.tensor_shape_pb2",
        "tensorflow.core.framework.types_pb2",
        "tensorflow_serving.apis.model_pb2",
        "tensorflow_serving.apis.predict_pb2",
        "tensorflow_serving.apis.get_model_metadata_pb2",
        "tensorflow_serving.apis.get_model_status_pb2",
        "tensorflow_serving.apis.model_management_pb2",
        "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "tensorflow_serving.apis.model_service_pb2_grpc",
        "tensorflow_serving.config.model_server_config_pb2",
        "tensorflow_serving.apis.status_pb2",
    ]
)

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
]
