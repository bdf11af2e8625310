"""``labeler-modelserver``: tensorflow_model_server's flags, names and meanings,
for what this server supports. ``--flag=value`` and ``--flag value`` both work.

Differences from tensorflow_model_server:
- it binds ``--host`` (default 127.0.0.1, loopback only); TF Serving binds
  0.0.0.0. Pass ``--host=0.0.0.0`` to listen on every interface;
- a relative ``base_path`` in the config is taken from the working directory;
- HandleReloadConfigRequest may only load models under
  ``--reload_base_path_root`` (default: the working directory);
- no REST API (``--rest_api_port`` must stay 0), gRPC only; Predict and
  GetModelMetadata only (Classify, Regress, MultiInference: UNIMPLEMENTED);
- ``--file_system_poll_wait_seconds`` <= 0 loads once at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import sys

from modelserver import model_config as config_lib
from rpc import errors, security

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labeler-modelserver",
        description="A TensorFlow-Serving-compatible gRPC model server (PredictionService, ModelService).",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flag = p.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)")
    flag("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; TF Serving binds 0.0.0.0)")
    flag("--model_name", default="default", help="name of the one model served with --model_base_path")
    flag("--model_base_path", help="directory holding the model's numeric version directories")
    flag("--model_config_file", help="text-format ModelServerConfig (model_config_list)")
    flag(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often and apply changes (0: read once)",
    )
    flag(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="look for new model versions this often (default 1; <= 0: once at start-up)",
    )
    flag(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="batch concurrent Predicts on the same model version",
    )
    flag("--batching_parameters_file", help="text-format BatchingParameters (with --enable_batching)")
    flag("--tensorflow_intra_op_parallelism", type=int, default=0, help="TF intra-op threads (0: TF decides)")
    flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="TF inter-op threads (0: TF decides)")
    flag(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="let a config assign labels to versions not (yet) loaded",
    )
    flag("--rest_api_port", type=int, default=0, help="not supported: must be 0")
    flag(
        "--reload_base_path_root",
        help="HandleReloadConfigRequest may load models only under this directory (default: working dir)",
    )
    flag("--request_threads", type=int, default=None, help="threads running TensorFlow calls")
    # No stream limit by default, as TF Serving: one Labeler channel carries
    # (labels x concurrent requests) Predicts at once.
    security.add_server_security_flags(p, token_env=None, default_max_streams=0)
    flag(
        "--check",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="validate the flags, config files and TLS files as a start would, load no model, bind nothing",
    )
    return p


def options_from_args(args: argparse.Namespace):
    """ModelServerOptions from parsed flags; reads the config files (no TensorFlow)."""
    from modelserver.batching import BatchingOptions, read_batching_parameters
    from modelserver.config import ModelServerOptions

    if args.rest_api_port:
        raise errors.InvalidArgument("--rest_api_port: labeler-modelserver serves gRPC only; leave it at 0")
    batching = None
    if args.enable_batching:
        batching = (
            read_batching_parameters(args.batching_parameters_file)
            if args.batching_parameters_file
            else BatchingOptions()
        )
    elif args.batching_parameters_file:
        logging.getLogger(__name__).warning("--batching_parameters_file is ignored without --enable_batching")
    common = dict(
        port=args.port,
        host=args.host,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        batching=batching,
        intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        request_threads=args.request_threads,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        reload_base_path_root=pathlib.Path(args.reload_base_path_root)
        if args.reload_base_path_root
        else None,
        tls=security.TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_client_ca),
        max_message_bytes=args.max_message_bytes,
        max_concurrent_streams=args.max_concurrent_streams,
    )
    if args.model_config_file and args.model_base_path:
        raise errors.InvalidArgument("--model_config_file and --model_base_path are mutually exclusive")
    if args.model_config_file:
        options = ModelServerOptions.for_config_file(args.model_config_file, **common)
    elif args.model_base_path:
        options = ModelServerOptions.for_model(args.model_name, args.model_base_path, **common)
    else:
        raise errors.InvalidArgument("Both --model_base_path and --model_config_file are empty: give one")
    config_lib.validate(options.model_config)
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        options = options_from_args(args)  # bad files fail here, before TensorFlow starts
        options.server_security().credentials()  # and unreadable TLS files
        if args.check:
            print(
                f"labeler-modelserver --check: OK: {len(options.model_config.model_config_list.config)} model(s)"
            )
            return 0
        from modelserver.server import serve

        asyncio.run(serve(options))
    except config_lib.ConfigFileError as exc:
        print(f"labeler-modelserver: Failed to start server. Error: {exc}", file=sys.stderr)
        return 1
    except errors.ServiceError as exc:
        print(f"labeler-modelserver: Failed to start server. Error: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # port in use, unreadable TLS files
        print(f"labeler-modelserver: Failed to start server. Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
