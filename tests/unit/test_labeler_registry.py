"""labeler.registry with a fake status source (a stand-in for the client pool
whose GetModelStatus answers are scripted) and real feature artifacts written
with modelspec.features; no model server, no TensorFlow.

What it checks: a served version's features are loaded once and the label
switches to it in one snapshot swap; a version whose features are broken never
replaces a working one; a model that disappears, or a server that cannot be
asked, makes the label UNAVAILABLE without dropping what is loaded; a config
reload keeps the labels whose model did not change."""

from __future__ import annotations

import asyncio
import pathlib
import threading

import pytest

from labeler import registry as registry_module
from labeler.config import validate
from labeler.domain import LabelState, ModelCallError
from labeler.registry import ModelRegistry, Snapshot
from labeler.v1 import config_pb2
from modelspec.features import ARTIFACT_DIR, SETTINGS_FILE, FeaturePipeline, FeatureSettings

TARGET = "127.0.0.1:8500"
TEST_TIMEOUT_S = 30.0


class FakeStatusClient:
    """GetModelStatus answers per model: a list of (version, state, error), or
    a ModelCallError to raise. While ``gate`` is set, calls wait for it."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, str, str]] | ModelCallError] = {}
        self.calls: list[tuple[str, int | None, str | None]] = []
        self.gate: asyncio.Event | None = None

    async def model_status(self, model, version=None, version_label=None, timeout=2.0):
        self.calls.append((model, version, version_label))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(
            model, ModelCallError("NOT_FOUND", f"Servable not found for request: {model}")
        )
        if isinstance(answer, ModelCallError):
            raise answer
        return list(answer)


class FakeClientPool:
    """What the registry uses of labeler.model_client.ClientPool."""

    def __init__(self) -> None:
        self.client = FakeStatusClient()
        self.targets: list[str] = []
        self.retained: list[list[str]] = []

    def get(self, target: str) -> FakeStatusClient:
        self.targets.append(target)
        return self.client

    def retain(self, targets, grace: float = 10.0) -> None:
        self.retained.append(list(targets))


def available(*versions: int) -> list[tuple[int, str, str]]:
    return [(v, "AVAILABLE", "") for v in versions]


def export_features(model_root: pathlib.Path, model: str, version: int, words: list[str], **meta) -> None:
    """A version directory with the feature artifacts a trained model would have."""
    pipeline = FeaturePipeline(words, {}, FeatureSettings(cutlen=4, ngram_range=1, maxlen=4))
    names = {"model": model, "signature_name": "serving_default", "input_name": "input"}
    pipeline.save(model_root / model / str(version), **{**names, "output_name": "probability", **meta})


def settings(model_root: pathlib.Path, *labels: tuple[str, str], **entry):
    message = config_pb2.LabelerConfig(model_root=str(model_root), default_target=TARGET)
    for label, model in labels:
        message.labels.add(label=label, model=model, **entry)
    return validate(message)


class Loads:
    """Counts the feature loads (labeler.registry.load_version) per (model, version)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.done: list[tuple[str, int]] = []
        self.hold: threading.Event | None = None  # set: loads wait for it (they run in a thread)
        self.holding = threading.Event()  # a load is waiting for ``hold``
        real = registry_module.load_version

        def counting(model_root, spec, version):
            if self.hold is not None:
                self.holding.set()
                assert self.hold.wait(TEST_TIMEOUT_S)
            self.done.append((spec.model, version))
            return real(model_root, spec, version)

        monkeypatch.setattr(registry_module, "load_version", counting)


@pytest.fixture
def loads(monkeypatch) -> Loads:
    return Loads(monkeypatch)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def movie(snapshot: Snapshot):
    return snapshot.bindings["影视"]


def test_the_served_version_is_loaded_once(tmp_path, loads):
    export_features(tmp_path, "movie", 1, ["电影", "导演"])
    pool = FakeClientPool()
    changes: list[Snapshot] = []
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool, on_change=changes.append)

    async def main():
        first = reg.snapshot()
        assert movie(first).state is LabelState.LOADING and movie(first).loaded is None
        assert not first.ready
        pool.client.answers["movie"] = available(1)
        current = await reg.refresh()
        b = movie(current)
        assert (b.state, b.message) == (LabelState.AVAILABLE, "")
        assert b.loaded is not None and b.loaded.version == 1
        assert b.loaded.pipeline.vocabulary == ["电影", "导演"]
        assert b.loaded.metadata["model"] == "movie"
        assert current.ready
        # Nothing changed: the same snapshot, no second load.
        assert await reg.refresh() is current
        assert await reg.refresh() is current
        assert reg.snapshot() is current
        assert movie(first).state is LabelState.LOADING  # a snapshot never changes

    run(main())
    assert loads.done == [("movie", 1)]
    assert len(changes) == 1 and movie(changes[0]).loaded.version == 1
    assert pool.targets and set(pool.targets) == {TARGET}


