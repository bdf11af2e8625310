"""The Labeler's configuration: read ``labeler.v1.LabelerConfig`` from a
text-proto or JSON file, validate it, and resolve defaults into plain frozen
dataclasses the rest of the Labeler reads (so no code elsewhere re-applies a
default or re-checks a field).

Errors name the offending entry, e.g. ``labels[1] (美妆): threshold must be
within [0, 1], got 1.5``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from collections.abc import Mapping

from google.protobuf import json_format, text_format

from labeler.v1 import config_pb2
from modelspec import names
from rpc.security import ClientSecurity, TlsFiles
from rpc.tracing_settings import TracingSettings, settings_from_env

DEFAULT_TARGET = "localhost:8500"
DEFAULT_MODEL_ROOT = "var/models"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TIMEOUT_MS = 1000
DEFAULT_POLL_MS = 1000
DEFAULT_MAX_WORDS = 10000
DEFAULT_MAX_WORD_BYTES = 1024
DEFAULT_MAX_BATCH_DOCUMENTS = 1024
DEFAULT_COALESCE_DELAY_US = 2000
DEFAULT_COALESCE_BATCH = 64
# Overload control (issue 17); defaults measured on the 2-core dev VM (docs/benchmarks.md,
# "Labeler under pressure"): beyond ~8 calls in flight it only adds queueing delay.
DEFAULT_MAX_CLASSIFY_IN_FLIGHT = 8
DEFAULT_MAX_CLASSIFY_QUEUED = 64
DEFAULT_MAX_PREDICTS_PER_TARGET = 32
DEFAULT_QUEUE_DEADLINE_SHARE_PERCENT = 50
DEFAULT_MAX_QUEUE_WAIT_MS = 500
DEFAULT_CONGESTED_QUEUE_WAIT_MS = 5
DEFAULT_CONGESTION_INTERVAL_MS = 100
DEFAULT_CACHE_MAX_BYTES = 64 * 1024 * 1024

TEXT_SUFFIXES = {".textproto", ".txtpb", ".pbtxt", ".prototxt", ".txt", ".cfg", ".conf"}
JSON_SUFFIXES = {".json"}

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the entry and the fix."""


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """One label bound to one model, every default resolved."""

    label: str
    model: str
    target: str
    signature_name: str
    input_name: str
    output_name: str
    threshold: float
    version: int | None  # pinned version number
    version_label: str | None  # or a server-side version label
    timeout_s: float
    # A multi-label model (a bundle, config ``bundles``): ``label`` is then
    # "bundle:<model>" (a name for logs), ``threshold`` the default of its
    # labels and ``label_thresholds`` the per-label overrides.
    bundle: bool = False
    label_thresholds: tuple[tuple[str, float], ...] = ()
    # "served", or "canary"/"shadow" for a rollout's candidate (spans name it).
    arm: str = "served"

    def threshold_of(self, label: str) -> float:
        """A bundle label's threshold: its override, else the bundle's."""
        for name, value in self.label_thresholds:
            if name == label:
                return value
        return self.threshold


@dataclasses.dataclass(frozen=True)
class Limits:
    max_words: int
    max_word_bytes: int
    max_batch_documents: int


@dataclasses.dataclass(frozen=True)
class Coalescing:
    enabled: bool
    max_delay_s: float
    max_batch_documents: int


@dataclasses.dataclass(frozen=True)
class Overload:
    """Bounds on the work in flight (labeler.overload)."""

    enabled: bool = True
    max_classify_in_flight: int = DEFAULT_MAX_CLASSIFY_IN_FLIGHT
    max_classify_queued: int = DEFAULT_MAX_CLASSIFY_QUEUED
    max_predicts_per_target: int = DEFAULT_MAX_PREDICTS_PER_TARGET
    queue_deadline_share: float = DEFAULT_QUEUE_DEADLINE_SHARE_PERCENT / 100
    max_queue_wait_s: float = DEFAULT_MAX_QUEUE_WAIT_MS / 1000
    # Excess calls on one connection: held by HTTP/2 in the caller (True) or
    # let through to admission and refused at once with a pushback (False,
    # the default: docs/benchmarks.md has the trade-off's figures).
    hold_excess_in_transport: bool = False
    # CoDel-style queue timeout and adaptive LIFO under sustained congestion.
    congested_queue_wait_s: float = DEFAULT_CONGESTED_QUEUE_WAIT_MS / 1000
    congestion_interval_s: float = DEFAULT_CONGESTION_INTERVAL_MS / 1000


