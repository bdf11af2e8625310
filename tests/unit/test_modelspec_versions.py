"""Version directories: ASCII-digit directory names only, ascending."""

from __future__ import annotations

from modelspec.versions import version_dirs, versions


def test_only_numeric_directories_are_versions(tmp_path):
    for name in ("3", "10", "1", ".tmp-11-123", "README", "²", "٣", "2x"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert versions(tmp_path) == [1, 3, 10]
    assert version_dirs(tmp_path) == {1: tmp_path / "1", 3: tmp_path / "3", 10: tmp_path / "10"}


def test_two_names_for_one_number_count_once(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "1").mkdir()
    assert version_dirs(tmp_path) == {1: tmp_path / "01"}


def test_a_missing_model_directory_has_no_versions(tmp_path):
    assert version_dirs(tmp_path / "missing") is None
    assert versions(tmp_path / "missing") == []
    (tmp_path / "file").write_text("")
    assert version_dirs(tmp_path / "file") is None
