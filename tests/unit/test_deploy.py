"""The deploy files (Docker Compose, Dockerfiles, Kubernetes) are checked by the
tools that read them, since Docker and a cluster cannot run here: kustomize
renders them, the Kubernetes schemas validate every object, the Compose spec
validates compose.yaml, hadolint and yamllint lint, and the wiring between the
files (config paths, targets, ports, volumes, flags) is checked against the
code that will read them.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from packaging.requirements import Requirement

from labeler.config import ENV_OVERRIDES, Settings, load_settings, validate
from labeler.v1 import config_pb2
from rpc import server as rpc_server
from tfserving.protos import model_server_config_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
BIN = pathlib.Path(sys.executable).parent
# Kubernetes releases the manifests must be valid for: native gRPC probes are GA since 1.27.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SAMPLE_MODELS = {"movie", "beauty", "star", "fashion"}
pytestmark = pytest.mark.timeout(120)


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed; `make venv` installs it (pyproject.toml dev dependencies)")
    return found


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=90, **kwargs)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(path: pathlib.Path) -> list[dict]:
    out = run(tool("kubectl"), "kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def production() -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(DEPLOY)}


def read_labeler_config(path: pathlib.Path) -> config_pb2.LabelerConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), config_pb2.LabelerConfig())


def read_models_config() -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(
        (DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def container_env(obj: dict, container: dict) -> dict[str, str]:
    """The container's environment as the kubelet sets it: the pod's namespace
    from the downward API, $(VAR) references to earlier variables expanded."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"<Secret {ref['name']} key {ref['key']}>"
        elif "valueFrom" in var:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", var
            env[var["name"]] = obj["metadata"]["namespace"]
        else:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
    return env


def labeler_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """deploy/labeler.textproto as the Labeler loads it in a deployment that
    sets ``env``; both overrides must be set, or the local values would leak in."""
    assert set(ENV_OVERRIDES) <= set(env), f"set {sorted(ENV_OVERRIDES)}; got {sorted(env)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(DEPLOY / "labeler.textproto")
    assert {spec.target for spec in settings.labels} == {env["LABELER_DEFAULT_TARGET"]}
    assert settings.model_root == pathlib.Path(env["LABELER_MODEL_ROOT"])
    return settings


def mount_for(obj: dict, container: dict, path: str) -> tuple[dict, dict]:
    """The (volumeMount, volume) whose mountPath is ``path`` or a parent of it."""
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"].get("volumes", [])}
    claims = {c["metadata"]["name"]: c for c in obj["spec"].get("volumeClaimTemplates", [])}
    for m in container["volumeMounts"]:
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
            return m, volumes.get(m["name"]) or {"volumeClaimTemplate": claims[m["name"]]}
    raise AssertionError(f"{obj['metadata']['name']}: nothing is mounted at {path}")


# -- Kubernetes -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["deploy/k8s/base", "deploy"])
def test_kustomize_renders_objects_valid_for_kubernetes(target):
    objects = render(REPO / target)
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "PersistentVolumeClaim",
    } <= kinds
    for obj in objects:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {exc}"
                )


def test_config_map_carries_the_one_models_config(production):
    (cm,) = [o for (kind, _), o in production.items() if kind == "ConfigMap"]
    assert cm["data"]["models.config"] == (DEPLOY / "models.config").read_text()
    assert cm["data"]["tf-serving-ready.sh"] == (DEPLOY / "tf-serving-ready.sh").read_text()
    assert cm["data"]["labeler.textproto"] == (DEPLOY / "labeler.textproto").read_text()
    # Every pod that mounts the config mounts this (hash-named) ConfigMap.
    for (kind, name), obj in production.items():
        for volume in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] == cm["metadata"]["name"], f"{kind}/{name}"