@dataclasses.dataclass(frozen=True)
class PredictionCacheSettings:
    """The prediction cache (labeler.cache)."""

    enabled: bool = True
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES


@dataclasses.dataclass(frozen=True)
class CanarySpec:
    """A share of one label's documents scored by a candidate version."""

    label: str
    candidate: LabelSpec  # the label's spec with the candidate version in place of its own
    percent: float  # [0, 100]


@dataclasses.dataclass(frozen=True)
class ShadowSpec:
    """A sample of one label's requests also scored by a candidate version, off the caller's path."""

    label: str
    candidate: LabelSpec
    sample_percent: float  # [0, 100]
    max_in_flight: int


DEFAULT_SHADOW_MAX_IN_FLIGHT = 4


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated configuration of one Labeler process."""

    labels: tuple[LabelSpec, ...]
    model_root: pathlib.Path
    limits: Limits
    coalescing: Coalescing
    poll_interval_s: float
    # TLS to the model servers; None: plaintext.
    model_server_tls: ClientSecurity | None = None
    overload: Overload = Overload()
    prediction_cache: PredictionCacheSettings = PredictionCacheSettings()
    tracing: TracingSettings = TracingSettings()
    # Candidate versions per label (labeler.rollout), at most one of each per label.
    canaries: tuple[CanarySpec, ...] = ()
    shadows: tuple[ShadowSpec, ...] = ()
    # Multi-label models, each binding every label its version carries.
    bundles: tuple[LabelSpec, ...] = ()

    def label(self, name: str) -> LabelSpec | None:
        for spec in self.labels:
            if spec.label == name:
                return spec
        return None


def read_config(path: str | os.PathLike) -> config_pb2.LabelerConfig:
    """Parse a config file: JSON for ``.json``, text-proto otherwise."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    message = config_pb2.LabelerConfig()
    suffix = path.suffix.lower()
    try:
        if suffix in JSON_SUFFIXES:
            json_format.Parse(text, message)
        elif suffix in TEXT_SUFFIXES:
            text_format.Parse(text, message)
        else:
            raise ConfigError(
                f"config {path}: unknown file type {suffix!r}; use .textproto (text-format "
                "labeler.v1.LabelerConfig) or .json"
            )
    except (text_format.ParseError, json_format.ParseError) as exc:
        raise ConfigError(f"config {path} is not a valid labeler.v1.LabelerConfig: {exc}") from exc
    return message


# Deployment overrides: one config file serves every environment (local, Compose,
# Kubernetes); only where the model servers and the model repository are changes.
# Applied on every (re)load, so a SIGHUP reload keeps them.
ENV_OVERRIDES = {
    "LABELER_DEFAULT_TARGET": "default_target",
    "LABELER_MODEL_ROOT": "model_root",
}


def apply_env_overrides(config: config_pb2.LabelerConfig, environ: Mapping[str, str] = os.environ) -> None:
    for variable, field in ENV_OVERRIDES.items():
        if environ.get(variable):
            setattr(config, field, environ[variable])


def load_settings(path: str | os.PathLike) -> Settings:
    """Read a config file, apply the environment overrides, validate."""
    config = read_config(path)
    apply_env_overrides(config)
    return validate(config, source=str(path))


