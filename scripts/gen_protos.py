"""Regenerates dm/proto/*_pb2.py and *_pb2.pyi from the .proto files.

Usage: python scripts/gen_protos.py [OUT_DIR]

With OUT_DIR the generated files are written below it instead of in place
(the staleness test uses this to compare them with the committed ones).
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ("dm/proto/graph_data.proto", "dm/proto/activate_execution.proto")


def generate(out_dir: pathlib.Path) -> None:
    """Runs protoc on PROTOS, writing Python modules and stubs to out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--proto_path={ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(ROOT / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
