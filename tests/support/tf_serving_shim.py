"""The tensorflow/serving image's ``/usr/bin/tensorflow_model_server`` for the
deploy smoke test (tests/integration/test_deploy_smoke.py), which runs the
deploy files without a container engine:

    python -m tests.support.tf_serving_shim [tensorflow_model_server flags...]

It runs ``labeler-modelserver`` with the flags it was given, with two
differences a container would hide:

- the container's file system is a directory on this machine
  (``$TFS_SHIM_CONTAINER_ROOT``): the absolute ``base_path`` values of the
  model config (``/var/models/movie``, as deploy/tf-serving-start.sh renders
  them) are read under that directory (from a translated copy made once at
  start: the smoke test does not edit the config while it runs);
- labeler-modelserver has no REST API, so ``--rest_api_port`` is served here:
  ``GET /v1/models/<name>`` answers TF Serving's JSON model status, asked of
  the model server's ``ModelService/GetModelStatus``. That is the one call
  deploy/tf-serving-ready.sh (the readiness check) makes.

``--check`` is passed on (validate and exit, no REST port). Listens on
127.0.0.1 only. SIGTERM stops the model server and then this process.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading

import grpc

from tfserving.protos import get_model_status_pb2, model_service_pb2_grpc

ROOT_ENV = "TFS_SHIM_CONTAINER_ROOT"
_BASE_PATH = re.compile(r'(base_path:\s*")(/[^"]*")')


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _without(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == f"--{name}":
            skip = True
        elif not arg.startswith(f"--{name}="):
            out.append(arg)
    return out


def _translate_config(argv: list[str], root: pathlib.Path) -> list[str]:
    """The model config with its absolute base paths under ``root``, as a copy."""
    source = _flag(argv, "model_config_file")
    if source is None:
        return argv
    text = pathlib.Path(source).read_text()
    copy = pathlib.Path(source).with_name(pathlib.Path(source).name + ".host")
    copy.write_text(_BASE_PATH.sub(lambda m: f"{m.group(1)}{root}{m.group(2)}", text))
    return [*_without(argv, "model_config_file"), f"--model_config_file={copy}"]


def _status_json(channel: grpc.Channel, model: str) -> tuple[int, dict]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=3)
    except grpc.RpcError as err:
        return 404, {"error": f"{err.code().name}: {err.details()}"}
    states = get_model_status_pb2.ModelVersionStatus.State
    return 200, {
        "model_version_status": [
            {
                "version": str(v.version),
                "state": states.Name(v.state),
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in reply.model_version_status
        ]
    }


def _rest_server(port: int, grpc_port: int) -> http.server.ThreadingHTTPServer:
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            match = re.fullmatch(r"/v1/models/([\w.-]+)", self.path)
            code, body = _status_json(channel, match.group(1)) if match else (404, {"error": "not found"})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: list[str]) -> int:
    root = pathlib.Path(os.environ[ROOT_ENV])
    modelserver = pathlib.Path(sys.executable).parent / "labeler-modelserver"
    rest_port = int(_flag(argv, "rest_api_port") or 0)
    args = _translate_config(_without(argv, "rest_api_port"), root)
    if "--check" in argv:
        return subprocess.run([str(modelserver), *args], cwd=root).returncode
    child = subprocess.Popen([str(modelserver), *args], cwd=root)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    rest = None
    if rest_port:
        rest = _rest_server(rest_port, int(_flag(argv, "port") or 8500))
        threading.Thread(target=rest.serve_forever, daemon=True).start()
    try:
        return child.wait()
    finally:
        if rest is not None:
            rest.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
