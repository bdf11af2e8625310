"""Training recipes: what a Trainer job may run, and how its argv is built.

A recipe is a Python module run as ``python -m <module> ...``; its argv is
built here from validated values, never from a shell string. Importing this
package is cheap (no TensorFlow): the Trainer uses it to validate requests.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence

from modelspec.labels import MAX_BUNDLE_LABELS
from modelspec.names import MODEL_NAME_RULE, is_model_name
from rpc.errors import InvalidArgument, NotFound, shown
from trainer.domain import ValidationPolicy
from trainer.push import recipe_flags

MAX_LABEL_CHARS = 64


@dataclasses.dataclass(frozen=True)
class Param:
    """One integer hyperparameter: its flag is ``--`` + name with ``-`` for ``_``."""

    name: str
    default: int
    minimum: int
    maximum: int
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    module: str
    params: tuple[Param, ...]
    description: str = ""
    # Validates its model before push (takes trainer.push.recipe_flags).
    validates: bool = False
    # Held-out metrics its ``result`` line reports: what a sweep may optimize
    # (a recipe that lists any must take ``--no-push``, which sweep trials run with).
    metrics: tuple[str, ...] = ()
    # Exit statuses that mean the job cannot succeed as asked (a bad corpus,
    # bad arguments): such a failure is not retried (trainer.lifecycle rule 5).
    deterministic_exit_codes: tuple[int, ...] = ()

    def defaults(self) -> dict[str, int]:
        return {p.name: p.default for p in self.params}

    def validate(self, values: Mapping[str, int | None]) -> dict[str, int]:
        """All hyperparameters with defaults filled in; raises InvalidArgument."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidArgument(
                f"recipe {self.name!r} has no hyperparameter {', '.join(unknown)}; known: {', '.join(known)}"
            )
        out = {}
        for name, p in known.items():
            v = values.get(name)
            if v is None:
                out[name] = p.default
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not p.minimum <= v <= p.maximum:
                raise InvalidArgument(
                    f"hyperparameter {name} must be an integer in {p.minimum}..{p.maximum} "
                    f"(default {p.default}), got {v!r}"
                )
            out[name] = v
        return out

    def argv(
        self,
        *,
        model: str,
        label: str,
        corpus: str,
        model_root: str,
        params: Mapping[str, int | None] | None = None,
        checkpoint_dir: str | None = None,
        seed: int | None = None,
        python: str = sys.executable,
        labels: Sequence[str] = (),
        validation: ValidationPolicy | None = None,
        held_out_path: str | None = None,
        no_push: bool = False,
    ) -> list[str]:
        """The job's command line as a list (for ``subprocess`` without a shell).
        ``labels``: a bundle's labels in column order, instead of ``label``."""
        validate_model_name(model)
        if labels:
            validate_labels(labels)
        else:
            validate_label(label)
        values = self.validate(params or {})
        argv = [python, "-m", self.module, "--model", model]
        for one in labels or (label,):
            argv += ["--label", one]
        argv += [
            "--corpus",
            str(corpus),
            "--model-root",
            str(model_root),
        ]
        for p in self.params:
            argv += [p.flag, str(values[p.name])]
        if checkpoint_dir is not None:
            argv += ["--checkpoint-dir", str(checkpoint_dir)]
        if seed is not None:
            argv += ["--seed", str(int(seed))]
        if validation is not None and self.validates:
            argv += recipe_flags(validation, held_out_path)
        if no_push:  # a sweep trial: train and score, export nothing
            argv.append("--no-push")
        return argv


def validate_model_name(model: str) -> None:
    if not is_model_name(model or ""):
        raise InvalidArgument(f"model name {shown(model)} is not allowed: {MODEL_NAME_RULE}")


def validate_label(label: str) -> None:
    # A leading '-' would read as an option in the recipe's argv: the job could never run.
    if (
        not label
        or len(label) > MAX_LABEL_CHARS
        or not label.isprintable()
        or label != label.strip()
        or label.startswith("-")
    ):
        raise InvalidArgument(
            f"label {shown(label)} is not allowed: give 1-{MAX_LABEL_CHARS} printable characters without "
            "leading or trailing spaces, not starting with '-' (e.g. '影视')"
        )


def validate_labels(labels: Sequence[str]) -> None:
    """A bundle's labels: each a valid label, none repeated, at most MAX_BUNDLE_LABELS."""
    if len(labels) > MAX_BUNDLE_LABELS:
        raise InvalidArgument(f"a bundle may carry at most {MAX_BUNDLE_LABELS} labels, got {len(labels)}")
    seen: set[str] = set()
    for label in labels:
        validate_label(label)
        if label in seen:
            raise InvalidArgument(f"label {shown(label)} is given twice; each label is one output column")
        seen.add(label)


FASTTEXT = Recipe(
    name="fasttext",
    module="trainer.recipes.fasttext",
    description="fastText-style classifier: embedding, average pooling, one sigmoid per label",
    validates=True,
    metrics=("precision", "recall", "f1"),
    # trainer.recipes.fasttext exits 2 on an invalid corpus or arguments (EXIT_INVALID).
    deterministic_exit_codes=(2,),
    params=(
        Param("epochs", 20, 1, 200, "training epochs (early stopping may end sooner)"),
        Param("batch_size", 64, 1, 4096, "batch size"),
        Param("embedding_dim", 50, 1, 512, "embedding dimension"),
        Param("cutlen", 60, 1, 1000, "word ids kept per document before n-grams"),
        Param("ngram_range", 2, 1, 3, "largest n-gram"),
        Param("maxlen", 119, 1, 4000, "feature length after n-grams"),
        Param("max_vocab", 20000, 1, 1_000_000, "largest vocabulary"),
        Param("min_ngram_count", 2, 1, 1000, "n-grams seen fewer times are dropped"),
        Param("threads", 1, 1, 64, "TensorFlow intra- and inter-op threads"),
    ),
)

RECIPES: dict[str, Recipe] = {FASTTEXT.name: FASTTEXT}
DEFAULT_RECIPE = FASTTEXT.name


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (empty: the default); raises NotFound."""
    try:
        return RECIPES[name or DEFAULT_RECIPE]
    except KeyError:
        raise NotFound(f"no recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}") from None
