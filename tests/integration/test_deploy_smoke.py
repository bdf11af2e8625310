"""The shipped deploy starts: every Docker Compose service and every workload
of the rendered kustomize output (the base and the production overlay) runs
as its file says and passes its probes, without a container engine
(tests/support/deploy_stack.py says how a container is stood in for).

For each deployment:
1. the tokens are made as docs/deploy.md says (deploy/make-tokens.sh) and the
   Kubernetes Secrets from them as its ``kubectl create secret`` lines say;
2. every command runs exactly as written (0.0.0.0 and the ports included)
   with ``--check``: a server that would refuse to start fails the test with
   the workload's name;
3. then all of them start together on loopback, the model repository volume
   holding the tests' small trained models; every probe (gRPC health with no
   metadata and the probe's service, TCP, the Compose healthcheck and exec
   commands) must pass within its window (start period, failure threshold);
4. one Classify through the Labeler and one Start through the Trainer with
   the deployment's token (and neither without it).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import time

import grpc
import kubernetes_validate
import pytest
import yaml

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc.security import ClientSecurity, TlsFiles, open_channel
from tests.support import deploy_manifests as dm
from tests.support import deploy_stack as ds
from tests.support.labeler_support import EXAMPLE
from tests.support.pki import Pki, make_pki
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

DOCS = dm.REPO / "docs" / "deploy.md"
# k8s-production-tls: the production overlay with the TLS component
# (deploy/k8s/components/tls), as docs/deploy.md turns it on.
# k8s-production-ray: the production overlay with the Ray component
# (deploy/k8s/ray), as docs/deploy.md writes it; checked, not started (its
# Trainer needs the Ray cluster, which tests/integration/test_trainer_ray.py runs).
DEPLOYMENTS = ["compose", "k8s-base", "k8s-production", "k8s-production-tls", "k8s-production-ray"]
CHECKED_ONLY = {"k8s-production-ray"}
TLS_SECRETS = ("labeler-tls", "trainer-tls")
pytestmark = [pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory) -> pathlib.Path:
    """A copy of deploy/ with the operator's token files made as the docs say."""
    copy = tmp_path_factory.mktemp("deploy-copy") / "deploy"
    shutil.copytree(
        dm.DEPLOY, copy, ignore=shutil.ignore_patterns("secrets", "grafana", "prometheus", "__pycache__")
    )
    if (copy / "make-tokens.sh").exists():
        subprocess.run(["bash", str(copy / "make-tokens.sh")], check=True, capture_output=True, timeout=30)
    return copy


def documented_secrets(copy: pathlib.Path) -> dict[str, dict[str, str]]:
    """The Secrets docs/deploy.md creates: ``kubectl ... create secret generic
    NAME --from-env-file=deploy/...`` read from the copy's files."""
    secrets = {}
    for name, path in re.findall(r"create secret generic (\S+) --from-env-file=(\S+)", DOCS.read_text()):
        secrets[name] = dm.read_env_file(copy / pathlib.Path(path).relative_to("deploy"))
    return secrets


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_secrets(pki: Pki) -> dict[str, dict[str, str]]:
    """The TLS Secrets docs/deploy.md makes (tls.crt naming localhost, tls.key, ca.crt)."""
    files = {"tls.crt": "server.pem", "tls.key": "server.key", "ca.crt": "ca.pem"}
    data = {key: pathlib.Path(pki.path(name)).read_text() for key, name in files.items()}
    return {name: data for name in TLS_SECRETS}