def check_target(target: str) -> str | None:
    """Why ``target`` is not a usable gRPC target, or None if it is."""
    if not target or target != target.strip() or any(c.isspace() for c in target):
        return f"bad target {target!r}: it must be non-empty host:port without spaces"
    if "://" in target and not target.startswith("dns:"):
        return (
            f"bad target {target!r}: use host:port or dns:///host:port (the model server's gRPC "
            "port, 8500 by default), not a URL"
        )
    if target.startswith(_SCHEMES):
        if target.startswith("dns:"):
            # dns:///host:port or dns://authority/host:port
            rest = target[len("dns:") :]
            host_port = rest.rsplit("/", 1)[-1] if rest.startswith("//") else rest
            if not _HOST_PORT.match(host_port):
                return f"bad target {target!r}: expected dns:///host:port"
        elif target.rstrip(":").endswith(_SCHEMES):
            return f"bad target {target!r}: the address after the scheme is missing"
        return None
    match = _HOST_PORT.match(target)
    if not match:
        return f"bad target {target!r}: expected host:port, e.g. localhost:8500"
    if not 1 <= int(match.group(2)) <= 65535:
        return f"bad target {target!r}: port must be 1..65535"
    return None


def validate(config: config_pb2.LabelerConfig, source: str = "config") -> Settings:
    """Check every entry and resolve defaults; raises ConfigError naming the entry."""
    problems: list[str] = []
    default_target = config.default_target or DEFAULT_TARGET
    if why := check_target(default_target):
        problems.append(f"default_target: {why}")
    if not config.labels and not config.bundles:
        problems.append("labels: at least one label is required (or one entry in bundles)")

    specs: list[LabelSpec] = []
    seen_labels: dict[str, int] = {}
    seen_models: dict[str, int] = {}
    for i, entry in enumerate(config.labels):
        where = f"labels[{i}]" + (f" ({entry.label})" if entry.label else "")
        before = len(problems)
        if not entry.label.strip():
            problems.append(f'{where}: label is empty; set label to the name callers see, e.g. "影视"')
        elif entry.label != entry.label.strip():
            problems.append(f"{where}: label {entry.label!r} has leading or trailing spaces")
        elif entry.label in seen_labels:
            problems.append(
                f"{where}: duplicate label {entry.label!r} (also labels[{seen_labels[entry.label]}])"
            )
        else:
            seen_labels[entry.label] = i
        if not entry.model:
            problems.append(
                f'{where}: model is empty; set model to its name on the model server, e.g. "movie"'
            )
        elif not names.is_model_name(entry.model):
            # The Trainer's rule too: every model a label names can be trained.
            problems.append(f"{where}: model {entry.model!r} is not allowed: {names.MODEL_NAME_RULE}")
        elif entry.model in seen_models:
            problems.append(
                f"{where}: duplicate model {entry.model!r} (also labels[{seen_models[entry.model]}])"
            )
        else:
            seen_models[entry.model] = i
        target = entry.target or default_target
        if entry.target and (why := check_target(entry.target)):
            problems.append(f"{where}: {why}")
        threshold = entry.threshold if entry.HasField("threshold") else DEFAULT_THRESHOLD
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            problems.append(f"{where}: threshold must be within [0, 1], got {threshold:g}")
        choice = _check_version_and_names(entry, where, problems)
        if len(problems) > before:
            continue
        specs.append(
            LabelSpec(
                label=entry.label,
                model=entry.model,
                target=target,
                signature_name=entry.signature_name or names.SIGNATURE_NAME,
                input_name=entry.input_name or names.INPUT_NAME,
                output_name=entry.output_name or names.OUTPUT_NAME,
                threshold=float(threshold),
                version=entry.version if choice == "version" else None,
                version_label=entry.version_label if choice == "version_label" else None,
                timeout_s=(entry.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000.0,
            )
        )

    limits = Limits(
        max_words=config.limits.max_words or DEFAULT_MAX_WORDS,
        max_word_bytes=config.limits.max_word_bytes or DEFAULT_MAX_WORD_BYTES,
        max_batch_documents=config.limits.max_batch_documents or DEFAULT_MAX_BATCH_DOCUMENTS,
    )
    coalescing = Coalescing(
        enabled=config.coalescing.enabled,
        max_delay_s=(config.coalescing.max_delay_us or DEFAULT_COALESCE_DELAY_US) / 1e6,
        max_batch_documents=config.coalescing.max_batch_documents or DEFAULT_COALESCE_BATCH,
    )
    model_server_tls = _model_server_tls(config, problems)
    overload = _overload(config, problems)
    prediction_cache = _prediction_cache(config, problems)
    tracing = _tracing(config, problems)
    canaries, shadows = _rollouts(config, {s.label: s for s in specs}, problems)
    bundles = _bundle_specs(config, default_target, seen_labels, seen_models, problems)
    if problems:
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(problems))
    return Settings(
        labels=tuple(specs),
        model_root=pathlib.Path(config.model_root or DEFAULT_MODEL_ROOT).resolve(),
        limits=limits,
        coalescing=coalescing,
        poll_interval_s=(config.version_poll_interval_ms or DEFAULT_POLL_MS) / 1000.0,
        model_server_tls=model_server_tls,
        overload=overload,
        prediction_cache=prediction_cache,
        tracing=tracing,
        canaries=canaries,
        shadows=shadows,
        bundles=bundles,
    )


