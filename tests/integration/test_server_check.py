"""``--check`` on the three servers: validate what a start would (config,
tokens, the Trainer's off-loopback token rule, TLS files), bind nothing.
The deploy smoke test runs it on every deploy file's command; these pin
its answers."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest

from tests.support.server_process import ENV

pytestmark = pytest.mark.timeout(120)
REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = str(REPO / "deploy" / "labeler.textproto")
MODELS_CONFIG = str(REPO / "deploy" / "models.config")


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in ENV.items() if not k.endswith("_AUTH_TOKENS")}
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=90,
    )


@pytest.fixture
def taken_port():
    """A port some other socket holds: a start would fail there, a check does not."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def trainer_check(tmp_path, *flags: str, env=None) -> subprocess.CompletedProcess:
    roots = [f"--{name}={tmp_path / name}" for name in ("data-root", "model-root", "state-dir")]
    return run("trainer.cli", "serve", *roots, *flags, "--check", env=env)


def test_trainer_check_applies_the_off_loopback_token_rule_and_binds_nothing(tmp_path, taken_port):
    refused = trainer_check(tmp_path, "--host=0.0.0.0", "--port=50052")
    assert refused.returncode == 2
    assert "refusing to bind 0.0.0.0" in refused.stderr and "TRAINER_AUTH_TOKENS" in refused.stderr
    ok = trainer_check(
        tmp_path, "--host=0.0.0.0", f"--port={taken_port}", env={"TRAINER_AUTH_TOKENS": "t1,t2"}
    )
    assert ok.returncode == 0, ok.stderr
    assert f"0.0.0.0:{taken_port}" in ok.stdout and "tokens on" in ok.stdout
    assert trainer_check(tmp_path, f"--port={taken_port}").returncode == 0  # loopback: no token needed
    # Nothing was created or started.
    assert not any(tmp_path.iterdir())


def test_trainer_check_reads_token_and_tls_files(tmp_path):
    empty = tmp_path / "tokens"
    empty.write_text("# no token\n")
    result = trainer_check(tmp_path / "r", "--host=0.0.0.0", f"--auth-tokens-file={empty}")
    assert result.returncode == 2 and "holds no token" in result.stderr
    result = trainer_check(
        tmp_path / "r", f"--tls-cert={tmp_path / 'no.crt'}", f"--tls-key={tmp_path / 'no.key'}"
    )
    assert result.returncode == 1 and "cannot read the TLS" in result.stderr


def test_labeler_check_validates_config_tokens_and_tls(tmp_path, taken_port):
    ok = run(
        "labeler.cli",
        "serve",
        f"--config={DEPLOY_CONFIG}",
        "--host=0.0.0.0",
        f"--port={taken_port}",
        "--check",
        env={"LABELER_AUTH_TOKENS": "t"},
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 label(s)" in ok.stdout and "tokens on" in ok.stdout
    bad = tmp_path / "bad.textproto"
    bad.write_text('labels { label: "x" model: "" }\n')
    assert run("labeler.cli", "serve", f"--config={bad}", "--check").returncode == 2
    tls = run("labeler.cli", "serve", f"--config={DEPLOY_CONFIG}", f"--tls-cert={tmp_path}/x", "--check")
    assert tls.returncode == 1 and "--tls-key" in tls.stderr


def test_modelserver_check_validates_flags_and_config(tmp_path, taken_port):
    ok = run("modelserver.cli", f"--port={taken_port}", f"--model_config_file={MODELS_CONFIG}", "--check")
    assert ok.returncode == 0, ok.stderr
    assert "4 model(s)" in ok.stdout
    rest = run("modelserver.cli", f"--model_config_file={MODELS_CONFIG}", "--rest_api_port=8501", "--check")
    assert rest.returncode == 1 and "rest_api_port" in rest.stderr
    broken = tmp_path / "models.config"
    broken.write_text("model_config_list { config { name: 'm' } ")
    assert run("modelserver.cli", f"--model_config_file={broken}", "--check").returncode == 1