def workloads(deployment: str, copy: pathlib.Path, tmp: pathlib.Path, pki: Pki):
    if deployment == "compose":
        return dm.compose_workloads(copy), dm.compose_names(copy)
    images = dm.images_from_compose(yaml.safe_load((copy / "compose.yaml").read_text()), copy)
    secrets = documented_secrets(copy)
    if deployment == "k8s-base":
        target = base_overlay(copy, tmp / "base-overlay")
    elif deployment == "k8s-production-tls":
        target = tmp / "tls-overlay"
        target.mkdir()
        kustomization = {
            "resources": [os.path.relpath(copy, target)],
            "components": [os.path.relpath(copy / "k8s" / "components" / "tls", target)],
        }
        (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        secrets.update(tls_secrets(pki))
    elif deployment == "k8s-production-ray":
        target = tmp / "ray-overlay"
        target.mkdir()
        kustomization = {
            "resources": [os.path.relpath(copy, target)],
            "components": [os.path.relpath(copy / "k8s" / "ray", target)],
        }
        (target / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    else:
        target = copy
    objects = dm.render(target)
    for obj in objects:
        if obj["kind"] == "RayCluster":
            continue  # a custom resource (KubeRay): tests/unit/test_deploy.py checks it field by field
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{deployment}: {obj['kind']}/{obj['metadata']['name']} is invalid: {exc}")
    found = dm.k8s_workloads(objects, images, secrets)
    return found, dm.k8s_names(objects, found)


def base_overlay(copy: pathlib.Path, where: pathlib.Path) -> pathlib.Path:
    """The base as every overlay uses it: the base declares the ConfigMap
    empty and an overlay merges the files in (the production overlay's list)."""
    production = yaml.safe_load((copy / "kustomization.yaml").read_text())
    (generator,) = [g for g in production["configMapGenerator"] if g["name"] == "text-labeler-config"]
    where.mkdir()
    for file in generator["files"]:
        shutil.copy(copy / file, where / file)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(copy / "k8s" / "base", where)],
        "configMapGenerator": [
            {"name": "text-labeler-config", "behavior": "merge", "files": generator["files"]}
        ],
    }
    (where / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return where


STARTED: set[frozenset] = set()


def same_run(w: dm.Workload) -> dm.Workload:
    """What a start depends on: the image by repository (not registry), the
    ConfigMap by content (its generated name carries a hash of labels too)."""
    mounts = tuple(dataclasses.replace(m, source="") if m.kind == "configMap" else m for m in w.mounts)
    return dataclasses.replace(w, image=dm.repository(w.image), mounts=mounts)


def serve_container(stack: ds.Stack, program: str) -> ds.Container:
    (found,) = [c for c in stack.containers.values() if c.workload.argv[:2] == (program, "serve")] or [None]
    assert found is not None, f"no workload runs `{program} serve`"
    return found


def flag(container: ds.Container, name: str) -> str:
    for arg in container.workload.argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{container.workload.name}: no --{name}=")


def token(container: ds.Container, variable: str) -> str:
    env = dict(container.workload.env)
    assert env.get(variable), f"{container.workload.name}: ${variable} is not set"
    return env[variable].split(",")[0].strip()


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_deployment_runs_as_written_and_passes_its_probes(
    deployment, deploy_copy, pki, trained_model_root, sample_corpus, tmp_path
):
    found, names = workloads(deployment, deploy_copy, tmp_path, pki)
    stack = ds.Stack(found, names, tmp_path / "run")
    stack.check()
    if deployment in CHECKED_ONLY:
        return
    # The production overlay changes the images' registry, replica counts and
    # resources: its workloads run what the base's do. A stack that runs the
    # same as one already started in this session is not started again (CI time).
    signature = frozenset(map(same_run, found))
    if signature in STARTED:
        return
    STARTED.add(signature)

    labeler, trainer = serve_container(stack, "labeler"), serve_container(stack, "trainer")
    # The model repository (one volume for every workload) holds the small
    # trained models; the Trainer's data root the sample corpus.
    models = labeler.host_path(dict(labeler.workload.env)["LABELER_MODEL_ROOT"])
    shutil.copytree(trained_model_root, models, dirs_exist_ok=True)
    data = trainer.host_path(flag(trainer, "data-root")) / "sample"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample_corpus.train, data / "train.jsonl")

    try:
        stack.start()
        stack.wait_healthy()
        labeler_target = f"127.0.0.1:{labeler.ports[int(flag(labeler, 'port'))]}"
        labeler_client = client(labeler, pki, token(labeler, "LABELER_AUTH_TOKENS"))
        with open_channel(labeler_target, labeler_client) as ch:
            reply = labeler_pb2_grpc.LabelerStub(ch).Classify(
                labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=30
            )
        assert not reply.failures, reply
        assert "影视" in {score.label for score in reply.labels}, reply
        with open_channel(labeler_target, client(labeler, pki)) as ch, pytest.raises(grpc.RpcError) as denied:
            labeler_pb2_grpc.LabelerStub(ch).Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=30)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grpcurl_as_documented(labeler_target, labeler_client)

        trainer_target = f"127.0.0.1:{trainer.ports[int(flag(trainer, 'port'))]}"
        with open_channel(trainer_target, client(trainer, pki, token(trainer, "TRAINER_AUTH_TOKENS"))) as ch:
            stub = trainer_pb2_grpc.TrainerStub(ch)
            job = stub.Start(trainer_pb2.StartRequest(model="movie", label="影视"), timeout=30).job
            assert job.job_id and job.model == "movie"
            stub.Kill(trainer_pb2.KillRequest(job_id=job.job_id), timeout=60)
            # A running job comes back STOPPING; its process tree ends in the background.
            for _ in range(600):
                ended = stub.Status(trainer_pb2.StatusRequest(job_id=job.job_id), timeout=30).job
                if ended.state == trainer_pb2.JOB_STATE_KILLED:
                    break
                time.sleep(0.1)
            assert ended.state == trainer_pb2.JOB_STATE_KILLED, ended
        with open_channel(trainer_target, client(trainer, pki)) as ch, pytest.raises(grpc.RpcError) as denied:
            trainer_pb2_grpc.TrainerStub(ch).List(trainer_pb2.ListRequest(), timeout=30)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stack.stop()


