"""TLS, mutual TLS, bearer tokens and per-connection limits on the three
servers, their command-line clients and the Labeler's client to the model
server, with certificates made by openssl at test time (tests/support/pki.py).

The secured stack (conftest.secure_stack) runs ``labeler-modelserver``
requiring mutual TLS and ``labeler serve`` requiring TLS and a token, the
Labeler reaching the model server with the client certificate from its
config: every test that uses it also proves that wiring."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2

from labeler.config import ConfigError, validate
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc import security
from rpc.security import ClientSecurity, ServerSecurity, TlsFiles, open_channel
from tests.reliability.conftest import TOKEN
from tests.support.labeler_support import EXAMPLE, BackgroundLoop, labeler_config, wait_until
from tests.support.procs import ENV, health
from tests.support.trainer_support import make_config, write_spec
from tfserving.protos import get_model_status_pb2, model_service_pb2_grpc
from trainer.server import create_server as create_trainer
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.timeout(180)
CODE = grpc.StatusCode
S = trainer_pb2
DENIED = "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'"


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


# -- the Labeler: TLS and a token ------------------------------------------------------------


def labeler_call(target: str, client: ClientSecurity, method: str = "ListLabels"):
    with open_channel(target, client) as channel:
        stub = labeler_pb2_grpc.LabelerStub(channel)
        if method == "ListLabels":
            return stub.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=10)
        return stub.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)


def test_the_labeler_serves_only_tls_with_a_valid_token(secure_stack, pki):
    target, ca = secure_stack.labeler.target, pki.path("ca.pem")
    reply = labeler_call(target, ClientSecurity(TlsFiles(ca=ca), token=TOKEN), "Classify")
    assert reply.labels[0].label == "影视" and not reply.failures
    refusals = {
        "plaintext": ClientSecurity(token=TOKEN),
        "a server from another CA": ClientSecurity(TlsFiles(ca=pki.path("other-ca.pem")), token=TOKEN),
    }
    for why, client in refusals.items():
        code, details = code_of(lambda: labeler_call(target, client))
        assert code == CODE.UNAVAILABLE, (why, details)
    for token in ("", "wrong", TOKEN + "x", TOKEN[:-1]):
        code, details = code_of(
            lambda: labeler_call(target, ClientSecurity(TlsFiles(ca=ca), token=token), "Classify")
        )
        assert (code, details) == (
            CODE.UNAUTHENTICATED,
            DENIED + " with a token from the server's token file",
        )
    with open_channel(target, ClientSecurity(TlsFiles(ca=ca))) as channel:  # no token
        # Probes carry no token: health stays open, and says nothing else.
        assert health(channel, "labeler.v1.Labeler") == health_pb2.HealthCheckResponse.SERVING
        # Reflection (a bidirectional stream) describes the API only to callers with a token.
        info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        code, details = code_of(lambda: list(info(iter([b"\x3a\x00"]), timeout=10)))
        assert code == CODE.UNAUTHENTICATED and DENIED in details


def labeler_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labeler.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, **(env or {})},
    )


def test_the_labeler_command_line_client_over_tls_with_a_token(secure_stack, pki):
    target, ca = secure_stack.labeler.target, pki.path("ca.pem")
    ok = labeler_cli("classify", *EXAMPLE, "--target", target, "--tls-ca", ca, "--token", TOKEN)
    assert ok.returncode == 0 and ok.stdout.startswith("影视\t"), ok.stderr
    from_env = labeler_cli("labels", "--target", target, "--tls-ca", ca, env={"TEXT_LABELER_TOKEN": TOKEN})
    assert from_env.returncode == 0 and from_env.stdout.count("AVAILABLE") == 4, from_env.stderr
    denied = labeler_cli("classify", *EXAMPLE, "--target", target, "--tls-ca", ca, "--token", "nope")
    assert denied.returncode == 3 and denied.stderr.startswith(
        "error: UNAUTHENTICATED: missing or invalid bearer"
    )
    missing = labeler_cli("labels", "--target", target, "--tls-ca", "/nonexistent/ca.pem")
    assert missing.returncode == 2 and "cannot read the server CA '/nonexistent/ca.pem'" in missing.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--auth-tokens-file", "EMPTY"], "holds no token; put one token per line"),
        (
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            "cannot read the TLS key",
        ),
        (["--tls-client-ca", "CA"], "TLS needs both --tls-cert and --tls-key"),
    ],
)
def test_labeler_serve_refuses_to_start_with_broken_security(pki, tmp_path, flags, says):
    empty = tmp_path / "tokens"
    empty.write_text("# nothing but a comment\n\n")
    config = tmp_path / "labeler.textproto"
    config.write_text('labels { label: "影视" model: "movie" target: "127.0.0.1:1" }\n')
    flags = [str(empty) if f == "EMPTY" else pki.path("ca.pem") if f == "CA" else f for f in flags]
    proc = labeler_cli("serve", "--config", str(config), "--port", "0", *flags)
    assert proc.returncode == 1 and says in proc.stderr, proc.stderr


def test_tokens_come_from_a_file_and_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "tokens"
    path.write_text("# comment\n  first  \n\nsecond\n")
    monkeypatch.setenv("SOME_TOKENS", "third, fourth ,")
    assert security.load_tokens(str(path), "SOME_TOKENS") == {"first", "second", "third", "fourth"}
    with pytest.raises(ValueError, match="printable and contain no spaces"):
        path.write_text("two words\n")
        security.load_tokens(str(path))
    assert security.load_tokens("", "UNSET_TOKENS_VARIABLE") == frozenset()


# -- the model server: mutual TLS, and the Labeler's client to it ----------------------------


def model_status(target: str, tls: TlsFiles):
    with open_channel(target, ClientSecurity(tls)) as channel:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "movie"})
        return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)


def test_the_model_server_requires_a_client_certificate_from_its_ca(secure_stack, pki):
    target = secure_stack.modelserver.target
    assert (
        model_status(target, pki.client).model_version_status[0].state
        == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    for why, tls in {
        "no client certificate": TlsFiles(ca=pki.path("ca.pem")),
        "a certificate from another CA": pki.impostor,
        "plaintext": TlsFiles(),
    }.items():
        code, details = code_of(lambda: model_status(target, tls))
        assert code == CODE.UNAVAILABLE, (why, details)
    # The container health check can speak mutual TLS too.
    check = [sys.executable, "-m", "rpc.healthcheck", target, "--tls-ca", pki.path("ca.pem")]
    assert (
        subprocess.run(
            [*check, "--tls-cert", pki.client.cert, "--tls-key", pki.client.key],
            capture_output=True,
            env=ENV,
            timeout=60,
        ).returncode
        == 0
    )
    assert subprocess.run(check, capture_output=True, env=ENV, timeout=60).returncode == 1


def test_a_labeler_without_the_client_certificate_cannot_use_the_model_server(secure_stack, pki):
    from labeler.server import create_server

    config = labeler_config(secure_stack.model_root, {"movie": secure_stack.modelserver.target}, poll_ms=200)
    config.model_server_tls.ca_file = pki.path("ca.pem")  # TLS, but no client certificate
    loop = BackgroundLoop()
    server = loop.run(create_server(config))
    port = server.port
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            labeler = labeler_pb2_grpc.LabelerStub(channel)

            def movie():
                [info] = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                return info if info.message.startswith("GetModelStatus failed: UNAVAILABLE") else None

            info = wait_until(movie, 30, what="the refused handshake to show")
            assert info.state == labeler_pb2.LABEL_STATE_UNAVAILABLE and info.model_version == 0
    finally:
        loop.run(server.stop(None))
        loop.close()


def test_model_server_tls_in_the_labeler_config_is_checked(pki):
    config = labeler_config("/tmp", {"movie": "127.0.0.1:8500"})
    config.model_server_tls.cert_file = pki.client.cert
    with pytest.raises(
        ConfigError, match="model_server_tls: a client certificate needs both cert_file and key_file"
    ):
        validate(config)
    config.model_server_tls.key_file = pki.client.key
    config.model_server_tls.ca_file = "/nonexistent/ca.pem"
    with pytest.raises(ConfigError, match="model_server_tls.ca_file: cannot read '/nonexistent/ca.pem'"):
        validate(config)
    config.model_server_tls.ca_file = pki.path("ca.pem")
    assert validate(config).model_server_tls == ClientSecurity(pki.client)
    config.ClearField("model_server_tls")
    assert validate(config).model_server_tls is None  # plaintext unless configured


def test_labeler_modelserver_refuses_half_a_tls_configuration(pki):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelserver.cli",
            "--model_base_path=/nonexistent",
            "--port=0",
            f"--tls-cert={pki.client.cert}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert proc.returncode == 1 and "TLS needs both --tls-cert and --tls-key" in proc.stderr, proc.stderr
    assert "tensorflow" not in proc.stderr.lower()  # it failed before loading anything


# -- the Trainer: never open off loopback --------------------------------------------------


@contextlib.contextmanager
def secured_trainer(config, server_security: ServerSecurity):
    loop = BackgroundLoop()
    try:
        server = loop.run(create_trainer(config, security=server_security))
        port = server.port
        try:
            yield port
        finally:
            loop.run(server.stop(1.0))
    finally:
        loop.close()


def test_the_trainer_refuses_to_listen_off_loopback_without_tokens(tmp_path):
    config = make_config(tmp_path, host="0.0.0.0")
    loop = BackgroundLoop()
    try:
        with pytest.raises(
            ValueError, match="refusing to bind 0.0.0.0: the Trainer accepts calls from other machines"
        ):
            loop.run(create_trainer(config))
    finally:
        loop.close()
    assert not config.state_dir.exists()  # nothing was started
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.cli",
            "serve",
            "--host",
            "::",
            "--port",
            "0",
            "--data-root",
            str(tmp_path / "d"),
            "--model-root",
            str(tmp_path / "m"),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in ENV.items() if k != "TRAINER_AUTH_TOKENS"},
    )
    assert proc.returncode == 2
    assert (
        "refusing to bind ::" in proc.stderr
        and "--auth-tokens-file" in proc.stderr
        and "TRAINER_AUTH_TOKENS" in proc.stderr
    )


def test_a_trainer_on_every_interface_requires_mutual_tls_and_a_token(tmp_path, pki):
    config = make_config(tmp_path, host="0.0.0.0")
    write_spec(config.data_root, "slow.json", epoch_s=30)
    with secured_trainer(config, pki.server_security(tokens=["t1", "t2"])) as port:
        target = f"127.0.0.1:{port}"
        with open_channel(target, pki.client_security("t2")) as channel:
            trainer = trainer_pb2_grpc.TrainerStub(channel)
            job = trainer.Start(S.StartRequest(model="movie", label="影视"), timeout=10).job
            assert [j.job_id for j in trainer.List(S.ListRequest(), timeout=10).jobs] == [job.job_id]
            events = list(trainer.Watch(S.WatchRequest(job_id=job.job_id), timeout=30))
            assert events[-1].job.state == S.JOB_STATE_SUCCEEDED
        with open_channel(target, pki.client_security("")) as channel:  # no token
            trainer = trainer_pb2_grpc.TrainerStub(channel)
            for call in (
                lambda: trainer.Start(S.StartRequest(model="star", label="明星"), timeout=10),
                lambda: trainer.Kill(S.KillRequest(job_id=job.job_id), timeout=10),
                lambda: list(trainer.Watch(S.WatchRequest(job_id=job.job_id), timeout=10)),
            ):
                code, details = code_of(call)
                assert code == CODE.UNAUTHENTICATED and DENIED in details
            assert health(channel, "trainer.v1.Trainer") == health_pb2.HealthCheckResponse.SERVING
        for tls in (TlsFiles(ca=pki.path("ca.pem")), pki.impostor):  # no certificate, or a stranger's
            with open_channel(target, pki.client_security("t1", tls)) as channel:
                code, _ = code_of(
                    lambda: trainer_pb2_grpc.TrainerStub(channel).List(S.ListRequest(), timeout=10)
                )
                assert code == CODE.UNAVAILABLE

        trainer_cli = [
            sys.executable,
            "-m",
            "trainer.cli",
            "list",
            "--target",
            target,
            "--tls-ca",
            pki.path("ca.pem"),
            "--tls-cert",
            pki.client.cert,
            "--tls-key",
            pki.client.key,
        ]
        listed = subprocess.run(
            trainer_cli, capture_output=True, text=True, timeout=60, env={**ENV, "TRAINER_TOKEN": "t1"}
        )
        assert listed.returncode == 0 and job.job_id in listed.stdout, listed.stderr
        denied = subprocess.run(
            [*trainer_cli, "--token", "t3"], capture_output=True, text=True, timeout=60, env=ENV
        )
        assert denied.returncode == 1 and denied.stderr.startswith(
            "trainer: UNAUTHENTICATED: missing or invalid"
        )
    # Nothing but the one authorised job was ever queued.
    assert len(list((config.state_dir / "logs").iterdir())) == 1


def test_the_trainer_limits_message_size_and_streams_per_connection(tmp_path):
    config = make_config(tmp_path)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30)
    limits = ServerSecurity(max_message_bytes=4096, max_concurrent_streams=1)
    with secured_trainer(config, limits) as port:
        target = f"127.0.0.1:{port}"
        # Its own subchannel pool: otherwise the two channels share one connection.
        separate = [("grpc.use_local_subchannel_pool", 1)]
        with (
            grpc.insecure_channel(target) as first,
            grpc.insecure_channel(target, options=separate) as second,
        ):
            trainer = trainer_pb2_grpc.TrainerStub(first)
            code, details = code_of(
                lambda: trainer.Start(
                    S.StartRequest(model="movie", label="影视", idempotency_key="k" * 5000), timeout=10
                )
            )
            assert (
                code == CODE.RESOURCE_EXHAUSTED
                and "Received message larger than max (" in details
                and "vs. 4096)" in details
            )
            job = trainer.Start(S.StartRequest(model="movie", label="影视", corpus=slow), timeout=10).job
            watch = trainer.Watch(S.WatchRequest(job_id=job.job_id))  # holds the connection's only stream
            next(watch)
            # A second call on the same connection waits for a free stream...
            code, _ = code_of(lambda: trainer.List(S.ListRequest(), timeout=1.0))
            assert code == CODE.DEADLINE_EXCEEDED
            # ...while another connection is served.
            other = trainer_pb2_grpc.TrainerStub(second)
            assert other.Kill(S.KillRequest(job_id=job.job_id), timeout=30).job.state == S.JOB_STATE_STOPPING
            assert list(watch)[-1].job.state == S.JOB_STATE_KILLED  # the stream ends, the stream is free
            assert [j.job_id for j in trainer.List(S.ListRequest(), timeout=10).jobs] == [job.job_id]


def test_server_flags_parse_into_security(tmp_path, monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    security.add_server_security_flags(parser, "TEST_TOKENS")
    monkeypatch.setenv("TEST_TOKENS", "from-env")
    args = parser.parse_args(
        ["--tls-cert", "c", "--tls-key", "k", "--max-message-bytes", "1024", "--max-concurrent-streams", "8"]
    )
    assert security.server_security_from_args(args, "TEST_TOKENS") == ServerSecurity(
        TlsFiles("c", "k", ""), frozenset({"from-env"}), 1024, 8
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-concurrent-streams", "-1"])
    # 0 lifts the limit (the model server's default, as TF Serving has none).
    unlimited = security.server_security_from_args(
        parser.parse_args(["--max-concurrent-streams", "0"]), "TEST_TOKENS"
    )
    assert unlimited.server_options() == []
    assert os.environ["TEST_TOKENS"] == "from-env"
