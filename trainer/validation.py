"""Checks on what a caller sends the Trainer: nothing from a request reaches a
shell, and no path leaves the data root. Errors say what is wrong and how to
fix it; they reach the caller as INVALID_ARGUMENT or NOT_FOUND."""

from __future__ import annotations

import errno
import pathlib
from collections.abc import Mapping, Sequence

from rpc.errors import InvalidArgument, NotFound, shown
from trainer.recipes import Recipe, validate_label, validate_labels, validate_model_name

MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_CORPUS_CHARS = 1024
MAX_LOG_LINES = 1000
DEFAULT_LOG_LINES = 20
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
_SYMLINK_LOOP = (
    "corpus {corpus!r} is a symlink loop (a link that leads back to itself); "
    "point it at a real file inside the data root"
)


def resolve_corpus(data_root: pathlib.Path, corpus: str) -> tuple[str, pathlib.Path]:
    """``corpus`` (relative to ``data_root``) as a normalised relative path and
    as the real file it names; it must stay inside the data root."""
    if not corpus or len(corpus) > MAX_CORPUS_CHARS or "\x00" in corpus:
        raise InvalidArgument(
            f"corpus must be a path of 1-{MAX_CORPUS_CHARS} characters relative to the data root"
        )
    path = pathlib.PurePosixPath(corpus)
    if path.is_absolute():
        raise InvalidArgument(
            f"corpus {corpus!r} is absolute: give a path relative to the Trainer's data root, e.g. 'sample/train.jsonl'"
        )
    if ".." in path.parts:
        raise InvalidArgument(f"corpus {corpus!r} contains '..': give a path inside the Trainer's data root")
    try:
        real = (data_root / path).resolve(strict=True)
    except FileNotFoundError:
        raise NotFound(f"corpus {corpus!r} does not exist in the Trainer's data root") from None
    except RuntimeError:  # Python < 3.13 raises this for a symlink loop
        raise InvalidArgument(_SYMLINK_LOOP.format(corpus=corpus)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(_SYMLINK_LOOP.format(corpus=corpus)) from None
        raise InvalidArgument(
            f"corpus {corpus!r} cannot be resolved: {exc.strerror or type(exc).__name__}"
        ) from None
    if not real.is_relative_to(data_root):
        raise InvalidArgument(f"corpus {corpus!r} leads outside the Trainer's data root (through a symlink)")
    if not real.is_file():
        raise InvalidArgument(f"corpus {corpus!r} is not a regular file")
    return path.as_posix(), real


def recipe_named(registry: Mapping[str, Recipe], name: str) -> Recipe:
    recipe = registry.get(name)
    if recipe is None:
        raise InvalidArgument(
            f"unknown recipe {shown(name)}; this Trainer runs: {', '.join(sorted(registry))}"
        )
    return recipe


def check_request_fields(model: str, label: str, idempotency_key: str, labels: Sequence[str] = ()) -> None:
    validate_model_name(model)
    if labels:
        # A bundle: its labels, in column order, instead of one label.
        if label:
            raise InvalidArgument(
                "set either label (a single-label model) or labels (a multi-label bundle), not both"
            )
        validate_labels(labels)
    else:
        validate_label(label)
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS or not idempotency_key.isprintable():
        raise InvalidArgument(
            f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"
        )


def check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument("job_id is required: Start returns it, and `trainer list` shows them all")
    if len(job_id) > 128 or not job_id.isprintable():
        raise InvalidArgument("job_id must be at most 128 printable characters")


def log_lines(requested: int) -> int:
    if requested > MAX_LOG_LINES:
        raise InvalidArgument(
            f"log_lines must be 0..{MAX_LOG_LINES} (0 means {DEFAULT_LOG_LINES}), got {requested}"
        )
    return requested or DEFAULT_LOG_LINES


def list_limit(requested: int) -> int:
    if requested > MAX_LIST_LIMIT:
        raise InvalidArgument(
            f"limit must be 0..{MAX_LIST_LIMIT} (0 means {DEFAULT_LIST_LIMIT}), got {requested}"
        )
    return requested or DEFAULT_LIST_LIMIT


def model_filter(model: str) -> str:
    if model:
        validate_model_name(model)
    return model
