"""Fixtures of the reliability tests: a test PKI (made with openssl) and the
secured stack as real processes (labeler-modelserver requiring mutual TLS,
``labeler serve`` requiring TLS and a bearer token), shared by the bad-input,
property, soak and TLS tests.

``--soak-seconds`` sets the soak's length (``make soak`` passes 300); without
it the soak runs its short form.
"""

from __future__ import annotations

import pytest

from rpc.security import ClientSecurity, TlsFiles
from tests.support.labeler_support import SAMPLE_LABELS
from tests.support.pki import Pki, make_pki
from tests.support.procs import (
    Stack,
    labeler_process,
    modelserver_process,
    wait_serving,
    write_labeler_config,
    write_modelserver_config,
)

TOKEN = "reliability-token-0123456789"
SHORT_SOAK_S = 20.0
# The stack's Labeler takes requests of at most this size (the flag's default is 64 MiB).
LABELER_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=None,
        help=f"length of the soak test (default {SHORT_SOAK_S:.0f}s; make soak uses 300)",
    )


@pytest.fixture(scope="session")
def soak_seconds(request: pytest.FixtureRequest) -> float:
    # getoption's default covers runs where this conftest was loaded after
    # option parsing (pytest tests/): the short form.
    return request.config.getoption("soak_seconds", default=None) or SHORT_SOAK_S


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def start_labeler(stack_dir, model_root, modelserver_target: str, pki: Pki, *flags: str):
    """``labeler serve`` on the stack's model server, TLS + token, mutual TLS to the model server."""
    config = write_labeler_config(
        stack_dir / "labeler.json",
        model_root,
        {m: modelserver_target for m in SAMPLE_LABELS},
        tls=ClientSecurity(tls=pki.client),
        poll_ms=500,
    )
    tokens = stack_dir / "tokens"
    tokens.write_text(f"# one token per line\n{TOKEN}\n")
    server = pki.server_tls_only
    return labeler_process(
        config,
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--auth-tokens-file",
        str(tokens),
        "--max-message-bytes",
        str(LABELER_MAX_MESSAGE_BYTES),
        "--grace",
        "5",
        *flags,
    ).start()


@pytest.fixture(scope="session")
def secure_stack(trained_model_root, pki: Pki, tmp_path_factory: pytest.TempPathFactory):
    stack_dir = tmp_path_factory.mktemp("stack")
    config = write_modelserver_config(stack_dir / "models.config", trained_model_root, SAMPLE_LABELS)
    server = pki.server
    modelserver = modelserver_process(
        config, f"--tls-cert={server.cert}", f"--tls-key={server.key}", f"--tls-client-ca={server.ca}"
    ).start()
    try:
        labeler = start_labeler(stack_dir, trained_model_root, modelserver.target, pki)
        stack = Stack(
            modelserver,
            labeler,
            pki.client_security(TOKEN, TlsFiles(ca=pki.path("ca.pem"))),
            pki.client_security(),
            trained_model_root,
        )
        try:
            with stack.labeler_channel() as channel:
                wait_serving(channel, "labeler.v1.Labeler")
            yield stack
        finally:
            code = labeler.stop()
            assert code == 0, f"labeler serve exited with {code}:\n{labeler.output()}"
    finally:
        code = modelserver.stop()
        assert code == 0, f"labeler-modelserver exited with {code}:\n{modelserver.output()}"
