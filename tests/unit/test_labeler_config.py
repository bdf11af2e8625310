"""The Labeler's config: text-proto and JSON files, defaults, and errors that
name the offending entry."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from labeler import config
from labeler.v1 import config_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(*labels: dict, **top) -> config_pb2.LabelerConfig:
    message = config_pb2.LabelerConfig(**top)
    for entry in labels:
        message.labels.add(**entry)
    return message


def test_deploy_example_has_the_four_sample_models():
    settings = config.load_settings(REPO / "deploy" / "labeler.textproto")
    assert [(s.label, s.model) for s in settings.labels] == [
        ("影视", "movie"),
        ("美妆", "beauty"),
        ("明星", "star"),
        ("时尚", "fashion"),
    ]
    assert settings.model_root == (pathlib.Path.cwd() / "var" / "models").resolve()
    assert all(s.target == "localhost:8500" and s.threshold == 0.5 for s in settings.labels)


def test_defaults_are_resolved():
    settings = config.validate(_config({"label": "影视", "model": "movie"}))
    spec = settings.labels[0]
    assert spec.target == "localhost:8500"
    assert (spec.signature_name, spec.input_name, spec.output_name) == (
        "serving_default",
        "input",
        "probability",
    )
    assert spec.threshold == 0.5 and spec.timeout_s == 1.0
    assert spec.version is None and spec.version_label is None
    assert settings.limits == config.Limits(10000, 1024, 1024)
    assert settings.coalescing == config.Coalescing(False, 0.002, 64)
    assert settings.poll_interval_s == 1.0


def test_per_label_target_version_and_threshold(tmp_path):
    path = tmp_path / "labeler.json"
    path.write_text(
        json.dumps(
            {
                "defaultTarget": "dns:///tf-serving:8500",
                "modelRoot": str(tmp_path),
                "labels": [
                    {
                        "label": "影视",
                        "model": "movie",
                        "target": "localhost:9000",
                        "threshold": 0.7,
                        "version": "12",
                    },
                    {
                        "label": "美妆",
                        "model": "beauty",
                        "versionLabel": "stable",
                        "timeoutMs": 250,
                        "threshold": 0,
                    },
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    movie, beauty = config.load_settings(path).labels
    assert (movie.target, movie.version, movie.threshold) == ("localhost:9000", 12, pytest.approx(0.7))
    assert (beauty.target, beauty.version_label, beauty.timeout_s) == (
        "dns:///tf-serving:8500",
        "stable",
        0.25,
    )
    assert beauty.threshold == 0.0  # an explicit 0 is kept, not replaced by the default


@pytest.mark.parametrize(
    ("labels", "top", "expected"),
    [
        (
            [{"label": "影视", "model": "movie"}, {"label": "影视", "model": "beauty"}],
            {},
            "labels[1] (影视): duplicate label '影视' (also labels[0])",
        ),
        (
            [{"label": "影视", "model": "movie"}, {"label": "美妆", "model": "movie"}],
            {},
            "labels[1] (美妆): duplicate model 'movie' (also labels[0])",
        ),
        (
            [{"label": "影视", "model": "movie", "threshold": 1.5}],
            {},
            "labels[0] (影视): threshold must be within [0, 1], got 1.5",
        ),
        (
            [{"label": "影视", "model": "movie", "threshold": math.nan}],
            {},
            "threshold must be within [0, 1], got nan",
        ),
        ([{"label": "影视", "model": ""}], {}, "labels[0] (影视): model is empty"),
        ([{"label": "", "model": "movie"}], {}, "labels[0]: label is empty"),
        (
            [{"label": "影视", "model": "../etc"}],
            {},
            "model '../etc' is not allowed: use 1-63 lowercase letters",
        ),
        ([{"label": "影视", "model": "movie", "target": "http://localhost:8501"}], {}, "not a URL"),
        ([{"label": "影视", "model": "movie", "target": "localhost"}], {}, "expected host:port"),
        ([{"label": "影视", "model": "movie", "target": "localhost:99999"}], {}, "port must be 1..65535"),
        (
            [{"label": "影视", "model": "movie", "version": 0}],
            {},
            "version must be a positive version number",
        ),
        ([{"label": "影视", "model": "movie", "version_label": " "}], {}, "version_label is set but empty"),
        (
            [{"label": "影视", "model": "movie"}],
            {"default_target": "dns:///nohost"},
            "default_target: bad target",
        ),
        ([], {}, "at least one label is required"),
    ],
)
def test_invalid_entries_are_named(labels, top, expected):
    with pytest.raises(config.ConfigError) as err:
        config.validate(_config(*labels, **top))
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(config.ConfigError) as err:
        config.validate(
            _config(
                {"label": "影视", "model": "", "threshold": -1},
                {"label": "美妆", "model": "beauty", "target": "a b:1"},
            )
        )
    message = str(err.value)
    assert "labels[0] (影视): model is empty" in message
    assert "labels[0] (影视): threshold must be within [0, 1], got -1" in message
    assert "labels[1] (美妆): bad target 'a b:1'" in message


@pytest.mark.parametrize(
    "target",
    [
        "localhost:8500",
        "127.0.0.1:1",
        "[::1]:8500",
        "dns:///tf-serving:8500",
        "dns://8.8.8.8/tf.example.com:8500",
        "ipv4:127.0.0.1:8500",
        "unix:/tmp/tfs.sock",
    ],
)
def test_good_targets(target):
    assert config.check_target(target) is None


def test_unreadable_and_unparsable_files(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read config"):
        config.load_settings(tmp_path / "missing.textproto")
    bad = tmp_path / "bad.textproto"
    bad.write_text('labels { label: "影视" modle: "movie" }', encoding="utf-8")
    with pytest.raises(
        config.ConfigError, match=r"bad.textproto is not a valid labeler.v1.LabelerConfig: .*modle"
    ):
        config.load_settings(bad)
    odd = tmp_path / "labeler.yaml"
    odd.write_text("labels: []")
    with pytest.raises(config.ConfigError, match="unknown file type '.yaml'"):
        config.load_settings(odd)


def test_overload_and_cache_defaults():
    settings = config.validate(_config({"label": "影视", "model": "movie"}))
    assert settings.overload == config.Overload()
    assert settings.overload.enabled and settings.overload.max_classify_in_flight == 8
    assert settings.prediction_cache == config.PredictionCacheSettings(
        enabled=True, max_bytes=64 * 1024 * 1024
    )
    off = config.validate(
        _config(
            {"label": "影视", "model": "movie"},
            overload=config_pb2.OverloadConfig(disabled=True),
            prediction_cache=config_pb2.PredictionCacheConfig(disabled=True),
        )
    )
    assert not off.overload.enabled and not off.prediction_cache.enabled


@pytest.mark.parametrize(
    ("top", "field"),
    [
        (
            {"overload": config_pb2.OverloadConfig(max_classify_in_flight=100_001)},
            "overload.max_classify_in_flight",
        ),
        (
            {"overload": config_pb2.OverloadConfig(max_classify_queued=1_000_001)},
            "overload.max_classify_queued",
        ),
        (
            {"overload": config_pb2.OverloadConfig(max_predicts_per_target=100_001)},
            "overload.max_predicts_per_target",
        ),
        (
            {"overload": config_pb2.OverloadConfig(queue_deadline_share_percent=101)},
            "overload.queue_deadline_share_percent",
        ),
        ({"overload": config_pb2.OverloadConfig(max_queue_wait_ms=60_001)}, "overload.max_queue_wait_ms"),
        (
            {"prediction_cache": config_pb2.PredictionCacheConfig(max_bytes=4095)},
            "prediction_cache.max_bytes",
        ),
        (
            {"prediction_cache": config_pb2.PredictionCacheConfig(max_bytes=16 * 1024**3 + 1)},
            "prediction_cache.max_bytes",
        ),
    ],
)
def test_overload_and_cache_out_of_range_name_the_field(top, field):
    with pytest.raises(config.ConfigError, match=rf"{field} must be within \d+\.\.\d+, got \d+"):
        config.validate(_config({"label": "影视", "model": "movie"}, **top))
