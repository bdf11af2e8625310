"""Copy TensorFlow's generated protobuf modules, and nothing else, out of a
TensorFlow wheel (or an installed ``tensorflow`` package directory).

The Labeler talks to TF Serving with ``tensorflow_serving.apis``, whose
generated modules import ``tensorflow.core.framework.*_pb2`` and a few others.
Those modules need only protobuf; the rest of TensorFlow (about 1.9 GB) is not
needed, so the Labeler image gets just these (about 1 MB). The package's own
``tensorflow/__init__.py`` (which starts the runtime) is left out on purpose:
``tfserving.protos`` imports the generated modules without it.

Usage: python tf_protos.py SOURCE DEST
  SOURCE  a tensorflow / tensorflow-cpu wheel, or an installed tensorflow/ directory
  DEST    the directory that receives tensorflow/... (e.g. site-packages)
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import zipfile

# The packages whose generated modules tensorflow_serving.apis and
# tensorflow_serving.config import (directly or through each other).
PROTO_PACKAGES = (
    "tensorflow/core/framework",
    "tensorflow/core/protobuf",
    "tensorflow/core/example",
    "tensorflow/compiler/xla/tsl/protobuf",
)


def wanted(name: str) -> bool:
    """Generated modules of PROTO_PACKAGES and the __init__.py files of the
    packages between them and ``tensorflow/`` (but not tensorflow/__init__.py)."""
    parent, _, base = name.rpartition("/")
    if parent in PROTO_PACKAGES:
        return base.endswith("_pb2.py") or base == "__init__.py"
    return (
        base == "__init__.py"
        and any(p.startswith(parent + "/") for p in PROTO_PACKAGES)
        and parent != "tensorflow"
    )


def extract(source: pathlib.Path, dest: pathlib.Path) -> list[str]:
    copied: list[str] = []
    if source.is_dir():
        root = source.parent  # source is .../tensorflow
        for path in sorted(source.rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if wanted(name):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                copied.append(name)
    else:
        with zipfile.ZipFile(source) as wheel:
            for name in sorted(wheel.namelist()):
                if wanted(name):
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(wheel.read(name))
                    copied.append(name)
    missing = [
        p for p in PROTO_PACKAGES if not any(c.startswith(p + "/") and c.endswith("_pb2.py") for c in copied)
    ]
    if missing:
        raise SystemExit(
            f"{source}: no generated modules found in {', '.join(missing)}; is it a TensorFlow wheel?"
        )
    return copied


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    copied = extract(pathlib.Path(argv[0]), pathlib.Path(argv[1]))
    print(f"copied {len(copied)} files into {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
