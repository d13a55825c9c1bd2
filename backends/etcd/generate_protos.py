"""Generate the Python code of ``stovepipe_etcd/etcdrpc/rpc.proto`` next to it.

    python backends/etcd/generate_protos.py          # (re)write rpc_pb2.py and rpc_pb2.pyi
    python backends/etcd/generate_protos.py --check  # exit 1 if they differ from rpc.proto

Only messages are generated: the client names etcd's service methods itself, so no gRPC
stub module is needed. The output depends only on rpc.proto and the pinned grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent
PROTO = "stovepipe_etcd/etcdrpc/rpc.proto"
GENERATED = ("stovepipe_etcd/etcdrpc/rpc_pb2.py", "stovepipe_etcd/etcdrpc/rpc_pb2.pyi")
# protoc's stubs write bare ``Mapping``; strict mypy would flag every message constructor.
STUB_HEADER = b'# mypy: disable-error-code="type-arg"\n'


def generate(out_dir: pathlib.Path) -> None:
    """Compile the proto into ``out_dir``."""
    status = protoc.main(
        ["protoc", f"-I{ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", PROTO]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    stub = out_dir / GENERATED[1]
    stub.write_bytes(STUB_HEADER + stub.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = pathlib.Path(tmp)
        generate(out_dir)
        if args.check:
            stale = [
                rel
                for rel in GENERATED
                if not (ROOT / rel).exists()
                or not filecmp.cmp(out_dir / rel, ROOT / rel, shallow=False)
            ]
            if stale:
                print("generated code differs from rpc.proto: " + ", ".join(stale), file=sys.stderr)
                print("run: python backends/etcd/generate_protos.py", file=sys.stderr)
                return 1
            return 0
        for rel in GENERATED:
            (ROOT / rel).write_bytes((out_dir / rel).read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
