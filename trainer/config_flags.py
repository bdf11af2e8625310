"""``trainer serve``'s settings flags, made from TrainerConfig's fields:
one flag per field (the gate's and the default validation's fields each
their own), its type, default and help (the docstring under the field) read
from the dataclass, so a new field is a new flag with nothing written twice.

A flag is the field's name with ``_`` as ``-`` and a trailing ``_s``
(seconds) dropped: ``kill_grace_s`` is ``--kill-grace``; the gate's fields
keep their own names (``--cpu-normal``, ``--warmup``), the default
validation's take ``validation-`` in front. Booleans take ``--x`` /
``--no-x``. Two fields are not plain values: ``registry`` is
``--recipe NAME`` (repeatable: the recipes this Trainer may run) and the
validation ``floors`` are ``--validation-floor METRIC=VALUE`` (repeatable).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import pathlib
import textwrap
import typing
from typing import Any

from trainer.config import GatePolicy, OverloadPolicy, TrainerConfig
from trainer.push import parse_floor
from trainer.recipes import RECIPES
from trainer.verdicts import ValidationPolicy

# Nested settings: their fields are flags of their own, with this prefix.
_NESTED: dict[str, tuple[type, str]] = {
    "gate": (GatePolicy, ""),
    "validation": (ValidationPolicy, "validation-"),
}
_CHOICES: dict[str, list[str]] = {"overload_policy": [OverloadPolicy.REQUEUE, OverloadPolicy.FAIL]}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls``, one line."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def flag_name(field: str, prefix: str = "") -> str:
    return "--" + prefix + field.removesuffix("_s").replace("_", "-")


@dataclasses.dataclass(frozen=True)
class _Flag:
    owner: type
    field: dataclasses.Field
    prefix: str

    @property
    def dest(self) -> str:
        return f"cfg_{self.prefix.replace('-', '_')}{self.field.name}"

    @property
    def name(self) -> str:
        return flag_name(self.field.name, self.prefix)

    @property
    def metavar(self) -> str:
        return self.name[2:].upper().replace("-", "_")


def _flags() -> list[_Flag]:
    out = []
    for field in dataclasses.fields(TrainerConfig):
        if field.name in _NESTED:
            cls, prefix = _NESTED[field.name]
            out += [_Flag(cls, f, prefix) for f in dataclasses.fields(cls)]
        else:
            out.append(_Flag(TrainerConfig, field, ""))
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every TrainerConfig field, in groups."""
    groups = {
        TrainerConfig: parser.add_argument_group("settings (trainer.config.TrainerConfig)"),
        GatePolicy: parser.add_argument_group(
            "load gate (machine-wide percentages; a danger above 100 never fires)"
        ),
        ValidationPolicy: parser.add_argument_group("default validation before push"),
    }
    for flag in _flags():
        group, field = groups[flag.owner], flag.field
        hints = typing.get_type_hints(flag.owner)
        help_text = field_docs(flag.owner).get(field.name, field.name).replace("%", "%%")
        default = _default(field)
        kind = hints[field.name]
        if field.name == "registry":
            group.add_argument(
                "--recipe",
                dest=flag.dest,
                action="append",
                choices=sorted(RECIPES),
                help=f"{help_text} Repeat it for each.",
            )
        elif field.name == "floors":
            group.add_argument(
                flag.name.replace("floors", "floor"),
                dest=flag.dest,
                action="append",
                type=parse_floor,
                metavar="METRIC=VALUE",
                help=f"{help_text} Repeatable.",
            )
        elif kind is bool:
            group.add_argument(
                flag.name,
                dest=flag.dest,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
        elif field.default is None and _optional(kind) is not None:
            # An optional setting (``X | None = None``): unset means None.
            group.add_argument(
                flag.name,
                dest=flag.dest,
                type=_type(_optional(kind)),
                default=None,
                metavar=flag.metavar,
                help=f"{help_text} (default: unset)",
            )
        elif default is None:
            group.add_argument(
                flag.name,
                dest=flag.dest,
                required=True,
                type=_type(kind),
                metavar=flag.metavar,
                help=help_text,
            )
        else:
            group.add_argument(
                flag.name,
                dest=flag.dest,
                type=_type(kind),
                default=default,
                choices=_CHOICES.get(field.name),
                metavar=None if field.name in _CHOICES else flag.metavar,
                help=f"{help_text} (default %(default)s)",
            )


def _optional(kind: Any) -> Any:
    """X for an ``X | None`` annotation, else None."""
    args = typing.get_args(kind)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def _type(kind: Any):
    if kind is pathlib.Path:
        return str
    if kind in (int, float, str):
        return kind
    raise TypeError(f"no flag type for {kind!r}: give the field a plain type or a case in config_flags")


def config_from_args(args: argparse.Namespace) -> TrainerConfig:
    """The TrainerConfig the flags describe; raises ValueError for a bad value."""
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in _NESTED}
    for flag in _flags():
        value = getattr(args, flag.dest)
        if flag.field.name == "registry":
            value = {name: RECIPES[name] for name in value} if value else dict(RECIPES)
        elif flag.field.name == "floors":
            value = dict(value or ())
        if flag.owner is TrainerConfig:
            values[flag.field.name] = value
        else:
            owner = next(name for name, (cls, _) in _NESTED.items() if cls is flag.owner)
            nested[owner][flag.field.name] = value
    values["gate"] = GatePolicy(**nested["gate"])
    values["validation"] = ValidationPolicy(**nested["validation"])
    return TrainerConfig(**values)


def every_flag() -> list[str]:
    """Every settings flag ``trainer serve --help`` must list."""
    return [
        "--recipe"
        if f.field.name == "registry"
        else (f.name.replace("floors", "floor") if f.field.name == "floors" else f.name)
        for f in _flags()
    ]
