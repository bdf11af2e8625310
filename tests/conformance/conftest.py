"""Fixtures for the TF Serving conformance tests: TF Serving's own test models
and configs, checked in under ``tests/testdata/tfserving``."""

from __future__ import annotations

import pathlib

import pytest

from tests.support.modelserver_thread import TESTDATA


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    return TESTDATA


@pytest.fixture
def good_config_file(testdata: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """good_model_config.txt with its placeholders replaced, as TF Serving's test does."""
    text = (testdata / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(testdata / "saved_model_half_plus_two_cpu"))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(testdata / "saved_model_half_plus_three"))
    path = tmp_path / "good_model_config.conf"
    path.write_text(text)
    return path