def test_labeler_reaches_every_tf_serving_pod_through_the_headless_service(production):
    service = production[("Service", "tf-serving")]
    assert service["spec"]["clusterIP"] == "None"
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    namespace = service["metadata"]["namespace"]
    labeler = production[("Deployment", "labeler")]
    env = container_env(labeler, containers(labeler)[0])
    assert env["LABELER_DEFAULT_TARGET"] == f"dns:///tf-serving.{namespace}.svc.cluster.local:{grpc_port}"
    tf_serving = production[("Deployment", "tf-serving")]
    assert service["spec"]["selector"].items() <= tf_serving["spec"]["template"]["metadata"]["labels"].items()
    assert flags(containers(tf_serving)[0]["args"])["port"] == str(grpc_port)


def start_tf_serving(config: pathlib.Path, tmp_path: pathlib.Path, *flags: str) -> tuple[list[str], str]:
    """Run tf-serving-start.sh with a stand-in for tensorflow_model_server that
    prints the flags it got and the model config file they name."""
    fake = tmp_path / "fake_model_server"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho ---\ncat "${1#--model_config_file=}"\n')
    fake.chmod(0o755)
    env = {
        **os.environ,
        "TFS_SERVER": str(fake),
        "TFS_RENDERED_CONFIG": str(tmp_path / "rendered.config"),
        "TFS_WATCH_SECONDS": "1",
    }
    out = run("bash", "deploy/tf-serving-start.sh", str(config), *flags, env=env).stdout
    argv, _, rendered = out.partition("---\n")
    return argv.split(), rendered


def test_tf_serving_start_makes_base_paths_absolute_and_follows_changes(tmp_path):
    argv, rendered = start_tf_serving(DEPLOY / "models.config", tmp_path, "--port=8500")
    assert argv == [f"--model_config_file={tmp_path / 'rendered.config'}", "--port=8500"]
    config = text_format.Parse(rendered, model_server_config_pb2.ModelServerConfig())
    # ServerCore's rule without model_config_list_root_dir: every base path absolute.
    expected = {m.name: "/" + m.base_path for m in read_models_config().model_config_list.config}
    assert {m.name: m.base_path for m in config.model_config_list.config} == expected
    # A running server's copy follows edits of the source (TF Serving polls the copy).
    source = tmp_path / "models.config"
    source.write_text((DEPLOY / "models.config").read_text())
    slow = tmp_path / "slow_model_server"
    slow.write_text("#!/bin/sh\nsleep 6\n")
    slow.chmod(0o755)
    rendered_path = tmp_path / "watched.config"
    env = {
        **os.environ,
        "TFS_SERVER": str(slow),
        "TFS_RENDERED_CONFIG": str(rendered_path),
        "TFS_WATCH_SECONDS": "1",
    }
    proc = subprocess.Popen(["bash", "deploy/tf-serving-start.sh", str(source)], cwd=REPO, env=env)
    try:
        wait_for(lambda: rendered_path.exists())
        source.write_text(source.read_text().replace('"var/models/star"', '"var/models/star2"'))
        wait_for(lambda: 'base_path: "/var/models/star2"' in rendered_path.read_text())
    finally:
        proc.kill()
        proc.wait()


def wait_for(condition, attempts: int = 100) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.1)
    assert condition()


def test_tf_serving_finds_models_config_and_model_repository(production, tmp_path):
    tf_serving = production[("Deployment", "tf-serving")]
    (container,) = containers(tf_serving)
    assert container["image"].startswith("tensorflow/serving:") and not container["image"].endswith(":latest")
    assert int(flags(container["args"])["model_config_file_poll_wait_seconds"]) > 0
    shell, script, config_path = container["command"]
    for path, key in [(script, "tf-serving-start.sh"), (config_path, "models.config")]:
        mount, volume = mount_for(tf_serving, container, path)
        assert "configMap" in volume and path == f"{mount['mountPath']}/{key}"
    _, rendered = start_tf_serving(DEPLOY / "models.config", tmp_path)
    for model in text_format.Parse(
        rendered, model_server_config_pb2.ModelServerConfig()
    ).model_config_list.config:
        mount, volume = mount_for(tf_serving, container, model.base_path)
        assert volume["persistentVolumeClaim"]["claimName"] == "model-repository" and mount["readOnly"]
    # The rendered copy goes to /tmp, which must be writable under a read-only root.
    assert "emptyDir" in mount_for(tf_serving, container, "/tmp/models.config")[1]
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[1] == f"{mount_for(tf_serving, container, probe[1])[0]['mountPath']}/tf-serving-ready.sh"