def client(server: ds.Container, pki: Pki, bearer: str = "") -> ClientSecurity:
    """TLS (trusting the test CA) when the server's args turn it on, and the token."""
    tls = any(arg.startswith("--tls-cert=") for arg in server.workload.argv)
    return ClientSecurity(tls=TlsFiles(ca=pki.path("ca.pem")) if tls else TlsFiles(), token=bearer)


def grpcurl_as_documented(target: str, security: ClientSecurity) -> None:
    """docs/deploy.md's grpcurl calls: reflection (and so even a health check)
    needs the token; with the proto files the call needs only the token."""
    bearer = security.token
    transport = ["-cacert", security.tls.ca] if security.tls.enabled else ["-plaintext"]

    def grpcurl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(dm.BIN / "grpcurl"), *transport, *args],
            capture_output=True,
            text=True,
            cwd=dm.REPO,
            timeout=60,
        )

    header = f"authorization: Bearer {bearer}"
    health = grpcurl("-H", header, target, "grpc.health.v1.Health/Check")
    assert health.returncode == 0 and '"SERVING"' in health.stdout, health.stderr
    live = grpcurl("-H", header, "-d", '{"service": "liveness"}', target, "grpc.health.v1.Health/Check")
    assert live.returncode == 0 and '"SERVING"' in live.stdout, live.stderr
    no_token = grpcurl(target, "grpc.health.v1.Health/Check")
    assert no_token.returncode != 0 and "failed to query for service descriptor" in no_token.stderr
    words = '{"words": ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]}'
    proto = ["-import-path", "protos", "-proto", "labeler/v1/labeler.proto"]
    classify = grpcurl(*proto, "-H", header, "-d", words, target, "labeler.v1.Labeler/Classify")
    assert classify.returncode == 0 and "影视" in classify.stdout, classify.stderr