def test_a_new_version_is_loaded_once_then_swapped_in_whole(tmp_path, loads):
    export_features(tmp_path, "movie", 1, ["旧"])
    export_features(tmp_path, "movie", 2, ["新", "词"])
    pool = FakeClientPool()
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool)

    async def main():
        pool.client.answers["movie"] = available(1)
        old = await reg.refresh()
        pool.client.answers["movie"] = available(1, 2)
        loads.hold = threading.Event()
        refreshing = asyncio.ensure_future(reg.refresh())
        assert await asyncio.to_thread(loads.holding.wait, TEST_TIMEOUT_S)
        # While version 2's features load, requests see version 1, whole.
        during = reg.snapshot()
        assert during is old
        assert movie(during).loaded.version == 1 and movie(during).loaded.pipeline.vocabulary == ["旧"]
        assert movie(during).state is LabelState.AVAILABLE
        loads.hold.set()
        new = await refreshing
        assert movie(new).loaded.version == 2 and movie(new).loaded.pipeline.vocabulary == ["新", "词"]
        assert movie(new).state is LabelState.AVAILABLE
        assert movie(old).loaded.version == 1  # a request holding the old snapshot keeps its version
        await reg.refresh()
        assert reg.snapshot() is new

    run(main())
    assert loads.done == [("movie", 1), ("movie", 2)]


def test_concurrent_refreshes_share_one_poll(tmp_path, loads):
    export_features(tmp_path, "movie", 3, ["a"])
    pool = FakeClientPool()
    pool.client.answers["movie"] = available(3)
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool)

    async def main():
        pool.client.gate = asyncio.Event()
        refreshes = [asyncio.ensure_future(reg.refresh()) for _ in range(3)]
        await asyncio.sleep(0.05)
        pool.client.gate.set()
        snapshots = await asyncio.gather(*refreshes)
        assert all(movie(s).loaded.version == 3 for s in snapshots)

    run(main())
    assert len(pool.client.calls) == 1
    assert loads.done == [("movie", 3)]


def test_a_broken_version_never_replaces_a_working_one(tmp_path, loads):
    export_features(tmp_path, "movie", 1, ["好"])
    pool = FakeClientPool()
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool)

    async def main():
        pool.client.answers["movie"] = available(1)
        working = await reg.refresh()

        # Served, but its features are not in the Labeler's model_root.
        pool.client.answers["movie"] = available(1, 2)
        b = movie(await reg.refresh())
        assert b.loaded is movie(working).loaded
        assert b.state is LabelState.AVAILABLE  # version 1 is still served: keep using it
        assert "cannot switch to version 2" in b.message and "not found" in b.message

        # Exported for another output tensor than the label is configured with.
        export_features(tmp_path, "movie", 2, ["坏"], output_name="logits")
        b = movie(await reg.refresh())
        assert b.loaded is movie(working).loaded and b.state is LabelState.AVAILABLE
        assert "'logits'" in b.message and "fix the Labeler config" in b.message

        # Unreadable artifacts.
        (tmp_path / "movie" / "2" / ARTIFACT_DIR / SETTINGS_FILE).write_text("{not json")
        b = movie(await reg.refresh())
        assert b.loaded is movie(working).loaded and "unreadable" in b.message

        # The server drops version 1: the label cannot be scored, but the
        # broken version is still not used.
        pool.client.answers["movie"] = available(2)
        b = movie(await reg.refresh())
        assert b.state is LabelState.UNAVAILABLE
        assert b.loaded is not None and b.loaded.version == 1

        # Version 2 repaired: the next poll switches to it.
        (tmp_path / "movie" / "2" / ARTIFACT_DIR / SETTINGS_FILE).unlink()
        export_features(tmp_path, "movie", 2, ["修好"])
        b = movie(await reg.refresh())
        assert (b.state, b.message) == (LabelState.AVAILABLE, "")
        assert b.loaded.version == 2 and b.loaded.pipeline.vocabulary == ["修好"]

    run(main())
    assert loads.done.count(("movie", 1)) == 1
    assert loads.done[-1] == ("movie", 2)


