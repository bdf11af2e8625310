"""Generate ``tfserving/generated/``: TF Serving's protobuf and gRPC modules,
importable without the TensorFlow runtime.

Usage: python scripts/gen_tfs_protos.py [--out DIR] [--source PATH ...]

  --out     where the ``generated`` package goes (default: tfserving/generated)
  --source  a site-packages directory or a wheel (.whl) holding the
            ``tensorflow_serving`` and ``tensorflow`` packages; repeatable.
            Default: wherever the installed ones are (they are not imported).

TF Serving's own generated modules (``tensorflow_serving.apis.*_pb2``) import
``tensorflow.core.framework.*_pb2``, and importing any ``tensorflow.*`` module
runs the ``tensorflow`` package's ``__init__``, which starts the whole runtime.
So instead of importing them, this reads the serialized FileDescriptorProto
each of them hands to ``AddSerializedFile(b'...')`` (with ``ast``, without
running the file), collects the transitive closure of the files we need,
and has protoc (grpc_tools) write Python modules for exactly those
descriptors under ``tfserving.generated.<upstream path>``: e.g.
``tensorflow/core/framework/tensor.proto`` becomes
``tfserving.generated.tensorflow.core.framework.tensor_pb2``. The descriptors
keep their upstream file names and bytes (checked here, and by
tests/unit/test_tfserving_protos.py), so a process that also imports
TensorFlow (the model server) adds the same files to the default pool twice,
which protobuf accepts, and both sets of modules share message classes.

Run at build time (``make venv`` / ``make protos``, the Docker build stage);
the output is not checked in (.gitignore): it is derived from Apache-2.0
sources (TensorFlow Serving and TensorFlow) that the build installs.
"""

from __future__ import annotations

import argparse
import ast
import compileall
import importlib.metadata
import importlib.util
import pathlib
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tfserving" / "generated"
PACKAGE = "tfserving.generated"
# The packages whose generated modules are read: TF Serving's and the
# tensorflow/ and xla/ protos TF Serving's import (all inside tensorflow/).
SOURCE_PACKAGES = ("tensorflow_serving", "tensorflow")

# The files we use (their imports come along); upstream names.
ROOT_FILES = (
    "tensorflow/core/framework/tensor.proto",
    "tensorflow/core/framework/tensor_shape.proto",
    "tensorflow/core/framework/types.proto",
    "tensorflow_serving/apis/model.proto",
    "tensorflow_serving/apis/predict.proto",
    "tensorflow_serving/apis/get_model_metadata.proto",
    "tensorflow_serving/apis/get_model_status.proto",
    "tensorflow_serving/apis/model_management.proto",
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
    "tensorflow_serving/apis/prediction_log.proto",
    "tensorflow_serving/apis/status.proto",
    "tensorflow_serving/config/model_server_config.proto",
)
# The files whose gRPC stubs and servicer registration we generate.
SERVICE_FILES = (
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
)
WELL_KNOWN_PREFIX = "google/protobuf/"


