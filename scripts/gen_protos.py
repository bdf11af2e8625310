"""Generate the checked-in Python stubs (messages, gRPC, .pyi) from protos/.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: the repository root)

The drift test runs this into a temporary directory and compares the result
with what is checked in, so the stubs can never silently fall behind.
"""

from __future__ import annotations

import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# Generated modules land beside these packages' sources (labeler/v1, trainer/v1).
PACKAGES = ("labeler/v1", "trainer/v1")


def proto_files() -> list[str]:
    """Every .proto under protos/, relative to it, in a stable order."""
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for package in PACKAGES:
        init = out_dir / package / "__init__.py"
        if not init.exists():
            init.write_text(
                '"""Generated protobuf and gRPC stubs; regenerate with scripts/gen_protos.py."""\n'
            )


def main(argv: list[str]) -> int:
    out_dir = pathlib.Path(argv[1]) if len(argv) > 1 else ROOT
    generate(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
