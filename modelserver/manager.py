"""Which versions of which models are served: TF Serving's ServerCore, small.

- Versions are the numeric directories under each model's ``base_path``
  (``00000123`` is 123; other names are ignored). The model's
  ``model_version_policy`` picks the aspired ones: ``latest`` (default, 1
  version), ``all`` or ``specific``.
- A reconcile (at start, on every file-system poll, on a config reload) loads
  aspired versions not yet loaded, then swaps the whole served set in one
  assignment, then retires what is no longer aspired. A request holds a
  reference to the version it resolved, so a swap never fails it: the old
  session closes when its last in-flight call ends.
- Availability is preserved: if no aspired version of a model can be loaded
  (a broken new version), the versions already served stay served. A failed
  version is retried only when its directory changes.
- ``version_labels`` map labels to versions; like TF Serving a label must point
  at an available version unless ``allow_version_labels_for_unavailable_models``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import pathlib
from collections.abc import Callable, Iterator, Mapping

from modelserver import model_config as config_lib
from modelserver.loader import LoadedVersion
from modelspec.versions import version_dirs
from rpc import errors
from tfserving.protos import get_model_status_pb2, model_pb2

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State

# name, version, path -> a loaded version (blocking; raises ServiceError).
Loader = Callable[[str, int, pathlib.Path], LoadedVersion]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    state: int
    error: errors.ServiceError | None = None


@dataclasses.dataclass(frozen=True)
class ServedModel:
    name: str
    base_path: pathlib.Path
    versions: Mapping[int, LoadedVersion]


def aspired_versions(policy, on_disk: Mapping[int, pathlib.Path]) -> set[int]:
    """TF Serving's ServableVersionPolicy over the versions found on disk."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(on_disk)
    if choice == "specific":
        return set(policy.specific.versions) & set(on_disk)
    count = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(sorted(on_disk)[-count:])