def _bundle_specs(
    config: config_pb2.LabelerConfig,
    default_target: str,
    seen_labels: dict[str, int],
    seen_models: dict[str, int],
    problems: list[str],
) -> tuple[LabelSpec, ...]:
    """Validate ``bundles``: a model named once (by a label or one bundle), a
    label overridden here not also bound in ``labels``; thresholds in [0, 1].
    Which labels a bundle carries is known once a version loads (the
    registry checks those)."""
    specs: list[LabelSpec] = []
    bundle_models: dict[str, int] = {}
    for i, entry in enumerate(config.bundles):
        where = f"bundles[{i}]" + (f" ({entry.model})" if entry.model else "")
        before = len(problems)
        if not entry.model:
            problems.append(f'{where}: model is empty; set model to the bundle\'s name, e.g. "topics"')
        elif not names.is_model_name(entry.model):
            problems.append(f"{where}: model {entry.model!r} is not allowed: {names.MODEL_NAME_RULE}")
        elif entry.model in seen_models:
            problems.append(
                f"{where}: model {entry.model!r} is also bound by labels[{seen_models[entry.model]}]; "
                "a model is either one label's or a bundle"
            )
        elif entry.model in bundle_models:
            problems.append(
                f"{where}: duplicate bundle {entry.model!r} (also bundles[{bundle_models[entry.model]}])"
            )
        else:
            bundle_models[entry.model] = i
        if entry.target and (why := check_target(entry.target)):
            problems.append(f"{where}: {why}")
        threshold = entry.threshold if entry.HasField("threshold") else DEFAULT_THRESHOLD
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            problems.append(f"{where}: threshold must be within [0, 1], got {threshold:g}")
        for label, value in sorted(entry.label_thresholds.items()):
            if not label.strip() or label != label.strip():
                problems.append(f"{where}: label_thresholds has a bad label {label!r}")
            elif label in seen_labels:
                problems.append(
                    f"{where}: label {label!r} is bound twice: here and by labels[{seen_labels[label]}]"
                )
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                problems.append(f"{where}: label_thresholds[{label!r}] must be within [0, 1], got {value:g}")
        choice = _check_version_and_names(entry, where, problems)
        if len(problems) > before:
            continue
        specs.append(
            LabelSpec(
                label=f"bundle:{entry.model}",
                model=entry.model,
                target=entry.target or default_target,
                signature_name=entry.signature_name or names.SIGNATURE_NAME,
                input_name=entry.input_name or names.INPUT_NAME,
                output_name=entry.output_name or names.OUTPUT_NAME,
                threshold=float(threshold),
                version=entry.version if choice == "version" else None,
                version_label=entry.version_label if choice == "version_label" else None,
                timeout_s=(entry.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000.0,
                bundle=True,
                label_thresholds=tuple(sorted((k, float(v)) for k, v in entry.label_thresholds.items())),
            )
        )
    return tuple(specs)


def _model_server_tls(config: config_pb2.LabelerConfig, problems: list[str]) -> ClientSecurity | None:
    if not config.HasField("model_server_tls"):
        return None
    tls = config.model_server_tls
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append("model_server_tls: a client certificate needs both cert_file and key_file")
    for field in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, field)
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            problems.append(f"model_server_tls.{field}: cannot read {path!r}")
    return ClientSecurity(
        tls=TlsFiles(cert=tls.cert_file, key=tls.key_file, ca=tls.ca_file), server_name=tls.server_name
    )


