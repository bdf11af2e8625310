"""The Go, Java and Python example clients and grpcurl against the running
stack: a labeler-modelserver serving the four sample models, a Labeler in
front of it and a Trainer with one finished job, all real servers on
127.0.0.1:0. Each client labels the old system's example as 影视, lists the
labels and the Trainer's jobs, and gets the Labeler's INVALID_ARGUMENT with
its message intact.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import grpc
import pytest

from labeler.v1 import labeler_pb2
from tests.support.interop_support import client_argv
from tests.support.labeler_support import (
    EXAMPLE,
    SAMPLE_LABELS,
    BackgroundLoop,
    ModelServer,
    labeler_config,
    stub,
)
from tests.support.trainer_support import make_config, running_trainer
from trainer.v1 import trainer_pb2

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow, pytest.mark.interop]

GRPCURL = pathlib.Path(sys.executable).parent / "grpcurl"
CLIENTS = ["go", "java", "python"]


class Stack:
    def __init__(self, labeler: str, trainer: str, job: trainer_pb2.Job) -> None:
        self.labeler = labeler
        self.trainer = trainer
        self.job = job


@pytest.fixture(scope="module")
def stack(trained_model_root, tmp_path_factory):
    from labeler.server import create_server

    loop = BackgroundLoop()
    model_server = loop.run(ModelServer(trained_model_root, SAMPLE_LABELS).start())
    config = labeler_config(trained_model_root, {m: model_server.target for m in SAMPLE_LABELS})
    server = loop.run(create_server(config))
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(120)), "the Labeler never loaded every model"
        # A Trainer with one finished job (a recipe without TensorFlow), so List and Status have something to show.
        with running_trainer(make_config(tmp_path_factory.mktemp("trainer"))) as trainer:
            job = trainer.wait(trainer.start(model="movie", label="影视").job_id)
            assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.reason
            yield Stack(f"127.0.0.1:{port}", trainer.target, job)
    finally:
        loop.run(server.stop(None))
        loop.run(model_server.stop())
        loop.close()


def run(argv: list[str], token: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TEXT_LABELER_TOKEN"}
    if token:
        env["TEXT_LABELER_TOKEN"] = token
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("language", CLIENTS)
def test_client_labels_the_example_and_reads_the_trainer(stack, language):
    proc = run([*client_argv(language, stack.labeler, stack.trainer), *EXAMPLE])
    assert proc.returncode == 0, f"{language} client failed:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    labels = {line.split()[1]: line for line in lines if line.startswith("label ")}
    assert set(labels) == set(SAMPLE_LABELS.values())
    assert all("state=AVAILABLE" in line for line in labels.values())
    found = {line.split()[1]: float(line.split()[2]) for line in lines if line.startswith("classify ")}
    assert "影视" in found and found["影视"] >= 0.5 and "美妆" not in found
    assert f"job {stack.job.job_id} model=movie state=SUCCEEDED" in lines
    status = next(line for line in lines if line.startswith("status "))
    assert status.startswith(f"status {stack.job.job_id} state=SUCCEEDED epoch=")


@pytest.mark.parametrize("language", CLIENTS)
def test_client_gets_invalid_argument_with_its_message(stack, language):
    channel, labeler = stub(int(stack.labeler.rsplit(":", 1)[1]))
    with channel, pytest.raises(grpc.RpcError) as direct:
        labeler.Classify(labeler_pb2.ClassifyRequest(words=[]), timeout=10)
    assert direct.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    proc = run(client_argv(language, stack.labeler))  # no words
    assert proc.returncode == 3, f"{language}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    # Go's codes.InvalidArgument and Java's Status.Code.INVALID_ARGUMENT, named canonically, same message.
    assert proc.stderr.strip() == f"error: INVALID_ARGUMENT: {direct.value.details()}"


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return run([str(GRPCURL), "-plaintext", *args])


def test_grpcurl_lists_and_describes_through_reflection(stack):
    listed = grpcurl(stack.labeler, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"labeler.v1.Labeler", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(stack.labeler, "describe", "labeler.v1.Labeler")
    assert described.returncode == 0, described.stderr
    for rpc in ("Classify", "ClassifyBatch", "ListLabels"):
        assert f"rpc {rpc} ( .labeler.v1." in described.stdout
    trainer = grpcurl(stack.trainer, "list", "trainer.v1.Trainer")
    assert trainer.returncode == 0 and "trainer.v1.Trainer.Watch" in trainer.stdout


def test_grpcurl_classify_with_a_json_body(stack):
    body = json.dumps({"words": EXAMPLE}, ensure_ascii=False)
    proc = grpcurl("-d", body, stack.labeler, "labeler.v1.Labeler/Classify")
    assert proc.returncode == 0, proc.stderr
    labels = {entry["label"] for entry in json.loads(proc.stdout).get("labels", [])}
    assert "影视" in labels and "美妆" not in labels
    status = grpcurl(
        "-d", json.dumps({"jobId": stack.job.job_id}), stack.trainer, "trainer.v1.Trainer/Status"
    )
    assert status.returncode == 0 and json.loads(status.stdout)["job"]["state"] == "JOB_STATE_SUCCEEDED"
    bad = grpcurl("-d", "{}", stack.labeler, "labeler.v1.Labeler/Classify")
    assert bad.returncode != 0 and "Code: InvalidArgument" in bad.stderr


def healthcheck(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "rpc.healthcheck", *args])


def test_container_healthcheck_follows_readiness_while_liveness_stays_up(stack, trained_model_root):
    from labeler.server import create_server

    assert healthcheck(stack.labeler).returncode == 0
    assert healthcheck(stack.trainer, "--service", "trainer.v1.Trainer").returncode == 0
    # A Labeler whose model server is gone: not ready, yet alive (Kubernetes must not restart it).
    loop = BackgroundLoop()
    try:
        config = labeler_config(trained_model_root, {"movie": "127.0.0.1:1"})
        server = loop.run(create_server(config))
        port = server.port
        try:
            unready = healthcheck(f"127.0.0.1:{port}", "--timeout", "5")
            assert unready.returncode == 1 and "not serving: NOT_SERVING" in unready.stderr
            assert healthcheck(f"127.0.0.1:{port}", "--service", "liveness").returncode == 0
        finally:
            loop.run(server.stop(None))
    finally:
        loop.close()
    gone = healthcheck("127.0.0.1:1", "--timeout", "2")
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stderr


@pytest.fixture(scope="module")
def tls_labeler(trained_model_root, tmp_path_factory):
    """A Labeler serving TLS (a certificate for 127.0.0.1 from a test CA made
    with openssl) that requires a bearer token."""
    from labeler.server import create_server
    from rpc.security import ServerSecurity, TlsFiles

    pki = tmp_path_factory.mktemp("pki")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for argv in (
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=text-labeler-test-CA",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    ):
        subprocess.run(["openssl", *argv.split()], cwd=pki, check=True, capture_output=True, timeout=60)
    loop = BackgroundLoop()
    model_server = loop.run(ModelServer(trained_model_root, ["movie"]).start())
    security = ServerSecurity(
        TlsFiles(cert=str(pki / "server.pem"), key=str(pki / "server.key")), frozenset({"s3cret"})
    )
    server = loop.run(
        create_server(labeler_config(trained_model_root, {"movie": model_server.target}), security=security)
    )
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(120))
        yield f"127.0.0.1:{port}", pki / "ca.pem"
    finally:
        loop.run(server.stop(None))
        loop.run(model_server.stop())
        loop.close()


@pytest.mark.parametrize("language", CLIENTS)
def test_client_over_tls_with_a_bearer_token(tls_labeler, language):
    target, ca = tls_labeler
    ca_flag = "-ca" if language == "go" else "--ca"
    argv = [*client_argv(language, target), ca_flag, str(ca)]
    proc = run([*argv, *EXAMPLE], token="s3cret")
    assert proc.returncode == 0, f"{language}:\n{proc.stdout}\n{proc.stderr}"
    assert any(line.startswith("classify 影视 ") for line in proc.stdout.splitlines())
    refused = run([*argv, *EXAMPLE], token="wrong")
    assert refused.returncode == 3 and refused.stderr.startswith(
        "error: UNAUTHENTICATED: missing or invalid bearer token"
    )


def test_every_grpcurl_example_in_the_docs_works(stack):
    """Each line of the grpcurl block in docs/clients.md, run against the real servers."""
    import re
    import shlex

    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs/clients.md").read_text()
    block = re.search(r"<!-- grpcurl-examples:start -->\n```bash\n(.*?)```", docs, re.S).group(1)
    commands = [line for line in block.splitlines() if line.startswith("grpcurl ")]
    methods = {m.split("/")[-1] for line in commands for m in re.findall(r"\S+/\w+$", line)}
    assert {"Classify", "ClassifyBatch", "ListLabels", "Start", "Status", "Kill", "List", "Watch"} <= methods
    host = {"localhost:50051": stack.labeler, "localhost:50052": stack.trainer}
    for line in commands:
        argv = [host.get(arg, arg).replace("JOB_ID", stack.job.job_id) for arg in shlex.split(line)]
        proc = run([str(GRPCURL), *argv[1:]])
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
