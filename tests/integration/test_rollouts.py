"""Canary and shadow rollouts through a real Labeler and a real
labeler-modelserver serving two versions of ``movie`` (v1 and a retrained
v2, whose probabilities differ):

- a canary splits documents within a tolerance of its percent, sticky per
  document, and each answer names the version that scored it;
- a shadow never changes the answer, and its agreement metrics equal what the
  two versions answer when asked directly;
- promotion (pin v2, drop the canary) and rollback (pin v1) by reload of the
  config file under load lose no request; a bad rollout in the file is
  rejected on reload with a message naming the field, and the old config stays.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
import pytest

from labeler import cli
from labeler.config import load_settings
from labeler.model_client import ModelServerClient
from labeler.rollout import routes_to_canary
from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from modelspec.features import FeaturePipeline
from tests.support.labeler_support import BackgroundLoop, label_versions, stub, wait_until

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

LABEL = "影视"


@pytest.fixture(scope="module")
def two_versions(trained_model_root, sample_corpus, tmp_path_factory):
    """A model root whose movie has v1 (the fixture's) and v2, retrained with another seed."""
    import shutil

    from tests.conftest import train_small
    from trainer.recipes.export import export_version

    root = tmp_path_factory.mktemp("rollout") / "models"
    shutil.copytree(trained_model_root, root)
    v1 = int(next((root / "movie").iterdir()).name)
    retrained = train_small(sample_corpus, tmp_path_factory.mktemp("retrain"), "movie", seed=7)
    v2, _ = export_version(retrained.model, retrained.pipeline, root, "movie", LABEL)
    assert v2 > v1
    return root, v1, v2


@pytest.fixture
def stack(two_versions):
    """A model server serving every version of movie, and a loop to run a Labeler on."""
    from modelserver.server import ModelServerOptions, create_server
    from tfserving.protos import model_server_config_pb2

    root, v1, v2 = two_versions
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name="movie", base_path=str(root / "movie"), model_platform="tensorflow"
    )
    entry.model_version_policy.all.SetInParent()
    loop = BackgroundLoop()
    options = ModelServerOptions(
        model_config=config, port=0, intra_op_parallelism=1, inter_op_parallelism=1, request_threads=2
    )
    server = loop.run(create_server(options))
    port = server.port
    manager = server.app
    yield loop, f"127.0.0.1:{port}", root, v1, v2
    loop.run(server.stop(None))
    loop.run(manager.close())
    loop.close()


def _config_text(root, target: str, version: int, canary: str = "", shadow: str = "") -> str:
    return (
        f'model_root: "{root}"\nversion_poll_interval_ms: 200\n'
        f'labels {{ label: "{LABEL}" model: "movie" target: "{target}" version: {version} timeout_ms: 5000 }}\n'
        + canary
        + shadow
    )


