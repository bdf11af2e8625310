"""Version directories: a model's versions are the subdirectories of its
directory whose names are decimal digits (``<model_root>/<model>/<version>/``),
as TF Serving reads them; anything else there (a ``.tmp-...`` export in
progress, a README) is not a version.
"""

from __future__ import annotations

import os
import pathlib
import re

_VERSION_DIR = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes '²' and '٣'


def is_version_name(name: str) -> bool:
    return _VERSION_DIR.fullmatch(name) is not None


def version_dirs(model_dir: str | os.PathLike[str]) -> dict[int, pathlib.Path] | None:
    """The version directories under ``model_dir`` by version number,
    ascending; None when ``model_dir`` is missing. Of two names for one number
    ("1" and "01") the first in name order counts."""
    try:
        entries = sorted(os.scandir(os.fspath(model_dir)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    versions: dict[int, pathlib.Path] = {}
    for entry in entries:
        if is_version_name(entry.name) and entry.is_dir():
            versions.setdefault(int(entry.name), pathlib.Path(entry.path))
    return dict(sorted(versions.items()))


def versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """The version numbers under ``model_dir``, ascending ([] when it is missing)."""
    return list(version_dirs(model_dir) or {})
