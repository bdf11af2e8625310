"""Which model version each label uses, with that version's features.

A background loop asks each model server which versions it serves
(GetModelStatus). When a label's model starts serving a new version, its
features are loaded once, from ``<model_root>/<model>/<version>/``, and only
then is the label switched to it: Predicts are pinned to that version
(ModelSpec.version), so features and model always match.

The whole table is one immutable ``Snapshot`` replaced atomically; a request
takes one snapshot at its start and never sees a half-switched table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import pathlib
from collections.abc import Callable

from labeler import bundles as bundle_support
from labeler import shared_features
from labeler.config import LabelSpec, Settings
from labeler.domain import Binding, LabelState, LoadedVersion, ModelCallError
from labeler.model_client import ClientPool
from modelspec.features import FeaturePipeline

log = logging.getLogger(__name__)

_STATUS_TIMEOUT_MAX_S = 2.0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    settings: Settings
    bindings: dict[str, Binding]  # label -> binding, in configuration order
    # Multi-label models: model -> the bundle's binding (labels.bundles).
    bundles: dict[str, Binding] = dataclasses.field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Every configured label (and bundle) has a version loaded."""
        return all(b.loaded is not None for b in self.bindings.values()) and all(
            b.loaded is not None for b in self.bundles.values()
        )

    @functools.cached_property
    def models_per_target(self) -> dict[str, int]:
        """How many models (binary labels and bundles) one Classify may ask on
        each model server target: the Predicts of its whole fan-out."""
        models: dict[str, set[str]] = {}
        for b in (*self.bindings.values(), *self.bundles.values()):
            models.setdefault(b.spec.target, set()).add(b.spec.model)
        return {target: len(names) for target, names in models.items()}

    @functools.cached_property
    def bundle_table(self) -> bundle_support.BundleTable:
        """The bundles' labels and columns, worked out once per snapshot."""
        return bundle_support.build_table(self.bindings, self.bundles.values())


def load_version(model_root: pathlib.Path, spec: LabelSpec, version: int) -> LoadedVersion:
    """Read one version's feature artifacts and check they belong to this model."""
    version_dir = model_root / spec.model / str(version)
    try:
        pipeline, meta = FeaturePipeline.load(version_dir)
    except FileNotFoundError as exc:
        raise ValueError(
            f"features of {spec.model} version {version} not found ({exc.filename}); the Labeler's "
            "model_root must hold the versions the model server serves"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"features of {spec.model} version {version} in {version_dir} are unreadable: {exc}"
        ) from None
    # Versions with identical feature artifacts share one pipeline (and, per
    # request, one set of features).
    pipeline = shared_features.intern(pipeline)
    if spec.bundle or "labels" in meta:
        # A bundle's columns (modelspec.labels) are pinned with its features.
        meta_checked = {k: v for k, v in meta.items() if k != "label"}
        _check_exported_names(spec, version_dir, meta_checked)
        return bundle_support.loaded_version(spec, version, pipeline, meta)
    expected = {
        "label": spec.label,
        "model": spec.model,
        "signature_name": spec.signature_name,
        "input_name": spec.input_name,
        "output_name": spec.output_name,
    }
    for key, want in expected.items():
        got = meta.get(key)
        if got is not None and got != want:
            raise ValueError(
                f"{version_dir} was exported with {key} {got!r} but label {spec.label} is configured "
                f"with {want!r}; fix the Labeler config"
            )
    return LoadedVersion(version=version, pipeline=pipeline, metadata=meta)


def _check_exported_names(spec: LabelSpec, version_dir: pathlib.Path, meta: dict) -> None:
    for key in ("model", "signature_name", "input_name", "output_name"):
        got, want = meta.get(key), getattr(spec, key)
        if got is not None and got != want:
            raise ValueError(
                f"{version_dir} was exported with {key} {got!r} but {spec.label} is configured "
                f"with {want!r}; fix the Labeler config"
            )


def _same_model(a: LabelSpec, b: LabelSpec) -> bool:
    """Whether a loaded version of ``a`` is still right for ``b``."""
    keys = ("model", "target", "signature_name", "input_name", "output_name", "version", "version_label")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