def _check_version_and_names(
    entry: config_pb2.LabelConfig | config_pb2.BundleConfig, where: str, problems: list[str]
) -> str | None:
    """The checks a label and a bundle share: the version pin or label, and
    the signature and tensor names. Returns which version choice is set."""
    choice = entry.WhichOneof("version_choice")
    if choice == "version" and entry.version < 1:
        problems.append(f"{where}: version must be a positive version number, got {entry.version}")
    if choice == "version_label" and not entry.version_label.strip():
        problems.append(
            f'{where}: version_label is set but empty; remove it or name a label such as "stable"'
        )
    for field in ("signature_name", "input_name", "output_name"):
        value = getattr(entry, field)
        if value != value.strip():
            problems.append(f"{where}: {field} {value!r} has leading or trailing spaces")
    return choice


def _in_range(problems: list[str], field: str, value: int, low: int, high: int, fix: str) -> None:
    if not low <= value <= high:
        problems.append(f"{field} must be within {low}..{high}, got {value}; {fix}")


def _overload(config: config_pb2.LabelerConfig, problems: list[str]) -> Overload:
    """Overload control settings (issue 17); an unset message means the defaults."""
    o = config.overload
    in_flight = o.max_classify_in_flight or DEFAULT_MAX_CLASSIFY_IN_FLIGHT
    queued = o.max_classify_queued or DEFAULT_MAX_CLASSIFY_QUEUED
    per_target = o.max_predicts_per_target or DEFAULT_MAX_PREDICTS_PER_TARGET
    share = o.queue_deadline_share_percent or DEFAULT_QUEUE_DEADLINE_SHARE_PERCENT
    wait_ms = o.max_queue_wait_ms or DEFAULT_MAX_QUEUE_WAIT_MS
    unset = "leave it 0 for the default"
    _in_range(problems, "overload.max_classify_in_flight", in_flight, 1, 100_000, unset)
    _in_range(problems, "overload.max_classify_queued", queued, 1, 1_000_000, unset)
    _in_range(problems, "overload.max_predicts_per_target", per_target, 1, 100_000, unset)
    _in_range(problems, "overload.queue_deadline_share_percent", share, 1, 100, unset)
    _in_range(problems, "overload.max_queue_wait_ms", wait_ms, 1, 60_000, unset)
    congested_ms = o.congested_queue_wait_ms or DEFAULT_CONGESTED_QUEUE_WAIT_MS
    interval_ms = o.congestion_interval_ms or DEFAULT_CONGESTION_INTERVAL_MS
    _in_range(problems, "overload.congested_queue_wait_ms", congested_ms, 1, 60_000, unset)
    _in_range(problems, "overload.congestion_interval_ms", interval_ms, 1, 60_000, unset)
    if o.excess_calls not in config_pb2.OverloadConfig.ExcessCalls.values():
        problems.append(
            f"overload.excess_calls {o.excess_calls} is not a known value; use EXCESS_CALLS_HOLD or "
            "EXCESS_CALLS_REFUSE"
        )
    return Overload(
        enabled=not o.disabled,
        max_classify_in_flight=in_flight,
        max_classify_queued=queued,
        max_predicts_per_target=per_target,
        queue_deadline_share=share / 100,
        max_queue_wait_s=wait_ms / 1000,
        hold_excess_in_transport=o.excess_calls == config_pb2.OverloadConfig.EXCESS_CALLS_HOLD,
        congested_queue_wait_s=congested_ms / 1000,
        congestion_interval_s=interval_ms / 1000,
    )


_CACHE_MAX_BYTES_LIMIT = 16 * 1024**3
_CACHE_MIN_BYTES = 4096


