"""Building and running the example clients (examples/go, examples/java,
examples/python) for the interop and code-generation tests.

Where a toolchain is missing (a laptop without Go or a JDK) those tests skip
with the reason; in CI (TEXT_LABELER_REQUIRE_INTEROP=1, set by .ci/run) they
fail instead, so the interop checks can never silently stop running.
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
REQUIRE_ENV = "TEXT_LABELER_REQUIRE_INTEROP"
DEBIAN_HINT = "see examples/go/README.md and examples/java/README.md (Debian packages; .ci/run installs them)"

# The build scripts run one `buf generate` (buf.gen.yaml): every plugin it names.
_BUF_PLUGINS = ["protoc", "protoc-gen-go", "protoc-gen-go-grpc", "grpc_java_plugin", "grpc_python_plugin"]
TOOLCHAINS = {
    "go": ["go", *_BUF_PLUGINS],
    "java": ["java", "javac", *_BUF_PLUGINS],
}
# Libraries (not programs) the builds need, by path.
LIBRARIES = {
    "go": [
        "/usr/share/gocode/src/google.golang.org/grpc",
        "/usr/share/gocode/src/github.com/golang/protobuf",
    ],
    "java": [
        "/usr/share/java/grpc-netty.jar",
        "/usr/share/java/perfmark-api.jar",
        "/usr/share/java/geronimo-annotation-1.3-spec.jar",
        f"/usr/lib/{os.uname().machine}-linux-gnu/jni/libnetty-tcnative.so",
    ],
}
GO_CLIENT = REPO / "examples/go/gopath/bin/labeler-client"
JAVA_CLIENT = REPO / "examples/java/build/labeler-client"
PYTHON_CLIENT = REPO / "examples/python/client.py"


def require_toolchain(language: str) -> None:
    """Skip (or, in CI, fail) when ``language``'s toolchain is not installed."""
    missing = [t for t in TOOLCHAINS[language] if shutil.which(t) is None]
    missing += [p for p in LIBRARIES[language] if not pathlib.Path(p).exists()]
    if missing:
        reason = f"{language} toolchain missing ({', '.join(missing)}); {DEBIAN_HINT}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)


@functools.cache
def build(language: str) -> pathlib.Path:
    """Run examples/<language>/build.sh once per test session; the client it built."""
    require_toolchain(language)
    proc = subprocess.run(
        ["bash", str(REPO / f"examples/{language}/build.sh")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, f"examples/{language}/build.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return {"go": GO_CLIENT, "java": JAVA_CLIENT}[language]


def client_argv(language: str, labeler: str, trainer: str = "") -> list[str]:
    """The command line of one example client (built first if needed)."""
    if language == "python":
        argv = [sys.executable, str(PYTHON_CLIENT), "--labeler", labeler]
        return argv + (["--trainer", trainer] if trainer else [])
    flag = "-" if language == "go" else "--"
    argv = [str(build(language)), f"{flag}labeler", labeler]
    return argv + ([f"{flag}trainer", trainer] if trainer else [])