class ModelRegistry:
    """The label -> (version, features) table, kept current by polling."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientPool,
        on_change: Callable[[Snapshot], None] | None = None,
        role: str = "",
    ) -> None:
        self._clients = clients
        self._on_change = on_change
        # "" for the served labels; "canary" or "shadow" for a rollout's
        # candidates, whose log lines say "canary candidate of <label>".
        self._role = role
        self._inflight: dict[str, asyncio.Future[Binding]] = {}
        self._bundle_inflight: dict[str, asyncio.Future[Binding | None]] = {}  # by model
        bindings = {
            s.label: Binding(s, None, LabelState.LOADING, "waiting for the model server's status")
            for s in settings.labels
        }
        self._snapshot = Snapshot(settings, bindings, _fresh_bundles(settings))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- polling -----------------------------------------------------------------

    async def run(self) -> None:
        """Poll every label forever (cancel to stop)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("version poll failed")
            await asyncio.sleep(self._snapshot.settings.poll_interval_s)

    async def refresh(self, labels: list[str] | None = None) -> Snapshot:
        """Poll the given labels (default: all) now; returns the new snapshot.

        Concurrent refreshes of one label share one poll."""
        names = list(self._snapshot.bindings) if labels is None else labels
        await asyncio.gather(
            *(self._refresh_one(n) for n in names if n in self._snapshot.bindings),
            *(self._refresh_bundle(m) for m in (self._snapshot.bundles if labels is None else ())),
        )
        return self._snapshot

    async def refresh_bundle(self, model: str) -> Binding | None:
        """Poll one bundle now; its binding afterwards (None: no longer configured)."""
        await self._refresh_bundle(model)
        return self._snapshot.bundles.get(model)

    def _refresh_bundle(self, model: str) -> asyncio.Future[Binding | None]:
        future = self._bundle_inflight.get(model)
        if future is None or future.done():
            future = asyncio.ensure_future(self._poll_and_store_bundle(model))
            self._bundle_inflight[model] = future
        return asyncio.shield(future)

    async def _poll_and_store_bundle(self, model: str) -> Binding | None:
        snapshot = self._snapshot
        current = snapshot.bundles.get(model)
        if current is None:
            return None
        updated = await self._poll(snapshot.settings, current)
        latest = self._snapshot
        now = latest.bundles.get(model)
        if now is not None and _same_model(now.spec, updated.spec) and updated != now:
            self._store(latest, {}, {model: dataclasses.replace(updated, spec=now.spec)})
        return self._snapshot.bundles.get(model)

    def _refresh_one(self, label: str) -> asyncio.Future[Binding]:
        future = self._inflight.get(label)
        if future is None or future.done():
            future = asyncio.ensure_future(self._poll_and_store(label))
            self._inflight[label] = future
        # A caller that gives up (its deadline) must not cancel the shared poll.
        return asyncio.shield(future)

    async def _poll_and_store(self, label: str) -> Binding:
        snapshot = self._snapshot
        current = snapshot.bindings[label]
        updated = await self._poll(snapshot.settings, current)
        latest = self._snapshot
        # The config may have been reloaded meanwhile; store only if this label
        # still means the same model.
        now = latest.bindings.get(label)
        if now is not None and _same_model(now.spec, updated.spec) and updated != now:
            self._store(latest, {label: dataclasses.replace(updated, spec=now.spec)})
        return self._snapshot.bindings.get(label, updated)

    def _store(
        self, base: Snapshot, changes: dict[str, Binding], bundle_changes: dict[str, Binding] | None = None
    ) -> None:
        bindings = {**base.bindings, **changes}
        bundles = {**base.bundles, **(bundle_changes or {})}
        logged = [(name, b, base.bindings.get(name)) for name, b in changes.items()]
        logged += [(b.spec.label, b, base.bundles.get(m)) for m, b in (bundle_changes or {}).items()]
        for name, b, old in logged:
            if old is None or (old.state, old.message, _version(old)) != (b.state, b.message, _version(b)):
                log.info(
                    "%s %s (%s): %s, version %s%s",
                    f"{self._role} candidate of" if self._role else "label",
                    name,
                    b.spec.model,
                    b.state.value,
                    _version(b) or "none",
                    f": {b.message}" if b.message else "",
                )
        self._snapshot = Snapshot(base.settings, bindings, bundles)
        if self._on_change is not None:
            self._on_change(self._snapshot)

    async def _poll(self, settings: Settings, current: Binding) -> Binding:
        """Ask the model server which version to use; load its features if new."""
        spec = current.spec
        client = self._clients.get(spec.target)
        timeout = min(_STATUS_TIMEOUT_MAX_S, max(settings.poll_interval_s, spec.timeout_s))
        try:
            statuses = await client.model_status(spec.model, spec.version, spec.version_label, timeout)
        except ModelCallError as exc:
            if exc.code_name == "NOT_FOUND":
                return dataclasses.replace(
                    current,
                    state=LabelState.UNAVAILABLE if current.loaded else LabelState.LOADING,
                    message=f"{_wanted(spec)} is not served (yet): {exc.message}",
                    not_served=True,
                )
            return dataclasses.replace(
                current,
                state=LabelState.UNAVAILABLE,
                message=f"GetModelStatus failed: {exc.code_name}: {exc.message}",
            )
        available = [v for v, state, _ in statuses if state == "AVAILABLE"]
        if not available:
            seen = ", ".join(f"{v}: {s}{' ' + e if e else ''}" for v, s, e in statuses) or "none"
            return dataclasses.replace(
                current,
                state=LabelState.UNAVAILABLE if current.loaded else LabelState.LOADING,
                message=f"no version of {_wanted(spec)} is AVAILABLE on {spec.target} (versions: {seen})",
            )
        version = max(available)
        if current.loaded is not None and current.loaded.version == version:
            settled = dataclasses.replace(current, state=LabelState.AVAILABLE, message="", not_served=False)
            return _settle(settled, available)
        if (behind := await self._replica_behind(settings, current, version)) is not None:
            return behind
        try:
            loaded = await asyncio.to_thread(load_version, settings.model_root, spec, version)
            bundle_support.check_switch(spec, current.loaded, loaded)
        except ValueError as exc:
            # Keep serving the version we have if the server still serves it.
            keep = current.loaded is not None and current.loaded.version in available
            return dataclasses.replace(
                current,
                state=LabelState.AVAILABLE if keep else LabelState.UNAVAILABLE,
                message=f"cannot switch to version {version}: {exc}",
            )
        moved_up = current.loaded is not None and current.loaded.version < version
        return Binding(spec, loaded, LabelState.AVAILABLE, "", previous=current.loaded if moved_up else None)

    async def _replica_behind(self, settings: Settings, current: Binding, version: int) -> Binding | None:
        """A poll that reached a replica still on an older version (rollout
        fallback, issue 17): keep the newer one, and keep the older one with
        its features as ``previous`` for the Predicts that reach that
        replica. Only when polls keep saying so is it a rollback (None)."""
        if current.loaded is None or version >= current.loaded.version:
            return None
        if current.polls_behind + 1 >= SETTLED_POLLS:
            return None  # every poll says so: a rollback; switch to it
        previous = current.previous
        if previous is None or previous.version != version:
            try:
                previous = await asyncio.to_thread(load_version, settings.model_root, current.spec, version)
            except ValueError as exc:
                log.warning("cannot keep version %d of %s for fallback: %s", version, current.spec.model, exc)
                previous = current.previous
        return dataclasses.replace(
            current,
            state=LabelState.AVAILABLE,
            message="",
            previous=previous,
            polls_behind=current.polls_behind + 1,
            polls_settled=0,
        )

    # -- reloading ---------------------------------------------------------------

    async def reload(self, settings: Settings) -> None:
        """Switch to a new configuration without dropping requests: labels whose
        model is unchanged keep their loaded version; new or changed ones are
        polled (and their features loaded) before the table is swapped."""
        self.install(await self.prepare(settings))

    async def prepare(self, settings: Settings) -> Snapshot:
        """The table ``settings`` would have, polled now; nothing is swapped
        (``install`` swaps it), so a caller may still refuse it."""
        old = self._snapshot
        bindings: dict[str, Binding] = {}
        fresh: list[Binding] = []
        for spec in settings.labels:
            before = old.bindings.get(spec.label)
            if before is not None and _same_model(before.spec, spec):
                bindings[spec.label] = dataclasses.replace(before, spec=spec)
            else:
                fresh.append(Binding(spec, None, LabelState.LOADING, "waiting for the model server's status"))
        polled = await asyncio.gather(*(self._poll(settings, b) for b in fresh))
        for b in polled:
            bindings[b.spec.label] = b
        ordered = {s.label: bindings[s.label] for s in settings.labels}
        # Bundles are polled afresh: a reload also accepts a label set that
        # check_switch refused (a version dropping labels).
        kept_bundles: dict[str, Binding] = {}
        fresh_bundles = list(_fresh_bundles(settings).values())
        for b in await asyncio.gather(*(self._poll(settings, b) for b in fresh_bundles)):
            kept_bundles[b.spec.model] = b
        return Snapshot(settings, ordered, {s.model: kept_bundles[s.model] for s in settings.bundles})

    def install(self, prepared: Snapshot) -> None:
        """Swap in a table ``prepare`` made."""
        settings = prepared.settings
        self._inflight.clear()
        self._bundle_inflight.clear()
        self._store(Snapshot(settings, {}), dict(prepared.bindings), dict(prepared.bundles))
        self._clients.retain([s.target for s in (*settings.labels, *settings.bundles)])