def _dir_stamp(path: pathlib.Path) -> tuple[int, ...]:
    """Changes when a version directory's content is replaced or completed."""
    stamps = []
    for p in (path, path / "saved_model.pb", path / "variables"):
        try:
            stamps.append(p.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


def _servable_request(spec: model_pb2.ModelSpec, version: int | None) -> str:
    name = errors.shown(spec.name, quoted=False)
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"


class ModelManager:
    def __init__(
        self,
        load: Loader,
        working_dir: pathlib.Path,
        file_system_poll_wait_seconds: float = 1.0,
        allow_version_labels_for_unavailable_models: bool = False,
    ) -> None:
        self._load = load
        self._working_dir = working_dir
        self._poll_s = file_system_poll_wait_seconds
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._config = config_lib.ModelServerConfig()
        # Replaced (never mutated) by a reconcile; readers take one snapshot.
        self._served: Mapping[str, ServedModel] = {}
        self._labels: Mapping[str, Mapping[str, int]] = {}
        self._states: dict[str, dict[int, VersionStatus]] = {}
        self._failures: dict[tuple[str, int], tuple[tuple[int, ...], errors.ServiceError]] = {}
        self._missing_bases: set[pathlib.Path] = set()
        self._reconcile_lock = asyncio.Lock()
        # Loads run one at a time on their own thread: requests keep theirs.
        self._load_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self._tasks: list[asyncio.Task] = []
        self._on_close: list[Callable[[], object]] = []

    # -- requests ----------------------------------------------------------

    @property
    def config(self) -> config_lib.ModelServerConfig:
        return self._config

    def served_versions(self, name: str) -> list[int]:
        served = self._served.get(name)
        return sorted(served.versions) if served else []

    def acquire(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        """The version a ModelSpec asks for, with a reference taken (release it)."""
        if not spec.name:
            raise errors.InvalidArgument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        wanted: int | None = None
        if choice == "version":
            wanted = spec.version.value
        elif choice == "version_label":
            labels = self._labels.get(spec.name, {})
            if spec.version_label not in labels:
                raise errors.InvalidArgument(
                    f"Unrecognized servable version label: {errors.shown(spec.version_label, quoted=False)}"
                )
            wanted = labels[spec.version_label]
        # A version retired between our lookup and acquire means a newer served
        # set is already in place: look again.
        for _ in range(1000):
            served = self._served.get(spec.name)
            version = None
            if served and served.versions:
                version = served.versions.get(wanted if wanted is not None else max(served.versions))
            if version is None:
                raise errors.NotFound(f"Servable not found for request: {_servable_request(spec, wanted)}")
            if version.acquire():
                return version
        raise errors.Unavailable(f"model {spec.name} is being reloaded; retry")

    @contextlib.contextmanager
    def servable(self, spec: model_pb2.ModelSpec) -> Iterator[LoadedVersion]:
        version = self.acquire(spec)
        try:
            yield version
        finally:
            version.release()

    def version_statuses(self, name: str) -> list[tuple[int, VersionStatus]]:
        """Every version this server has known of the model, newest first."""
        return sorted(self._states.get(name, {}).items(), reverse=True)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, config: config_lib.ModelServerConfig) -> None:
        """Load ``config`` (raising if a label is invalid or a model's versions
        all fail to load), then poll the file system in the background."""
        config_lib.validate(config)
        async with self._reconcile_lock:
            unavailable = await self._reconcile(config, labels_changed=True)
        failed = {name: why for name, why in unavailable.items() if why.load_failed}
        if failed:
            raise _did_not_become_available(failed)
        for name, why in unavailable.items():
            log.warning("model %s has no version to serve yet: %s", name, why.reason)
        if self._poll_s > 0:
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="file-system-poll"))

    async def reload(self, config: config_lib.ModelServerConfig) -> None:
        """Apply a new config (HandleReloadConfigRequest, config file polling).
        A label error changes nothing; models added without a servable version
        are configured anyway (served once one appears) and reported."""
        config_lib.validate(config)
        async with self._reconcile_lock:
            old = {m.name for m in self._config.model_config_list.config}
            unavailable = await self._reconcile(config, labels_changed=True)
        new = {n: m for n, m in unavailable.items() if n not in old}
        if new:
            raise _did_not_become_available(new)

    async def poll_once(self) -> None:
        async with self._reconcile_lock:
            await self._reconcile(self._config, labels_changed=False)

    def watch_config_file(
        self, path: pathlib.Path, interval_s: float, applied: config_lib.ModelServerConfig
    ) -> None:
        """Re-read ``path`` every ``interval_s`` and apply it when it differs
        from ``applied``, the config last taken from it (at start: the one the
        server was started with, so an edit made while it starts is not missed)."""
        self._tasks.append(
            asyncio.create_task(self._watch_config_file(path, interval_s, applied), name="config-file-poll")
        )

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` (e.g. shut an executor down) at the end of close()."""
        self._on_close.append(callback)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        async with self._reconcile_lock:
            served, self._served = self._served, {}
            for model in served.values():
                for version in model.versions.values():
                    self._set_state(model.name, version.version, State.END)
                    version.retire()
        self._load_executor.shutdown(wait=True)
        for callback in self._on_close:
            callback()
        self._on_close.clear()

    # -- internals -----------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the log says why
                log.exception("file system poll failed")

    async def _watch_config_file(
        self, path: pathlib.Path, interval_s: float, applied: config_lib.ModelServerConfig
    ) -> None:
        loop = asyncio.get_running_loop()
        last_text = None  # parse (and log a bad file) once per distinct content
        while True:
            await asyncio.sleep(interval_s)
            text = await loop.run_in_executor(None, _read_or_none, path)
            if text is None or text == last_text:
                continue
            last_text = text
            try:
                config = config_lib.parse_model_server_config(text, str(path))
                if config == applied:
                    continue
                applied = config
                await self.reload(config)
                log.info("applied the changed model config file %s", path)
            except (config_lib.ConfigFileError, errors.ServiceError) as exc:
                log.error("model config file %s not (fully) applied: %s", path, exc)

    def _set_state(
        self, name: str, version: int, state: int, error: errors.ServiceError | None = None
    ) -> None:
        self._states.setdefault(name, {})[version] = VersionStatus(state, error)

    async def _reconcile(
        self, config: config_lib.ModelServerConfig, labels_changed: bool
    ) -> dict[str, _Unavailable]:
        """Bring the served set to ``config`` and the disk; returns the models
        left without a servable version and why."""
        loop = asyncio.get_running_loop()
        old_served = self._served
        new_served: dict[str, ServedModel] = {}
        loaded: list[LoadedVersion] = []
        unavailable: dict[str, _Unavailable] = {}
        for model in config.model_config_list.config:
            base = config_lib.resolve_base_path(model.base_path, self._working_dir)
            on_disk = await loop.run_in_executor(self._load_executor, version_dirs, base)
            self._note_base_path(model.name, base, on_disk)
            current = old_served.get(model.name)
            kept = dict(current.versions) if current and current.base_path == base else {}
            aspired = aspired_versions(model.model_version_policy, on_disk or {})
            for number in sorted(aspired - kept.keys()):
                assert on_disk is not None  # nothing is aspired without it
                version = await self._try_load(model.name, number, on_disk[number])
                if version is not None:
                    kept[number] = version
                    loaded.append(version)
            available = {n: v for n, v in kept.items() if n in aspired}
            if not available and kept:
                available = kept  # availability preserving: keep what serves
            new_served[model.name] = ServedModel(model.name, base, available)
            if not available:
                unavailable[model.name] = self._why_unavailable(model.name, base, on_disk, aspired)
        labels = self._labels
        if labels_changed:
            try:
                labels = self._check_labels(config, new_served)
            except errors.ServiceError:
                for version in loaded:  # change nothing
                    self._set_state(version.name, version.version, State.END)
                    version.retire()
                raise
        self._served, self._labels, self._config = new_served, labels, config
        for model in new_served.values():
            for number in model.versions:
                self._set_state(model.name, number, State.AVAILABLE)
        self._retire_dropped(old_served, new_served)
        return unavailable

    async def _try_load(self, name: str, number: int, path: pathlib.Path) -> LoadedVersion | None:
        stamp = _dir_stamp(path)
        failure = self._failures.get((name, number))
        if failure is not None and failure[0] == stamp:
            return None  # failed before and unchanged since
        self._set_state(name, number, State.LOADING)
        try:
            loop = asyncio.get_running_loop()
            version = await loop.run_in_executor(self._load_executor, self._load, name, number, path)
        except errors.ServiceError as exc:
            log.error("loading %s version %d failed: %s", name, number, exc)
            self._failures[(name, number)] = (stamp, exc)
            self._set_state(name, number, State.END, exc)
            return None
        self._failures.pop((name, number), None)
        return version

    def _retire_dropped(self, old: Mapping[str, ServedModel], new: Mapping[str, ServedModel]) -> None:
        for name, model in old.items():
            keep = new[name].versions if name in new else {}
            for number, version in model.versions.items():
                if keep.get(number) is not version:
                    self._set_state(name, number, State.UNLOADING)
                    version.retire()
                    self._set_state(name, number, State.END)
                    log.info("%s version %d no longer served", name, number)

    def _check_labels(self, config, served: Mapping[str, ServedModel]) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for model in config.model_config_list.config:
            versions = served[model.name].versions
            for label, number in model.version_labels.items():
                previous = self._labels.get(model.name, {}).get(label)
                allowed = self._allow_unavailable_labels and previous in (None, number)
                if number not in versions and not allowed:
                    raise errors.FailedPrecondition(
                        f"Request to assign label to version {number} of model {model.name}, "
                        "which is not currently available for inference"
                    )
                labels.setdefault(model.name, {})[label] = number
        return labels

    def _note_base_path(self, name: str, base: pathlib.Path, on_disk) -> None:
        if on_disk is None and base not in self._missing_bases:
            self._missing_bases.add(base)
            log.warning("model %s: base path %s does not exist (yet)", name, base)
        elif on_disk is not None:
            self._missing_bases.discard(base)

    def _why_unavailable(self, name: str, base: pathlib.Path, on_disk, aspired: set[int]) -> _Unavailable:
        if on_disk is None:
            return _Unavailable(False, f"base path {base} does not exist")
        if not aspired:
            return _Unavailable(False, f"no versions of servable {name} found under base path {base}")
        reasons = [str(self._failures[(name, n)][1]) for n in sorted(aspired) if (name, n) in self._failures]
        return _Unavailable(True, "failed to load: " + "; ".join(reasons))


@dataclasses.dataclass(frozen=True)
class _Unavailable:
    load_failed: bool  # versions exist but none loaded (vs. none there yet)
    reason: str


def _did_not_become_available(models: Mapping[str, _Unavailable]) -> errors.ServiceError:
    detail = ", ".join(f"{{{name}: {why.reason}}}" for name, why in sorted(models.items()))
    return errors.Unknown(f"{len(models)} model(s) did not become available: {{{detail}}}")


def _read_or_none(path: pathlib.Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read model config file %s: %s", path, exc)
        return None
