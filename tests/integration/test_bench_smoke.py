"""The fan-out benchmark runs (no timing asserts: speed is measured by
``make bench``, not tested), and its old-design baseline computes exactly the
features of the one feature pipeline."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from bench import old_design, report
from bench.models import fleet_label, fleet_names
from modelspec.features import FeaturePipeline
from trainer.corpus import read_jsonl

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_bench(module: str, *argv: str, timeout: float) -> subprocess.CompletedProcess:
    """``python -m bench.<module> argv...`` from the repository; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _version_dir(model_root: pathlib.Path, model: str) -> pathlib.Path:
    return max((model_root / model).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)


def test_old_design_features_equal_the_pipeline(trained_model_root, sample_corpus, tmp_path):
    pipeline, _ = FeaturePipeline.load(_version_dir(trained_model_root, "movie"))
    config = old_design.write_artifacts({"movie": pipeline}, {"movie": "影视"}, "unused:1", tmp_path)
    config_list = json.loads(config.read_text())["影视"]
    docs = [d["words"] for d in read_jsonl(sample_corpus.test)][:200]
    docs += [["霸王别姬", "是一部", "非常", "值得", "看的", "电影"], ["没有", "这个", "词"], ["电影"] * 150]
    for words in docs:
        assert old_design.fea_process(words, config_list) == pipeline.transform_one(words).tolist(), words


def test_fleet_names_are_samples_then_copies():
    assert fleet_names(6) == ["movie", "beauty", "star", "fashion", "movie_2", "beauty_2"]
    assert [fleet_label(n) for n in fleet_names(6)] == ["影视", "美妆", "明星", "时尚", "影视_2", "美妆_2"]


def test_quick_fanout_bench_runs_every_cell(trained_model_root, tmp_path):
    out = tmp_path / "out"
    _run_bench("fanout", "--quick", "--model-root", str(trained_model_root), "--out", str(out), timeout=240)
    data = json.loads((out / "fanout.json").read_text())
    ks, cs = data["plan"]["ks"], data["plan"]["concurrencies"]
    cells = {(r["design"], r["models"], r["concurrency"]): r for r in data["results"]}
    assert set(cells) == {(d, k, c) for d in report.DESIGNS for k in ks for c in cs}
    for key, cell in cells.items():
        assert cell["errors"] == 0, (key, cell["first_error"])
        assert cell["requests"] >= 1 and cell["p50_ms"] > 0 and cell["rps"] > 0, key
        if key[0] in (report.CLASSIFY, report.COALESCED):
            # Read from the Labeler's own metrics: every Predict carried at least one document.
            assert cell["docs_per_predict"] >= 1 and cell["cpu_ms"]["labeler"] >= 0, key
        if key[0] == report.CLASSIFY:
            assert cell["docs_per_predict"] == 1, key  # without coalescing, one document per Predict
    for k in ks:
        # The baseline answered like the Labeler (same labels and probabilities).
        assert data["servers"][str(k)]["same_answers"] > 0
        assert data["servers"][str(k)]["labeler_rss_mb"] > 0
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| design | models | concurrency |" in (out / "fanout.md").read_text()
    # K > 4 serves copies of the samples under their own names (movie_2, ...).
    assert max(ks) > 4 and (out / "fleet" / "movie_2").is_dir()


def test_quick_pressure_bench_runs_every_cell(trained_model_root, tmp_path):
    """bench.pressure --quick: every overload cell, the Zipf cells and the
    warm-up rounds produce figures (no timing asserts)."""
    out = tmp_path / "pressure.json"
    run = _run_bench(
        "pressure", "--quick", "--model-root", str(trained_model_root), "--out", str(out), timeout=280
    )
    data = json.loads(out.read_text())
    names = [c["name"] for c in data["overload"]]
    assert len(names) == 2 + 4  # two capacity cells, 2x on/off over 1 and 16 connections
    assert all(c["calls"] > 0 for c in data["overload"])
    assert data["zipf"]["exponent"] == 1.1 and data["zipf"]["cache on"]["lookups"].get("hit", 0) > 0
    assert set(data["warmup"]) == {"with warm-up", "without warm-up"}
    assert "| cell | offered/s |" in run.stdout


def test_quick_flood_bench_runs_every_cell(trained_model_root, tmp_path):
    """bench.flood --quick: the Python and k6 flood cells, the trade-off
    cells and the refusal layer table produce figures (no timing asserts)."""
    out = tmp_path / "flood.json"
    run = _run_bench(
        "flood", "--quick", "--no-workers", "--model-root", str(trained_model_root), "--out", str(out),
        timeout=280,
    )  # fmt: skip
    data = json.loads(out.read_text())
    generators = {c["generator"] for c in data["cells"]}
    assert generators == {"python", "k6"}
    assert all(sum(c["codes"].values()) > 0 for c in data["cells"])
    assert "UNKNOWN" not in {code for c in data["cells"] if c["generator"] == "k6" for code in c["codes"]}
    assert [r["refused"] > 0 for r in data["layers"]["rows"]] == [True] * 4
    assert "| where the call is refused |" in run.stdout


def test_quick_hotpath_bench_measures_every_layer(trained_model_root, tmp_path):
    """bench.hotpath: every layer of the fan-out answers and is measured (no timing asserts)."""
    argv = ["--models", "5", "--requests", "4", "--rounds", "1"]
    argv += ["--model-root", str(trained_model_root), "--out", str(tmp_path)]
    run = _run_bench("hotpath", *argv, timeout=240)
    layers = json.loads((tmp_path / "hotpath.json").read_text())
    assert len(layers) == 6
    for layer in layers:
        assert len(layer["us_per_call"]) == 1 and layer["us_per_call"][0] >= 0, layer
        assert layer["ms_per_request"][0] > 0, layer
    assert "| 6 Classify through the gRPC server |" in run.stdout


def test_quick_requestpath_bench_measures_every_cell(trained_model_root, tmp_path):
    """bench.requestpath: the echo floor, the fan-out floors and every Labeler
    configuration answer and are measured (no timing asserts)."""
    argv = [
        "--requests",
        "4",
        "--rounds",
        "1",
        "--model-root",
        str(trained_model_root),
        "--out",
        str(tmp_path),
    ]
    run = _run_bench("requestpath", *argv, timeout=280)
    cells = json.loads((tmp_path / "requestpath.json").read_text())
    assert len(cells) == 9
    for name, rounds in cells.items():
        assert len(rounds) == 1 and rounds[0]["cpu_us"] >= 0 and rounds[0]["p50_ms"] > 0, name
    assert "| Labeler CPU per Classify / echo floor" in run.stdout
