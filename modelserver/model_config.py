"""TF Serving's ``ModelServerConfig``: reading, building and validating it.

Config files are text-format protos parsed with TF Serving's own generated
module, so a file the real ``tensorflow_model_server`` accepts means the same
here. Validation messages are TF Serving's where it has one.

Differences from TF Serving (documented in the cli help):
- a relative ``base_path`` is resolved against the working directory (TF
  Serving requires absolute paths unless ``model_config_list_root_dir`` is set);
- only local paths, only ``model_platform: "tensorflow"``.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import TypeAlias

from google.protobuf import text_format

from rpc import errors
from tfserving.protos import model_server_config_pb2

ModelServerConfig: TypeAlias = model_server_config_pb2.ModelServerConfig
ModelConfig: TypeAlias = model_server_config_pb2.ModelConfig

TENSORFLOW_PLATFORM = "tensorflow"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ConfigFileError(Exception):
    """A config file that cannot be read or parsed; the message names the file."""


def parse_model_server_config(text: str, source: str = "<text>") -> ModelServerConfig:
    """Parse text-format ``ModelServerConfig``; ConfigFileError says where it fails."""
    try:
        return text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as exc:
        # TF Serving's wording first, then the parser's line:column detail.
        raise ConfigFileError(f"Invalid protobuf file: '{source}': {exc}") from None


def read_model_server_config(path: str | pathlib.Path) -> ModelServerConfig:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read model config file '{path}': {exc}") from None
    return parse_model_server_config(text, str(path))


def single_model_config(name: str, base_path: str | os.PathLike[str]) -> ModelServerConfig:
    """What ``--model_name`` / ``--model_base_path`` mean: one model, latest version."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = str(base_path)
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def model_platform(model: ModelConfig) -> str:
    """TF Serving's GetPlatform: the deprecated ``model_type`` or ``model_platform``."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise errors.InvalidArgument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) "
                "and ModelServerConfig::model_platform."
            )
        if model.model_type == model_server_config_pb2.TENSORFLOW:
            return TENSORFLOW_PLATFORM
        raise errors.InvalidArgument(
            f"ModelServerConfig::model_type choice {model.model_type} not supported."
        )
    if not model.model_platform:
        raise errors.InvalidArgument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) "
            "nor ModelServerConfig::model_platform."
        )
    return model.model_platform


def validate(config: ModelServerConfig) -> None:
    """Raise InvalidArgument unless this server can serve ``config``."""
    if config.WhichOneof("config") != "model_config_list":
        raise errors.InvalidArgument(
            "ServerModelConfig type not supported: only model_config_list is supported "
            "(custom_model_config is not)"
        )
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise errors.InvalidArgument("every model in model_config_list needs a name")
        if model.name in seen:
            raise errors.InvalidArgument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        platform = model_platform(model)
        if platform != TENSORFLOW_PLATFORM:
            raise errors.InvalidArgument(f"Model {model.name} requests unsupported platform {platform}")
        if not model.base_path:
            raise errors.InvalidArgument(f"Model {model.name} has an empty base_path")
        if _URI.match(model.base_path):
            raise errors.InvalidArgument(
                f"Model {model.name} has base_path {model.base_path}: labeler-modelserver reads "
                "local directories only"
            )
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise errors.InvalidArgument(f"Model {model.name}: latest.num_versions must not be negative")
        for label in model.version_labels:
            if not label:
                raise errors.InvalidArgument(f"Model {model.name} has an empty version label")


def resolve_base_path(base_path: str, working_dir: pathlib.Path) -> pathlib.Path:
    """An absolute base path; a relative one is taken from ``working_dir``."""
    path = pathlib.Path(base_path).expanduser()
    return path if path.is_absolute() else working_dir / path


def check_under_root(config: ModelServerConfig, root: pathlib.Path, working_dir: pathlib.Path) -> None:
    """Refuse base paths outside ``root`` (for configs that arrive over the network:
    a client must not make the server load files from anywhere on the disk)."""
    real_root = root.resolve()
    for model in config.model_config_list.config:
        path = resolve_base_path(model.base_path, working_dir).resolve()
        if path != real_root and real_root not in path.parents:
            raise errors.InvalidArgument(
                f"Model {model.name} has base_path {model.base_path}, outside {real_root}, the only "
                "directory a HandleReloadConfigRequest may load from; start the server with "
                "--reload_base_path_root=DIR to allow another directory"
            )