def _fresh_bundles(settings: Settings) -> dict[str, Binding]:
    return {
        s.model: Binding(s, None, LabelState.LOADING, "waiting for the model server's status")
        for s in settings.bundles
    }


# Rollout fallback (issue 17). Behind one target several replicas answer in
# turn (round robin), so one poll sees one replica. The previous version is
# kept while polls still show it served; this many polls in a row without it
# mean every replica moved, and it is dropped. This many polls in a row
# showing only the previous version mean a rollback, not a replica behind.
SETTLED_POLLS = 5


def _settle(binding: Binding, available: list[int]) -> Binding:
    """Count polls that no longer show the previous version; drop it (and its
    features) once every replica has surely moved."""
    if binding.previous is None:
        return binding if binding.polls_behind == 0 else dataclasses.replace(binding, polls_behind=0)
    if binding.previous.version in available:
        return dataclasses.replace(binding, polls_behind=0, polls_settled=0)
    settled = binding.polls_settled + 1
    if settled >= SETTLED_POLLS:
        return dataclasses.replace(binding, previous=None, polls_behind=0, polls_settled=0)
    return dataclasses.replace(binding, polls_behind=0, polls_settled=settled)


def _version(binding: Binding) -> int:
    return binding.loaded.version if binding.loaded is not None else 0


def _wanted(spec: LabelSpec) -> str:
    if spec.version is not None:
        return f"{spec.model} version {spec.version}"
    if spec.version_label is not None:
        return f"{spec.model} version label {spec.version_label!r}"
    return spec.model
