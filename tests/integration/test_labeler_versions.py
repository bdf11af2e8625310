"""Model versions and configuration changes while requests run, with a real
model server polling a real model root.

- A new version exported mid-traffic is picked up with its own features (it
  is exported with a different maxlen, so a Predict that mixed one version's
  features with the other's model would fail) and no request fails.
- Pinned versions; config reload on file change and on SIGHUP of a real
  ``labeler serve`` process, without failing requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from modelspec.features import FeaturePipeline, FeatureSettings
from tests.support.labeler_support import (
    EXAMPLE,
    BackgroundLoop,
    ModelServer,
    label_versions,
    labeler_config,
    stub,
    wait_until,
)

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

BIN = pathlib.Path(sys.executable).parent


@pytest.fixture
def loop():
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture
def model_server(loop, model_root_copy):
    server = loop.run(ModelServer(model_root_copy, ["movie", "beauty"], poll_s=0.3).start())
    yield server
    loop.run(server.stop())


class Traffic:
    """Concurrent Classify calls until stopped; records every outcome."""

    def __init__(self, port: int, labels=("影视", "美妆"), workers: int = 3, words=EXAMPLE) -> None:
        self.port = port
        self.words = list(words)
        self.labels = list(labels)
        self.workers = workers
        self.replies: list[labeler_pb2.ClassifyResponse] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            labeler = labeler_pb2_grpc.LabelerStub(channel)

            async def worker() -> None:
                while not self._stop.is_set():
                    try:
                        request = labeler_pb2.ClassifyRequest(
                            words=self.words, labels=self.labels, threshold=0
                        )
                        self.replies.append(await labeler.Classify(request, timeout=10))
                    except grpc.aio.AioRpcError as exc:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()


def _start_traffic(loop: BackgroundLoop, traffic: Traffic):
    return asyncio.run_coroutine_threadsafe(traffic.run(), loop.loop)


def _export(trained_models, model_root, model: str, pipeline: FeaturePipeline) -> int:
    """Export the trained model's weights as a new version taking ``pipeline``'s rows."""
    from trainer.recipes.export import export_version
    from trainer.recipes.fasttext import build_model

    trained = trained_models[model].model
    if trained.input_shape[1] != pipeline.settings.maxlen:  # the same weights, another row width
        embedding_dim = next(
            layer for layer in trained.layers if type(layer).__name__ == "Embedding"
        ).output_dim
        resized = build_model(pipeline.num_features, embedding_dim, pipeline.settings.maxlen, 0.01)
        resized.set_weights(trained.get_weights())
        trained = resized
    version, _ = export_version(
        trained, pipeline, model_root, model, {"movie": "影视", "beauty": "美妆"}[model]
    )
    return version


def test_new_version_is_picked_up_with_its_own_features(
    loop, model_server, model_root_copy, trained_models, sample_corpus
):
    from labeler.server import create_server

    old_version = trained_models["movie"].version
    old_pipeline = trained_models["movie"].pipeline
    # Same weights, shorter maxlen: the new version's signature takes [batch, 80].
    new_pipeline = FeaturePipeline(
        old_pipeline.vocabulary,
        old_pipeline.ngram_table,
        FeatureSettings(old_pipeline.settings.cutlen, old_pipeline.settings.ngram_range, 80),
    )
    # The document whose probability the two versions' features tell apart best.
    keras = trained_models["movie"].model
    candidates = [
        json.loads(line)["words"]
        for line in sample_corpus.test.read_text(encoding="utf-8").splitlines()[:200]
    ]
    old_p = np.ravel(keras.predict(old_pipeline.transform(candidates), verbose=0))
    new_p = np.ravel(keras.predict(new_pipeline.transform(candidates), verbose=0))
    words = candidates[int(np.argmax(np.abs(old_p - new_p)))]
    assert float(np.max(np.abs(old_p - new_p))) > 1e-3
    config = labeler_config(
        model_root_copy, {"movie": model_server.target, "beauty": model_server.target}, timeout_ms=5000
    )
    server = loop.run(create_server(config))
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(60))
        traffic = Traffic(port, words=words)
        running = _start_traffic(loop, traffic)
        wait_until(lambda: len(traffic.replies) >= 10, 60, what="traffic")
        new_version = _export(trained_models, model_root_copy, "movie", new_pipeline)
        channel, labeler = stub(port)
        with channel:
            wait_until(
                lambda: label_versions(labeler)["影视"] == (new_version, "LABEL_STATE_AVAILABLE"),
                120,
                what="new version",
            )
            seen = len(traffic.replies)
            wait_until(lambda: len(traffic.replies) >= seen + 10, 60, what="traffic on the new version")
        traffic.stop()
        running.result(30)
    finally:
        loop.run(server.stop(None))

    assert traffic.errors == []
    assert [list(r.failures) for r in traffic.replies if r.failures] == []
    movie = [next(s for s in r.labels if s.label == "影视") for r in traffic.replies]
    versions = [s.model_version for s in movie]
    assert set(versions) == {old_version, new_version}
    assert versions[0] == old_version and versions[-1] == new_version
    # Each version's answers are its own model on its own features.
    expected = {
        old_version: float(np.ravel(keras.predict(old_pipeline.transform([words]), verbose=0))[0]),
        new_version: float(np.ravel(keras.predict(new_pipeline.transform([words]), verbose=0))[0]),
    }
    for score in movie:
        assert score.probability == pytest.approx(expected[score.model_version], abs=1e-5)


def test_pinned_version(loop, model_server, model_root_copy, trained_models):
    from labeler.server import create_server

    version = trained_models["movie"].version
    config = labeler_config(model_root_copy, {"movie": model_server.target, "beauty": model_server.target})
    config.labels[0].version = version
    config.labels[1].version = version + 1000  # not served
    server = loop.run(create_server(config))
    port = server.port
    try:
        channel, labeler = stub(port)
        with channel:
            wait_until(
                lambda: label_versions(labeler)["影视"] == (version, "LABEL_STATE_AVAILABLE"),
                60,
                what="pinned version",
            )
            info = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels[1]
            assert info.state == labeler_pb2.LABEL_STATE_LOADING and info.model_version == 0
            assert f"beauty version {version + 1000} is not served" in info.message
            reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0), timeout=10)
            assert [(s.label, s.model_version) for s in reply.labels] == [("影视", version)]
            assert [(f.label, f.code_name) for f in reply.failures] == [("美妆", "UNAVAILABLE")]
    finally:
        loop.run(server.stop(None))


def _write_config(path: pathlib.Path, model_root, target: str, labels: dict[str, float]) -> None:
    models = {"影视": "movie", "美妆": "beauty"}
    body = [f'model_root: "{model_root}"', "version_poll_interval_ms: 200"]
    for label, threshold in labels.items():
        body.append(
            f'labels {{ label: "{label}" model: "{models[label]}" target: "{target}" threshold: {threshold} }}'
        )
    path.write_text("\n".join(body) + "\n", encoding="utf-8")


def test_config_file_change_reloads_without_failing_requests(loop, model_server, model_root_copy, tmp_path):
    from labeler.server import create_server

    path = tmp_path / "labeler.textproto"
    _write_config(path, model_root_copy, model_server.target, {"影视": 0.5})
    server = loop.run(create_server(path))
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(60))
        traffic = Traffic(port, labels=())
        running = _start_traffic(loop, traffic)
        channel, labeler = stub(port)
        with channel:
            wait_until(lambda: len(traffic.replies) >= 5, 60, what="traffic")
            _write_config(path, model_root_copy, model_server.target, {"影视": 0.9, "美妆": 0.25})
            wait_until(lambda: list(label_versions(labeler)) == ["影视", "美妆"], 60, what="reload")
            infos = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
            assert [i.threshold for i in infos] == pytest.approx([0.9, 0.25])
            assert infos[1].state == labeler_pb2.LABEL_STATE_AVAILABLE  # loaded before it was swapped in
            # A broken file is refused and the current config stays.
            path.write_text('labels { label: "影视" model: "" }', encoding="utf-8")
            assert not loop.run(server.app.reload_from_file())
            assert list(label_versions(labeler)) == ["影视", "美妆"]
            seen = len(traffic.replies)
            wait_until(lambda: len(traffic.replies) >= seen + 5, 60, what="traffic after reload")
        traffic.stop()
        running.result(30)
    finally:
        loop.run(server.stop(None))
    assert traffic.errors == []
    assert not any(r.failures for r in traffic.replies)
    # Requests (threshold 0: every label) saw the old table or the new one.
    assert {tuple(sorted(s.label for s in r.labels)) for r in traffic.replies} == {
        ("影视",),
        ("影视", "美妆"),
    }


def test_labeler_serve_reloads_on_sighup_and_never_loads_tensorflow(
    loop, model_server, model_root_copy, tmp_path
):
    path = tmp_path / "labeler.textproto"
    _write_config(path, model_root_copy, model_server.target, {"影视": 0.5})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [BIN / "labeler", "serve", "--config", str(path), "--port", "0", "--log-level", "INFO"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        line = ""
        while "Labeler serving on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "labeler serve exited"
        port = int(re.search(r"serving on [^ ]+:(\d+)", line).group(1))
        channel, labeler = stub(port)
        with channel:
            wait_until(
                lambda: label_versions(labeler)["影视"][1] == "LABEL_STATE_AVAILABLE", 60, what="ready"
            )
            reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
            assert "影视" in {s.label for s in reply.labels}
            # Change the file but keep its mtime, so only SIGHUP can reload it.
            stat = path.stat()
            _write_config(path, model_root_copy, model_server.target, {"影视": 0.5, "美妆": 0.5})
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            time.sleep(0.5)
            assert list(label_versions(labeler)) == ["影视"]
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: list(label_versions(labeler)) == ["影视", "美妆"], 60, what="SIGHUP reload")
        # A real serving process, models loaded and answering: no TensorFlow library mapped.
        maps = pathlib.Path(f"/proc/{proc.pid}/maps").read_text()
        assert "tensorflow" not in maps.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