def test_a_model_that_disappears_makes_its_label_unavailable_until_it_is_back(tmp_path, loads):
    export_features(tmp_path, "movie", 1, ["在"])
    pool = FakeClientPool()
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool)

    async def main():
        # Never served yet: still loading, and why.
        b = movie(await reg.refresh())
        assert b.state is LabelState.LOADING and "not served" in b.message

        pool.client.answers["movie"] = available(1)
        loaded = movie(await reg.refresh()).loaded
        assert loaded is not None

        for answer, why in [
            (ModelCallError("NOT_FOUND", "Servable not found"), "is not served"),
            ([(1, "END", ""), (2, "LOADING", "")], "no version of movie is AVAILABLE"),
            (ModelCallError("UNAVAILABLE", "connection refused"), "GetModelStatus failed: UNAVAILABLE"),
        ]:
            pool.client.answers["movie"] = answer
            snap = await reg.refresh()
            b = movie(snap)
            assert b.state is LabelState.UNAVAILABLE, answer
            assert why in b.message
            assert b.loaded is loaded  # kept for when it comes back

        pool.client.answers["movie"] = available(1)
        b = movie(await reg.refresh())
        assert (b.state, b.message) == (LabelState.AVAILABLE, "") and b.loaded is loaded

    run(main())
    assert loads.done == [("movie", 1)]  # coming back does not load the features again


def test_a_pinned_version_or_label_is_what_the_registry_asks_for(tmp_path, loads):
    export_features(tmp_path, "movie", 5, ["五"])
    pool = FakeClientPool()
    pool.client.answers["movie"] = available(5)

    async def main():
        for entry, asked in [
            ({"version": 5}, ("movie", 5, None)),
            ({"version_label": "stable"}, ("movie", None, "stable")),
        ]:
            pool.client.calls.clear()
            reg = ModelRegistry(settings(tmp_path, ("影视", "movie"), **entry), pool)
            assert movie(await reg.refresh()).loaded.version == 5
            assert pool.client.calls == [asked]

    run(main())


def test_reload_keeps_unchanged_labels_and_polls_new_or_changed_ones(tmp_path, loads):
    export_features(tmp_path, "movie", 1, ["影"])
    export_features(tmp_path, "beauty", 4, ["美"])
    pool = FakeClientPool()
    pool.client.answers.update(movie=available(1), beauty=available(4))
    reg = ModelRegistry(settings(tmp_path, ("影视", "movie")), pool)

    async def main():
        kept = movie(await reg.refresh()).loaded
        await reg.reload(settings(tmp_path, ("影视", "movie"), ("美妆", "beauty")))
        snap = reg.snapshot()
        assert list(snap.bindings) == ["影视", "美妆"]
        assert movie(snap).loaded is kept
        assert snap.bindings["美妆"].loaded.version == 4 and snap.ready
        assert pool.retained[-1] == [TARGET, TARGET]

        # The label now means another tensor of the same model: polled and loaded anew.
        export_features(tmp_path, "movie", 1, ["影"], output_name="score")
        await reg.reload(settings(tmp_path, ("影视", "movie"), output_name="score"))
        snap = reg.snapshot()
        assert list(snap.bindings) == ["影视"]
        assert movie(snap).loaded is not kept and movie(snap).loaded.metadata["output_name"] == "score"

    run(main())
    assert loads.done == [("movie", 1), ("beauty", 4), ("movie", 1)]


def test_feature_artifacts_of_another_label_are_refused(tmp_path):
    """The artifacts say which label they were exported for; a config binding
    them to another label is named, as a model or signature mismatch is."""
    export_features(tmp_path, "movie", 1, ["电影"], label="影视")
    spec = settings(tmp_path, ("影视", "movie")).labels[0]
    assert registry_module.load_version(tmp_path, spec, 1).version == 1
    wrong = settings(tmp_path, ("美妆", "movie")).labels[0]
    with pytest.raises(
        ValueError, match=r"exported with label '影视' but label 美妆 is configured with '美妆'"
    ):
        registry_module.load_version(tmp_path, wrong, 1)