def test_labeler_and_trainer_share_the_model_repository(production, monkeypatch):
    labeler = production[("Deployment", "labeler")]
    trainer = production[("StatefulSet", "trainer")]
    (lc,) = containers(labeler)
    settings = labeler_settings(container_env(labeler, lc), monkeypatch)
    mount, volume = mount_for(labeler, lc, str(settings.model_root))
    assert volume["persistentVolumeClaim"]["claimName"] == "model-repository" and mount["readOnly"]
    config_path = flags(lc["args"])["config"]
    assert "configMap" in mount_for(labeler, lc, config_path)[1]
    (tc,) = containers(trainer)
    targs = flags(tc["args"])
    mount, volume = mount_for(trainer, tc, targs["model-root"])
    assert volume["persistentVolumeClaim"]["claimName"] == "model-repository" and not mount.get("readOnly")
    pvc = production[("PersistentVolumeClaim", "model-repository")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"].get("storageClassName")
    # SQLite and job logs on the Trainer's own ReadWriteOnce volume.
    for key in ("state-dir", "data-root"):
        _, volume = mount_for(trainer, tc, targs[key])
        assert volume["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_probes_autoscaling_and_disruption_budgets(production):
    labeler = production[("Deployment", "labeler")]
    (lc,) = containers(labeler)
    assert lc["readinessProbe"]["grpc"] == {"port": 50051}
    # Liveness must not follow the models: a TF Serving outage makes Labelers unready, not restarted.
    assert lc["livenessProbe"]["grpc"] == {"port": 50051, "service": rpc_server.LIVENESS_SERVICE}
    assert flags(lc["args"])["port"] == "50051"
    hpa = production[("HorizontalPodAutoscaler", "labeler")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "labeler" and "replicas" not in labeler["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    for name in ("labeler", "tf-serving"):
        pdb = production[("PodDisruptionBudget", name)]
        pods = production[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()
    for kind, name in [("Deployment", "labeler"), ("Deployment", "tf-serving"), ("StatefulSet", "trainer")]:
        obj = production[(kind, name)]
        assert obj["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in containers(obj):
            assert set(c["resources"]) == {"requests", "limits"}, f"{name}: requests and limits"
            assert re.search(r":[0-9][\w.-]*$", c["image"]), f"{name}: image {c['image']} is not pinned"


# -- Docker Compose -------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_valid_for_the_compose_spec():
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")


def test_compose_references_files_that_exist(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_compose_wiring_matches_the_code_that_reads_it(compose, tmp_path, monkeypatch):
    services = compose["services"]
    tf = services["tf-serving"]
    assert tf["image"] == f"tensorflow/serving:{tf_serving_tag()}"
    args = flags(tf["command"])
    assert int(args["model_config_file_poll_wait_seconds"]) > 0

    def mounted(service: dict, path: str) -> str:
        for volume in service["volumes"]:
            source, target, *_ = volume.split(":")
            if path == target or path.startswith(target + "/"):
                return source
        raise AssertionError(f"nothing mounted at {path}")

    shell, script, config_path = tf["entrypoint"]
    assert mounted(tf, script) == "./tf-serving-start.sh" and mounted(tf, config_path) == "./models.config"
    _, rendered = start_tf_serving(DEPLOY / "models.config", tmp_path)
    for model in text_format.Parse(
        rendered, model_server_config_pb2.ModelServerConfig()
    ).model_config_list.config:
        assert mounted(tf, model.base_path) == "models"
    assert mounted(tf, tf["healthcheck"]["test"][2]) == "./tf-serving-ready.sh"
    labeler = services["labeler"]
    assert mounted(labeler, flags(labeler["command"])["config"]) == "./labeler.textproto"
    env = {name: str(value) for name, value in labeler["environment"].items()}
    assert env["LABELER_DEFAULT_TARGET"] == f"dns:///tf-serving:{args['port']}"
    settings = labeler_settings(env, monkeypatch)
    assert mounted(labeler, str(settings.model_root)) == "models"
    trainer = services["trainer"]
    assert mounted(trainer, flags(trainer["command"])["model-root"]) == "models"


def test_deploy_passes_only_flags_the_servers_accept(compose, production):
    accepted = {
        "labeler": help_flags("labeler.cli", "serve"),
        "trainer": help_flags("trainer.cli", "serve"),
    }
    uses = [
        ("labeler", compose["services"]["labeler"]["command"]),
        ("trainer", compose["services"]["trainer"]["command"]),
        ("labeler", containers(production[("Deployment", "labeler")])[0]["args"]),
        ("trainer", containers(production[("StatefulSet", "trainer")])[0]["args"]),
    ]
    for dockerfile in ("labeler", "trainer"):
        cmd = re.search(r"^CMD (\[.*?\])$", (DOCKER / f"{dockerfile}.Dockerfile").read_text(), re.M | re.S)
        uses.append((dockerfile, yaml.safe_load(cmd.group(1).replace("\\\n", ""))))
    for program, argv in uses:
        assert argv[0] == "serve"
        for arg in argv[1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in accepted[program], f"{program} serve has no flag {arg}"


def help_flags(module: str, command: str) -> set[str]:
    out = run(sys.executable, "-m", module, command, "--help", env={**os.environ, "COLUMNS": "200"}).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def tf_serving_tag() -> str:
    base = yaml.safe_load((DEPLOY / "k8s/base/kustomization.yaml").read_text())
    return next(i["newTag"] for i in base["images"] if i["name"] == "tensorflow/serving")


def test_yamllint_passes_on_deploy():
    run(tool("yamllint"), "--strict", "deploy/")


# -- Configs shared by every deployment -------------------------------------------


def test_models_config_is_a_model_server_config_of_the_labelers_models():
    models = read_models_config().model_config_list.config
    assert {m.name for m in models} == SAMPLE_MODELS
    for m in models:
        assert m.base_path == f"var/models/{m.name}" and m.model_platform == "tensorflow"
    labeler = read_labeler_config(DEPLOY / "labeler.textproto")
    assert {entry.model for entry in labeler.labels} == {m.name for m in models}
    # As `make run` uses it (no overrides); Compose and Kubernetes: labeler_settings.
    validate(labeler, source="deploy/labeler.textproto")


@pytest.fixture
def fake_tf_serving_rest():
    """An HTTP server answering GET /v1/models/<name> the way TF Serving's REST
    API does (TF Serving itself cannot run here); ``states`` sets each model's state."""
    import http.server
    import json
    import threading

    states: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            name = self.path.removeprefix("/v1/models/")
            if name not in states:
                body, code = {"error": f"Servable not found for request: Latest({name})"}, 404
            else:
                status = {"error_code": "OK", "error_message": ""}
                body, code = (
                    {"model_version_status": [{"version": "7", "state": states[name], "status": status}]},
                    200,
                )
            data = json.dumps(body, indent=1).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield states, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_tf_serving_ready_script_needs_every_configured_model_available(fake_tf_serving_rest):
    states, port = fake_tf_serving_rest
    names = [m.name for m in read_models_config().model_config_list.config]

    def ready() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "deploy/tf-serving-ready.sh", "deploy/models.config", str(port)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )

    states.update({name: "AVAILABLE" for name in names[:-1]})
    proc = ready()
    assert proc.returncode == 1 and f"model {names[-1]} has no AVAILABLE version" in proc.stderr
    states[names[-1]] = "LOADING"
    assert ready().returncode == 1
    states[names[-1]] = "AVAILABLE"
    proc = ready()
    assert proc.returncode == 0, proc.stderr


# -- Images ---------------------------------------------------------------------

DOCKERFILES = ("labeler.Dockerfile", "trainer.Dockerfile")


def dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def dockerignore_includes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches decides; '!' re-includes."""
    import fnmatch

    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            included = negate
    return included


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_lints_pins_its_bases_copies_what_exists_and_runs_as_non_root(name):
    run(tool("hadolint"), f"deploy/docker/{name}")
    text = (DOCKER / name).read_text()
    args = dockerfile_args(text)
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    stage_names = {alias for _, alias in stages if alias}
    for image, _ in stages:
        image = args.get(image.strip("${}"), image)
        if image not in stage_names:
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), (
                f"{name}: base image {image} is not pinned to an exact release"
            )
    ignore = [
        line.strip()
        for line in (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), f"{name}: COPY source {source} does not exist"
            assert dockerignore_includes(ignore, source), (
                f"{name}: {source} is excluded from the build context"
            )
    final_stage = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)$", final_stage, re.M)
    assert users and users[-1] not in ("root", "0"), f"{name}: the final stage must run as a non-root user"


def project() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def extra_requirements(*extras: str) -> list[Requirement]:
    """The requirements ``pip install '.[extras]'`` asks for, read from
    pyproject.toml (the source of the package metadata), self-references
    (``text-labeler[...]``) followed."""
    meta = project()
    found = [Requirement(r) for r in meta["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in map(Requirement, meta["optional-dependencies"][extra]):
            if req.name == meta["name"]:
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions (normalized names) those requirements install, read
    from the installed packages' metadata."""
    wanted = [r.name for r in requirements]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for spec in importlib.metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                wanted.append(req.name)
    return seen


def image_install(name: str) -> list[str]:
    """The extras a Dockerfile's build stage installs the project with."""
    (extras,) = re.findall(r'pip install "/src\[([\w,]+)\]"', (DOCKER / name).read_text())
    return extras.split(",")


def test_images_install_their_extras_and_generate_protos_from_the_versions_in_pyproject():
    assert image_install("labeler.Dockerfile") == ["labeler"]
    # The Trainer image is also the Ray nodes' image (deploy/k8s/ray): it carries the ray extra.
    assert sorted(image_install("trainer.Dockerfile")) == ["modelserver", "ray", "trainer"]
    assert not list(DOCKER.glob("*requirements*.txt")), "images install extras, not requirement lists"
    meta = project()
    optional = {
        r.name: r.specifier
        for extra in meta["optional-dependencies"].values()
        for r in map(Requirement, extra)
        if r.name != meta["name"]
    }
    # grpcio-tools generates the stubs: the same release as the grpcio every image runs.
    base = {r.name: r.specifier for r in map(Requirement, meta["dependencies"])}
    assert str(optional["grpcio-tools"]) == str(base["grpcio"]) == f"=={next(iter(base['grpcio'])).version}"
    for name in DOCKERFILES:
        args = dockerfile_args((DOCKER / name).read_text())
        assert optional["tensorflow-serving-api"].contains(args["TENSORFLOW_SERVING_API_VERSION"])
        assert optional["tensorflow"].contains(args["TENSORFLOW_VERSION"])
        assert args["TENSORFLOW_SERVING_API_VERSION"] == args["TENSORFLOW_VERSION"]
        assert base["grpcio"].contains(args["GRPC_VERSION"])
        # Models trained by this TensorFlow are served by the same TF Serving release.
        assert tf_serving_tag() == args["TENSORFLOW_VERSION"]


def test_labeler_extra_has_no_tensorflow_and_the_labeler_imports_with_only_it(tmp_path):
    """Rebuild the Labeler image's site-packages here (what `pip install
    '.[labeler]'` installs, derived from pyproject.toml and the installed
    packages' metadata) and import the Labeler from it, with the generated TF
    Serving modules and nothing else on the path."""
    packages = installed_closure(extra_requirements("labeler"))
    assert {"grpcio", "protobuf", "numpy", "prometheus-client"} <= packages
    heavy = {p for p in packages if p.startswith(("tensorflow", "keras", "tf-", "jax"))}
    assert not heavy, f"the labeler extra pulls in {sorted(heavy)}"
    site = tmp_path / "site"
    site.mkdir()
    for name in packages:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))
    for package in ("labeler", "rpc", "modelspec", "tfserving"):
        shutil.copytree(
            REPO / package, tmp_path / "app" / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert (tmp_path / "app/tfserving/generated/__init__.py").is_file(), "run scripts/gen_tfs_protos.py"
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path / 'app')!r}, {str(site)!r}]\n"
        "import importlib.util, labeler.server, labeler.cli, rpc.healthcheck, tfserving.protos\n"
        "assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow is installed'\n"
        "assert importlib.util.find_spec('tensorflow_serving') is None, 'tensorflow-serving-api is installed'\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving', 'keras'))\n"
        "assert not loaded, loaded\n"
        "assert 'tfserving.generated.tensorflow_serving.apis.predict_pb2' in sys.modules\n"
        "print('labeler imports without tensorflow')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# -- bearer tokens ---------------------------------------------------------------


def test_tokens_come_from_files_made_by_make_tokens_and_are_never_committed(compose, production, tmp_path):
    """Compose's env_files and the Kubernetes Secrets name exactly what
    deploy/make-tokens.sh writes and docs/deploy.md's `kubectl create secret`
    lines create; nothing under deploy/ carries a token, and git ignores the files."""
    made = tmp_path / "secrets"
    run("bash", "deploy/make-tokens.sh", str(made))
    files = {f.name: f for f in made.iterdir()}
    assert set(files) == {"trainer.env", "labeler.env"}
    for file in files.values():
        assert file.stat().st_mode & 0o077 == 0, f"{file.name} is readable by others"
    keys = {
        name: {line.split("=", 1)[0] for line in f.read_text().splitlines() if "=" in line and line[0] != "#"}
        for name, f in files.items()
    }
    assert keys == {
        "trainer.env": {"TRAINER_AUTH_TOKENS", "TRAINER_TOKEN"},
        "labeler.env": {"LABELER_AUTH_TOKENS", "TEXT_LABELER_TOKEN"},
    }
    # A second run keeps the tokens (rotation is deliberate).
    before = {name: f.read_text() for name, f in files.items()}
    run("bash", "deploy/make-tokens.sh", str(made))
    assert {name: f.read_text() for name, f in files.items()} == before
    # Compose: each server's env_file is its file under deploy/secrets/, which git ignores.
    for service, file in [("trainer", "trainer.env"), ("labeler", "labeler.env")]:
        assert compose["services"][service]["env_file"] == [f"secrets/{file}"]
    ignored = run("git", "check-ignore", "deploy/secrets/trainer.env", "deploy/secrets/labeler.env")
    assert ignored.stdout.split() == ["deploy/secrets/trainer.env", "deploy/secrets/labeler.env"]
    # Kubernetes: the Secrets docs/deploy.md creates from those files, the keys they hold.
    docs = (REPO / "docs/deploy.md").read_text()
    created = dict(re.findall(r"create secret generic (\S+) --from-env-file=deploy/secrets/(\S+)", docs))
    assert created == {"trainer-auth": "trainer.env", "labeler-auth": "labeler.env"}
    assert not [key for key in production if key[0] == "Secret"], "no Secret (with a value) is committed"
    for kind, name, variables in [
        ("StatefulSet", "trainer", {"TRAINER_AUTH_TOKENS", "TRAINER_TOKEN"}),
        ("Deployment", "labeler", {"LABELER_AUTH_TOKENS", "TEXT_LABELER_TOKEN"}),
    ]:
        (container,) = containers(production[(kind, name)])
        refs = {
            v["name"]: v["valueFrom"]["secretKeyRef"]
            for v in container["env"]
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        assert set(refs) == variables, f"{kind}/{name}"
        for variable, ref in refs.items():
            assert not ref.get("optional"), f"{kind}/{name}: {variable} must not start without its Secret"
            assert variable in keys[created[ref["name"]]] and ref["key"] == variable


# -- The Trainer on a Ray cluster (deploy/k8s/ray, a kustomize component) ----------


@pytest.fixture(scope="module")
def on_ray(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """The production overlay with the Ray component, rendered from an overlay
    outside deploy/ as docs/deploy.md tells users to write it."""
    overlay = tmp_path_factory.mktemp("my-cluster")
    base = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}]\ncomponents: [{base}/k8s/ray]\n"
    )
    return {(o["kind"], o["metadata"]["name"]): o for o in render(overlay)}


def test_the_ray_component_renders_valid_objects_and_a_raycluster(on_ray):
    for (kind, name), obj in on_ray.items():
        if kind == "RayCluster":
            continue  # a custom resource: checked field by field below
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{kind}/{name} is invalid for Kubernetes {version}: {exc}")
    ray = on_ray[("RayCluster", "text-labeler-ray")]
    assert ray["apiVersion"] == "ray.io/v1" and ray["metadata"]["namespace"] == "text-labeler"
    spec = ray["spec"]
    assert spec["rayVersion"] == next(
        Requirement(r).specifier for r in project()["optional-dependencies"]["ray"] if r.startswith("ray")
    ).__str__().removeprefix("==")
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head takes no jobs
    assert spec["workerGroupSpecs"] and all(
        int(g["rayStartParams"]["num-cpus"]) >= 1 for g in spec["workerGroupSpecs"]
    )


def test_the_trainer_submits_to_the_ray_head_and_every_node_sees_its_storage(on_ray):
    ray = on_ray[("RayCluster", "text-labeler-ray")]
    trainer_set = on_ray[("StatefulSet", "trainer")]
    (trainer,) = containers(trainer_set)
    args = flags(trainer["args"])
    accepted = help_flags("trainer.cli", "serve")
    assert all(a.split("=")[0] in accepted for a in trainer["args"] if a.startswith("--"))
    assert args["executor"] == "ray"
    # KubeRay names the head's service <cluster>-head-svc; the Jobs API is the dashboard port.
    head = ray["spec"]["headGroupSpec"]["template"]["spec"]
    dashboard = next(p["containerPort"] for p in head["containers"][0]["ports"] if p["name"] == "dashboard")
    assert args["ray-address"] == f"http://{ray['metadata']['name']}-head-svc.text-labeler.svc:{dashboard}"
    pods = [head] + [g["template"]["spec"] for g in ray["spec"]["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["containers"]
        assert container["image"] == trainer["image"]  # the recipes, TensorFlow and Ray
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in (args["model-root"], args["data-root"], args["ray-work-root"]):
            # The same claim at the same path as in the Trainer's pod.
            mount, volume = mount_for(trainer_set, trainer, path)
            node_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == mount["mountPath"])
            claim = volumes[node_mount["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim == volume["persistentVolumeClaim"]["claimName"], path
            assert on_ray[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    # The Trainer's job database stays on its own ReadWriteOnce volume.
    _, state = mount_for(trainer_set, trainer, args["state-dir"])
    assert state["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