class Source:
    """A site-packages directory or a wheel: relative path -> text."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None

    def pb2_files(self) -> list[str]:
        if self._zip is not None:
            names = self._zip.namelist()
        else:
            names = [
                p.relative_to(self.path).as_posix()
                for package in SOURCE_PACKAGES
                if (self.path / package).is_dir()
                for p in (self.path / package).rglob("*_pb2.py")
            ]
        return sorted(n for n in names if n.endswith("_pb2.py") and n.split("/")[0] in SOURCE_PACKAGES)

    def read(self, name: str) -> str:
        if self._zip is not None:
            return self._zip.read(name).decode("utf-8")
        return (self.path / name).read_text(encoding="utf-8")

    @property
    def is_wheel(self) -> bool:
        return self._zip is not None

    def __str__(self) -> str:
        return str(self.path)


def installed_sources() -> list[pathlib.Path]:
    """The site-packages directories holding the installed packages, found
    without importing them (find_spec of a top-level name runs no code)."""
    roots: list[pathlib.Path] = []
    for package in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                f"the '{package}' package is not installed; install tensorflow-serving-api "
                "(pip install -e '.[dev]'), or pass --source with a wheel"
            )
        root = pathlib.Path(next(iter(spec.submodule_search_locations))).parent
        if root not in roots:
            roots.append(root)
    return roots


def serialized_descriptor(text: str, where: str) -> bytes:
    """The bytes a generated _pb2 module passes to AddSerializedFile."""
    for node in ast.walk(ast.parse(text, where)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise SystemExit(f"{where}: no AddSerializedFile(b'...') call; not a protoc-generated module?")


def index(sources: Iterable[Source]) -> dict[str, tuple[Source, str]]:
    """Upstream proto file name -> (source, module file). The name is in the
    module's ``# source:`` line; the first source that has it wins."""
    found: dict[str, tuple[Source, str]] = {}
    for source in sources:
        for name in source.pb2_files():
            head = source.read(name)[:2000]
            match = re.search(r"^# source: (\S+\.proto)$", head, re.M)
            if match and match.group(1) not in found:
                found[match.group(1)] = (source, name)
    return found