def _prediction_cache(config: config_pb2.LabelerConfig, problems: list[str]) -> PredictionCacheSettings:
    """Prediction cache settings (issue 17); an unset message means the defaults."""
    c = config.prediction_cache
    max_bytes = c.max_bytes or DEFAULT_CACHE_MAX_BYTES
    _in_range(
        problems,
        "prediction_cache.max_bytes",
        max_bytes,
        _CACHE_MIN_BYTES,
        _CACHE_MAX_BYTES_LIMIT,
        "leave it 0 for 64 MiB, or set prediction_cache.disabled to turn the cache off",
    )
    return PredictionCacheSettings(enabled=not c.disabled, max_bytes=max_bytes)


def _tracing(config: config_pb2.LabelerConfig, problems: list[str]) -> TracingSettings:
    from_env = settings_from_env("labeler")
    if not config.HasField("tracing"):
        return from_env
    t = config.tracing
    ratio = t.sample_ratio if t.HasField("sample_ratio") else 1.0
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        problems.append(f"tracing.sample_ratio must be within [0, 1], got {ratio:g}")
    return TracingSettings(
        enabled=t.enabled or from_env.enabled,
        service_name=t.service_name or from_env.service_name,
        otlp_endpoint=t.otlp_endpoint or None,
        sample_ratio=ratio,
    )


def _rollouts(
    config: config_pb2.LabelerConfig, labels: dict[str, LabelSpec], problems: list[str]
) -> tuple[tuple[CanarySpec, ...], tuple[ShadowSpec, ...]]:
    """Canaries and shadows: a known label, a candidate other than the served
    version, a share within [0, 100]; at most one of each kind per label."""
    canaries: list[CanarySpec] = []
    shadows: list[ShadowSpec] = []
    for kind, entries, percent_field in (
        ("canaries", config.canaries, "percent"),
        ("shadows", config.shadows, "sample_percent"),
    ):
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f"{kind}[{i}]" + (f" ({entry.label})" if entry.label else "")
            before = len(problems)
            spec = labels.get(entry.label)
            if spec is None:
                known = ", ".join(labels) or "none"
                problems.append(f"{where}: label {entry.label!r} is not in labels (known labels: {known})")
            elif entry.label in seen:
                problems.append(
                    f"{where}: label {entry.label!r} already has one (also {kind}[{seen[entry.label]}])"
                )
            else:
                seen[entry.label] = i
            percent = getattr(entry, percent_field)
            if not (math.isfinite(percent) and 0.0 <= percent <= 100.0):
                problems.append(f"{where}: {percent_field} must be within [0, 100], got {percent:g}")
            choice = entry.WhichOneof("candidate")
            if choice is None:
                problems.append(f"{where}: candidate missing; set version (a number) or version_label")
            elif choice == "version" and entry.version < 1:
                problems.append(f"{where}: version must be a positive version number, got {entry.version}")
            elif choice == "version_label" and not entry.version_label.strip():
                problems.append(f"{where}: version_label is set but empty")
            elif spec is not None and (
                (choice == "version" and spec.version == entry.version)
                or (choice == "version_label" and spec.version_label == entry.version_label)
            ):
                served = getattr(entry, choice)
                problems.append(
                    f"{where}: {choice} {served!r} is the version label {entry.label!r} already serves "
                    f"(labels[].{choice}); a candidate must be another version"
                )
            if len(problems) > before or spec is None:
                continue
            candidate = dataclasses.replace(
                spec,
                version=entry.version if choice == "version" else None,
                version_label=entry.version_label if choice == "version_label" else None,
                arm="canary" if kind == "canaries" else "shadow",
            )
            if kind == "canaries":
                canaries.append(CanarySpec(entry.label, candidate, float(percent)))
            else:
                shadows.append(
                    ShadowSpec(
                        entry.label,
                        candidate,
                        float(percent),
                        entry.max_in_flight or DEFAULT_SHADOW_MAX_IN_FLIGHT,
                    )
                )
    return tuple(canaries), tuple(shadows)