def _documents(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = [
        "电影",
        "霸王别姬",
        "口红",
        "明星",
        "演员",
        "导演",
        "时装",
        "好看",
        "推荐",
        "面膜",
        "剧情",
        "粉底",
    ]
    return [
        [words[j] for j in rng.integers(0, len(words), size=rng.integers(3, 9))] + [f"#{i}"] for i in range(n)
    ]


def _start(loop, path):
    from labeler.server import create_server

    server = loop.run(create_server(path, metrics_port=0))
    port = server.port
    assert loop.run(server.app.wait_ready(120))
    assert loop.run(server.app.rollouts.wait_ready(120))
    return server, port


def _stop(loop, server):
    loop.run(server.stop(None))
    loop.run(server.app.close())


def _classify_batch(labeler, documents) -> list[tuple[float, int]]:
    """(probability, version) of the label for each document (threshold 0: every document)."""
    out = []
    for start in range(0, len(documents), 500):
        part = documents[start : start + 500]
        reply = labeler.ClassifyBatch(
            labeler_pb2.ClassifyBatchRequest(
                documents=[labeler_pb2.Document(words=d) for d in part], threshold=0
            ),
            timeout=60,
        )
        assert not reply.failures, reply.failures
        out += [(r.labels[0].probability, r.labels[0].model_version) for r in reply.results]
    return out


def test_canary_splits_sticky_per_document_and_names_the_version(stack, tmp_path):
    loop, target, root, v1, v2 = stack
    path = tmp_path / "labeler.textproto"
    canary = f'canaries {{ label: "{LABEL}" version: {v2} percent: 20 }}\n'
    path.write_text(_config_text(root, target, v1, canary=canary), encoding="utf-8")
    server, port = _start(loop, path)
    try:
        documents = _documents(3000)
        channel, labeler = stub(port)
        with channel:
            scored = _classify_batch(labeler, documents)
            versions = [v for _, v in scored]
            assert set(versions) == {v1, v2}
            share = versions.count(v2) / len(versions)
            assert 0.17 <= share <= 0.23, share
            # Each document went to the arm its words hash to...
            assert versions == [v2 if routes_to_canary(LABEL, d, 20) else v1 for d in documents]
            # ...and so does a Classify of the same words, every time (sticky).
            for words, (probability, version) in list(zip(documents, scored, strict=True))[:60]:
                for _ in range(2):
                    reply = labeler.Classify(
                        labeler_pb2.ClassifyRequest(words=words, threshold=0), timeout=30
                    )
                    assert reply.labels[0].model_version == version
                    assert reply.labels[0].probability == pytest.approx(probability, abs=1e-5)
            # ListLabels (and `labeler labels`) show the canary.
            info = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels[0]
            assert (info.model_version, info.canary.model_version, info.canary.percent) == (v1, v2, 20)
            assert info.canary.state == labeler_pb2.LABEL_STATE_AVAILABLE and not info.HasField("shadow")
        metrics = server.app.metrics.registry
        assert (
            metrics.get_sample_value("labeler_rollout_candidate_version", {"label": LABEL, "mode": "canary"})
            == v2
        )
        assert metrics.get_sample_value("labeler_rollout_percent", {"label": LABEL, "mode": "canary"}) == 20
    finally:
        _stop(loop, server)


async def _direct(target: str, root, version: int, documents) -> np.ndarray:
    """What one version answers when asked directly (no Labeler)."""
    pipeline, _ = FeaturePipeline.load(root / "movie" / str(version))
    client = ModelServerClient(target)
    try:
        loop = asyncio.get_running_loop()
        parts = []
        for start in range(0, len(documents), 500):
            features = pipeline.transform(documents[start : start + 500])
            prediction = await client.predict(
                "movie", version, "serving_default", "input", "probability", features, loop.time() + 60
            )
            parts.append(prediction.probabilities)
        return np.concatenate(parts)
    finally:
        await client.close()


def test_shadow_never_changes_the_answer_and_its_metrics_match_both_versions(stack, tmp_path, capsys):
    loop, target, root, v1, v2 = stack
    path = tmp_path / "labeler.textproto"
    shadow = f'shadows {{ label: "{LABEL}" version: {v2} sample_percent: 100 max_in_flight: 64 }}\n'
    path.write_text(_config_text(root, target, v1, shadow=shadow), encoding="utf-8")
    server, port = _start(loop, path)
    try:
        documents = _documents(1500, seed=1)
        channel, labeler = stub(port)
        with channel:
            scored = _classify_batch(labeler, documents)
        loop.run(server.app.rollouts.drain_shadows())
        url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
        capsys.readouterr()
        assert cli.main(["labels", "--target", f"127.0.0.1:{port}"]) == 0
        assert f"shadow=version {v2} at 100%" in capsys.readouterr().out
        assert cli.main(["shadow-report", "--metrics-url", url]) == 0
        report = capsys.readouterr().out
        served = loop.run(_direct(target, root, v1, documents))
        candidate = loop.run(_direct(target, root, v2, documents))
    finally:
        _stop(loop, server)
    # The answer is the served version's, untouched.
    assert {v for _, v in scored} == {v1}
    assert np.allclose([p for p, _ in scored], served, atol=1e-6)
    assert not np.allclose(served, candidate, atol=1e-3), "the retrained v2 should differ from v1"

    metrics = server.app.metrics.registry

    def value(name, **labels):
        return metrics.get_sample_value(name, {"label": LABEL, **labels}) or 0.0

    assert value("labeler_shadow_requests_total", outcome="OK") == 3  # three ClassifyBatch calls
    assert value("labeler_shadow_documents_total") == len(documents)
    assert value("labeler_shadow_agreements_total") == int(np.sum((served >= 0.5) == (candidate >= 0.5)))
    assert value("labeler_shadow_positives_total", arm="served") == int(np.sum(served >= 0.5))
    assert value("labeler_shadow_positives_total", arm="shadow") == int(np.sum(candidate >= 0.5))
    assert value("labeler_shadow_probability_difference_sum") == pytest.approx(
        float(np.sum(np.abs(candidate - served))), abs=1e-3
    )
    # The operator's report (labeler shadow-report against the live endpoint).
    agreement = value("labeler_shadow_agreements_total") / len(documents)
    row = next(line.split() for line in report.splitlines() if line.startswith(LABEL))
    assert row[1:5] == [str(v2), "100", str(len(documents)), f"{agreement * 100:.2f}%"]
    for bound in (0.01, 0.05, 0.1):
        within = value("labeler_shadow_probability_difference_bucket", le=str(bound))
        assert within == int(np.sum(np.abs(candidate - served) <= bound)), bound


class _Traffic:
    """Concurrent Classify calls (distinct documents) until stopped."""

    def __init__(self, port: int, workers: int = 4, batch: int = 0) -> None:
        self.port = port
        self.workers = workers
        self.batch = batch  # > 0: ClassifyBatch calls of this many documents
        self.versions: list[int] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        documents = _documents(5000, seed=2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            labeler = labeler_pb2_grpc.LabelerStub(channel)

            async def worker(w: int) -> None:
                i = w
                while not self._stop.is_set():
                    if self.batch:
                        await self._batch(labeler, documents, i)
                        i += self.workers * self.batch
                        await asyncio.sleep(0.005)
                        continue
                    try:
                        reply = await labeler.Classify(
                            labeler_pb2.ClassifyRequest(words=documents[i % len(documents)], threshold=0),
                            timeout=10,
                        )
                        if reply.failures:
                            self.errors += [f"{f.code_name}: {f.message}" for f in reply.failures]
                        else:
                            self.versions.append(reply.labels[0].model_version)
                    except grpc.aio.AioRpcError as exc:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    i += self.workers
                    await asyncio.sleep(0.005)

            await asyncio.gather(*(worker(w) for w in range(self.workers)))

    async def _batch(self, labeler, documents, i: int) -> None:
        part = [documents[(i + k) % len(documents)] for k in range(self.batch)]
        try:
            reply = await labeler.ClassifyBatch(
                labeler_pb2.ClassifyBatchRequest(
                    documents=[labeler_pb2.Document(words=d) for d in part], threshold=0
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{exc.code().name}: {exc.details()}")
            return
        self.errors += [f"{f.code_name}: {f.message}" for f in reply.failures]
        self.versions += [r.labels[0].model_version for r in reply.results if r.labels]

    def stop(self) -> None:
        self._stop.set()


def test_promotion_and_rollback_by_reload_under_load(stack, tmp_path):
    loop, target, root, v1, v2 = stack
    path = tmp_path / "labeler.textproto"
    canary = f'canaries {{ label: "{LABEL}" version: {v2} percent: 10 }}\n'
    shadow = f'shadows {{ label: "{LABEL}" version: {v2} sample_percent: 50 }}\n'
    path.write_text(_config_text(root, target, v1, canary=canary, shadow=shadow), encoding="utf-8")
    server, port = _start(loop, path)
    app = server.app
    traffic = _Traffic(port)
    running = asyncio.run_coroutine_threadsafe(traffic.run(), loop.loop)
    try:
        channel, labeler = stub(port)
        with channel:

            def served_now(n: int = 30) -> None:
                seen = len(traffic.versions)
                wait_until(lambda: len(traffic.versions) >= seen + n, 60, what="traffic")

            served_now()
            # A bad rollout in the file is rejected on reload; the running config stays.
            bad = f'canaries {{ label: "{LABEL}" version: {v1} percent: 10 }}\n'
            path.write_text(_config_text(root, target, v1, canary=bad), encoding="utf-8")
            assert not loop.run(app.reload_from_file())
            with pytest.raises(ValueError, match=rf"canaries\[0\] \({LABEL}\): version {v1} is the version"):
                load_settings(path)
            assert app.registry.snapshot().settings.canaries[0].candidate.version == v2

            # Promote: pin v2, drop the canary and the shadow.
            path.write_text(_config_text(root, target, v2), encoding="utf-8")
            assert loop.run(app.reload_from_file())
            assert label_versions(labeler)[LABEL] == (v2, "LABEL_STATE_AVAILABLE")
            promoted_at = len(traffic.versions)
            served_now()
            assert set(traffic.versions[promoted_at + 8 :]) == {
                v2
            }  # 4 workers: calls in flight may finish on v1

            # Roll back: pin v1 again.
            path.write_text(_config_text(root, target, v1), encoding="utf-8")
            assert loop.run(app.reload_from_file())
            assert label_versions(labeler)[LABEL] == (v1, "LABEL_STATE_AVAILABLE")
            rolled_back_at = len(traffic.versions)
            served_now()
            assert set(traffic.versions[rolled_back_at + 8 :]) == {v1}
        traffic.stop()
        running.result(60)
    finally:
        traffic.stop()
        _stop(loop, server)
    assert traffic.errors == []
    assert len(traffic.versions) >= 90
    assert (
        app.metrics.registry.get_sample_value("labeler_rollout_percent", {"label": LABEL, "mode": "canary"})
        is None
    )


def test_a_failing_shadow_leaves_every_classify_succeeding(two_versions, tmp_path):
    """The shadow's version disappears from the model server mid-traffic: its
    Predicts fail (counted per code), every Classify still answers from v1."""
    import shutil

    from modelserver.server import ModelServerOptions, create_server
    from tfserving.protos import model_server_config_pb2

    source, v1, v2 = two_versions
    root = tmp_path / "models"
    shutil.copytree(source, root)
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name="movie", base_path=str(root / "movie"), model_platform="tensorflow"
    )
    entry.model_version_policy.all.SetInParent()
    loop = BackgroundLoop()
    options = ModelServerOptions(
        model_config=config,
        port=0,
        intra_op_parallelism=1,
        inter_op_parallelism=1,
        request_threads=2,
        file_system_poll_wait_seconds=0.3,
    )
    model_server = loop.run(create_server(options))
    ms_port = model_server.port
    manager = model_server.app
    path = tmp_path / "labeler.textproto"
    shadow = f'shadows {{ label: "{LABEL}" version: {v2} sample_percent: 100 max_in_flight: 64 }}\n'
    path.write_text(_config_text(root, f"127.0.0.1:{ms_port}", v1, shadow=shadow), encoding="utf-8")
    server, port = _start(loop, path)
    metrics = server.app.metrics.registry

    def shadow_failures() -> float:
        return sum(
            s.value
            for family in metrics.collect()
            if family.name == "labeler_shadow_requests"
            for s in family.samples
            if s.name.endswith("_total") and s.labels["outcome"] not in ("OK", "SHED")
        )

    traffic = _Traffic(port)
    running = asyncio.run_coroutine_threadsafe(traffic.run(), loop.loop)
    try:
        wait_until(lambda: len(traffic.versions) >= 20, 60, what="traffic")
        assert shadow_failures() == 0
        shutil.rmtree(root / "movie" / str(v2))  # the model server unloads the shadow's version
        wait_until(lambda: shadow_failures() >= 10, 60, what="failing shadow Predicts")
        seen = len(traffic.versions)
        wait_until(lambda: len(traffic.versions) >= seen + 20, 60, what="traffic after the failures")
        traffic.stop()
        running.result(60)
    finally:
        traffic.stop()
        _stop(loop, server)
        loop.run(model_server.stop(None))
        loop.run(manager.close())
        loop.close()
    assert traffic.errors == []
    assert set(traffic.versions) == {v1}
    assert (
        metrics.get_sample_value("labeler_shadow_requests_total", {"label": LABEL, "outcome": "OK"}) or 0
    ) > 0


def _own_model_server(loop, root):
    from modelserver.server import ModelServerOptions, create_server
    from tfserving.protos import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name="movie", base_path=str(root / "movie"), model_platform="tensorflow"
    )
    entry.model_version_policy.all.SetInParent()
    options = ModelServerOptions(
        model_config=config,
        port=0,
        intra_op_parallelism=1,
        inter_op_parallelism=1,
        request_threads=2,
        file_system_poll_wait_seconds=0.3,
    )
    return loop.run(create_server(options))


def test_a_canary_whose_candidate_goes_away_falls_back_to_the_served_version(two_versions, tmp_path):
    """The canary's version disappears from the model server under
    ClassifyBatch traffic (batches split between the arms): no call and no
    document fails; the canary's documents are scored by the served version
    (counted in labeler_canary_fallbacks_total) and ListLabels says why."""
    import shutil

    source, v1, v2 = two_versions
    root = tmp_path / "models"
    shutil.copytree(source, root)
    loop = BackgroundLoop()
    model_server = _own_model_server(loop, root)
    manager = model_server.app
    path = tmp_path / "labeler.textproto"
    canary = f'canaries {{ label: "{LABEL}" version: {v2} percent: 50 }}\n'
    path.write_text(_config_text(root, f"127.0.0.1:{model_server.port}", v1, canary=canary), encoding="utf-8")
    server, port = _start(loop, path)
    metrics = server.app.metrics.registry

    def fallbacks() -> float:
        return sum(
            s.value
            for family in metrics.collect()
            if family.name == "labeler_canary_fallbacks"
            for s in family.samples
            if s.name.endswith("_total")
        )

    traffic = _Traffic(port, workers=3, batch=6)
    running = asyncio.run_coroutine_threadsafe(traffic.run(), loop.loop)
    try:
        channel, labeler = stub(port)
        with channel:
            wait_until(lambda: len(traffic.versions) >= 60, 60, what="traffic")
            assert set(traffic.versions) == {v1, v2} and fallbacks() == 0
            shutil.rmtree(root / "movie" / str(v2))  # the model server unloads the canary's version

            def canary_gone():
                # (A poll that timed out on a busy machine is UNAVAILABLE too; wait for the server's word.)
                info = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels[0]
                return (
                    info.canary.state == labeler_pb2.LABEL_STATE_UNAVAILABLE
                    and str(v2) in info.canary.message
                )

            wait_until(canary_gone, 60, what="the canary shown UNAVAILABLE")
            gone_at = len(traffic.versions)
            wait_until(
                lambda: len(traffic.versions) >= gone_at + 60, 60, what="traffic after the canary went"
            )
        traffic.stop()
        running.result(60)
    finally:
        traffic.stop()
        _stop(loop, server)
        loop.run(model_server.stop(None))
        loop.run(manager.close())
        loop.close()
    assert traffic.errors == []
    assert set(traffic.versions[gone_at:]) == {v1}
    assert fallbacks() >= 30  # about half of the documents after the candidate went
    served_ok = metrics.get_sample_value(
        "labeler_label_results_total", {"label": LABEL, "arm": "served", "code": "OK"}
    )
    canary_ok = metrics.get_sample_value(
        "labeler_label_results_total", {"label": LABEL, "arm": "canary", "code": "OK"}
    )
    # Per document: every document is counted once, on the arm whose version answered it.
    assert (served_ok, canary_ok) == (traffic.versions.count(v1), traffic.versions.count(v2))


def test_a_candidate_the_model_server_does_not_serve_is_refused_at_start_and_on_reload(
    stack, tmp_path, caplog
):
    from labeler.config import ConfigError

    loop, target, root, v1, v2 = stack
    path = tmp_path / "labeler.textproto"
    missing = f'canaries {{ label: "{LABEL}" version: 999 percent: 20 }}\n'
    path.write_text(_config_text(root, target, v1, canary=missing), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"canaries \(影视\): the candidate is not served by"):
        _start(loop, path)

    good = f'canaries {{ label: "{LABEL}" version: {v2} percent: 20 }}\n'
    path.write_text(_config_text(root, target, v1, canary=good), encoding="utf-8")
    with caplog.at_level(logging.INFO):
        server, port = _start(loop, path)
    try:
        # The candidate registry speaks of the candidate, not of the label itself.
        lines = [r.getMessage() for r in caplog.records if r.name == "labeler.registry"]
        assert any(line.startswith(f"canary candidate of {LABEL} (movie): AVAILABLE") for line in lines), (
            lines
        )
        assert not any(line.startswith(f"label {LABEL} (movie)") and str(v2) in line for line in lines), lines
        path.write_text(_config_text(root, target, v1, canary=missing), encoding="utf-8")
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert not loop.run(server.app.reload_from_file())
        assert any(
            "not served" in r.getMessage() and "keeping the current one" in r.getMessage()
            for r in caplog.records
        )
        channel, labeler = stub(port)
        with channel:
            info = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels[0]
        assert (info.canary.model_version, info.canary.percent) == (v2, 20)
        assert info.canary.state == labeler_pb2.LABEL_STATE_AVAILABLE
    finally:
        _stop(loop, server)


def test_a_canary_of_the_version_served_now_says_it_does_nothing(stack, tmp_path):
    """A label following the latest version (v2) with a canary on v2: nothing is
    split, and ListLabels says the canary does nothing."""
    loop, target, root, v1, v2 = stack
    path = tmp_path / "labeler.textproto"
    text = _config_text(
        root, target, v1, canary=f'canaries {{ label: "{LABEL}" version: {v2} percent: 20 }}\n'
    )
    path.write_text(text.replace(f" version: {v1} timeout_ms", " timeout_ms"), encoding="utf-8")
    server, port = _start(loop, path)
    try:
        channel, labeler = stub(port)
        with channel:
            info = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels[0]
            assert info.model_version == v2 and info.canary.model_version == v2
            assert "this candidate does nothing" in info.canary.message
            assert {v for _, v in _classify_batch(labeler, _documents(40))} == {v2}
    finally:
        _stop(loop, server)