def closure(files: dict[str, tuple[Source, str]]) -> list[descriptor_pb2.FileDescriptorProto]:
    """ROOT_FILES and everything they import (not the well-known types, which
    protobuf itself provides), dependencies before their dependents."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name.startswith(WELL_KNOWN_PREFIX):
            return
        if name not in files:
            raise SystemExit(
                f"no generated module for {name} (needed by {' <- '.join(reversed(chain)) or 'us'}) in the sources"
            )
        source, module_file = files[name]
        blob = serialized_descriptor(source.read(module_file), f"{source}/{module_file}")
        proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
        if proto.name != name:
            raise SystemExit(f"{source}/{module_file} describes {proto.name}, not {name}")
        for dependency in proto.dependency:
            visit(dependency, (*chain, name))
        done.add(name)
        ordered.append(proto)

    for name in ROOT_FILES:
        visit(name, ())
    return ordered


def well_known(protos: list[descriptor_pb2.FileDescriptorProto]) -> list[descriptor_pb2.FileDescriptorProto]:
    """The google/protobuf/*.proto files imported, from protobuf's runtime."""
    out = []
    names = sorted({d for p in protos for d in p.dependency if d.startswith(WELL_KNOWN_PREFIX)})
    for name in names:
        module = "google.protobuf." + name[len(WELL_KNOWN_PREFIX) : -len(".proto")] + "_pb2"
        descriptor = importlib.import_module(module).DESCRIPTOR
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        out.append(proto)
    return out


def module_of(proto_name: str) -> str:
    """``a/b/c.proto`` -> ``a.b.c_pb2`` (protoc's rule)."""
    return proto_name[: -len(".proto")].replace("/", ".").replace("-", "_") + "_pb2"


def versions(sources: list[Source]) -> str:
    """What the modules were generated from, for their headers."""
    if any(s.is_wheel for s in sources):
        return ", ".join(s.path.name for s in sources)
    found = []
    for dist in ("tensorflow-serving-api", "tensorflow", "tensorflow-cpu"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def rewrite(text: str, modules: set[str]) -> str:
    """Point imports of upstream modules (``from tensorflow.core.framework
    import tensor_pb2``) and the module names given to the builder at ours."""

    packages = {m.rsplit(".", i)[0] for m in modules for i in range(1, m.count(".") + 1)}

    def from_import(match: re.Match[str]) -> str:
        indent, package = match.group(1), match.group(2)
        if package in modules or package in packages:
            return f"{indent}from {PACKAGE}.{package} import "
        return match.group(0)

    # ``from tensorflow.core.framework import tensor_pb2``, ``from
    # xla.tsl.protobuf.error_codes_pb2 import *`` (public imports), .pyi names.
    text = re.sub(r"^(\s*)from ([\w.]+) import ", from_import, text, flags=re.M)
    text = re.sub(
        r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')([\w.]+)(')",
        lambda m: (
            m.group(1) + (f"{PACKAGE}.{m.group(2)}" if m.group(2) in modules else m.group(2)) + m.group(3)
        ),
        text,
    )
    leftover = re.findall(r"^\s*(?:from|import) ((?:tensorflow|tensorflow_serving|xla|tsl)\b\S*)", text, re.M)
    if leftover:
        raise SystemExit(f"generated code still imports {leftover}; extend rewrite()")
    return text


def generate(out: pathlib.Path, sources: list[Source]) -> list[str]:
    files = index(sources)
    protos = closure(files)
    descriptor_set = descriptor_pb2.FileDescriptorSet(file=[*well_known(protos), *protos])
    modules = {module_of(p.name) for p in protos}
    header = f"# Generated by scripts/gen_tfs_protos.py from {versions(sources)} (Apache-2.0); do not edit.\n"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        (tmp / "set.pb").write_bytes(descriptor_set.SerializeToString())
        built = tmp / "out"
        built.mkdir()
        common = ["grpc_tools.protoc", f"--descriptor_set_in={tmp / 'set.pb'}"]
        names = [p.name for p in protos]
        if protoc.main([*common, f"--python_out={built}", f"--pyi_out={built}", *names]) != 0:
            raise SystemExit("protoc failed (messages); see above")
        if protoc.main([*common, f"--grpc_python_out={built}", *SERVICE_FILES]) != 0:
            raise SystemExit("protoc failed (gRPC stubs); see above")
        staged = tmp / "generated"
        for path in sorted(built.rglob("*.py*")):
            relative = path.relative_to(built)
            text = rewrite(path.read_text(encoding="utf-8"), modules)
            lines = text.splitlines(keepends=True)
            at = 1 if lines and lines[0].startswith("# -*- coding") else 0
            target = staged / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join([*lines[:at], header, *lines[at:]]), encoding="utf-8")
        for proto in protos:  # the descriptors must be the upstream bytes, byte for byte
            source, module_file = files[proto.name]
            ours = staged / (module_of(proto.name).replace(".", "/") + ".py")
            upstream = serialized_descriptor(source.read(module_file), module_file)
            if serialized_descriptor(ours.read_text(encoding="utf-8"), str(ours)) != upstream:
                raise SystemExit(f"{proto.name}: protoc wrote a descriptor that differs from {module_file}")
        for directory in sorted({p.parent for p in staged.rglob("*.py")} | {staged}):
            init = directory / "__init__.py"
            if directory != staged and not init.exists():
                init.write_text(f'"""Generated; see {PACKAGE}."""\n', encoding="utf-8")
        # Written last: the Makefile's mark that generation finished.
        (staged / "__init__.py").write_text(
            f'"""TF Serving\'s protobuf and gRPC modules, generated by scripts/gen_tfs_protos.py\n'
            f"from {versions(sources)} (Apache-2.0, (c) The TensorFlow Authors).\n\n"
            f"Module paths follow the upstream .proto paths under {PACKAGE};\n"
            'import them through tfserving.protos. Not checked in: `make protos` regenerates."""\n',
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out)
    # Bytecode now, as pip does for installed packages: these modules are
    # large literals, and a checkout may never write .pyc files itself
    # (PYTHONDONTWRITEBYTECODE), which would double their import time.
    compileall.compile_dir(out, quiet=1)
    return [p.name for p in protos]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--source", type=pathlib.Path, action="append")
    args = parser.parse_args(argv)
    sources = [Source(p) for p in (args.source or installed_sources())]
    names = generate(args.out, sources)
    print(f"wrote {len(names)} descriptors and {len(SERVICE_FILES)} gRPC modules into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
