"""Generate the Python code of every .proto under proto/ into the source tree.

    python scripts/generate_protos.py          # (re)write the generated modules
    python scripts/generate_protos.py --check  # exit 1 if they differ from the .proto files

The output depends only on the .proto files and the pinned grpcio-tools, so it is
reproducible; the test suite runs ``--check``.
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Compile every proto into ``out_dir``; return the generated files, relative."""
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *protos,
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    return sorted(
        path.relative_to(out_dir) for path in out_dir.rglob("*") if path.name.endswith(SUFFIXES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = pathlib.Path(tmp)
        generated = generate(out_dir)
        committed = sorted(
            path.relative_to(ROOT)
            for path in (ROOT / "stovepipe").rglob("*")
            if path.name.endswith(SUFFIXES)
        )
        if args.check:
            stale = [
                str(rel)
                for rel in sorted(set(generated) | set(committed))
                if rel not in generated
                or rel not in committed
                or not filecmp.cmp(out_dir / rel, ROOT / rel, shallow=False)
            ]
            if stale:
                print("generated code differs from proto/: " + ", ".join(stale), file=sys.stderr)
                print("run: python scripts/generate_protos.py", file=sys.stderr)
                return 1
            return 0
        for rel in generated:
            (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
            (ROOT / rel).write_bytes((out_dir / rel).read_bytes())
        for rel in set(committed) - set(generated):
            (ROOT / rel).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
