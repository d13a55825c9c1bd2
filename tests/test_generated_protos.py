"""The generated code in use matches the .proto files it claims to come from."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_in_use_matches_the_proto_files() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_service_in_use_is_the_one_the_proto_declares() -> None:
    from stovepipe.v1 import stovepipe_pb2

    proto = (ROOT / "proto" / "stovepipe" / "v1" / "stovepipe.proto").read_text()
    service = stovepipe_pb2.DESCRIPTOR.services_by_name["Stovepipe"]
    assert service.full_name == "stovepipe.v1.Stovepipe"
    for method in service.methods:
        assert f"rpc {method.name}(" in proto
