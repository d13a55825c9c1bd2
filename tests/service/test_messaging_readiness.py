"""Readiness follows the messaging engine even when no RPC uses it: with the engine frozen
(SIGSTOP) the consumers' claims fail, and the health service reports the Stovepipe service
NOT_SERVING (liveness, ``""``, stays SERVING); once it runs again, SERVING."""

from __future__ import annotations

import pathlib
import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from stovepipe.conformance.plugin import unreachable
from stovepipe.fault_testing import STOVEPIPE_SERVICE, private_redis
from stovepipe.testing import ServeProcesses

BOUND = 30.0
"""Seconds readiness may take to follow the engine: a broken server fails, never hangs."""
BREAKER_RESET = 1.0


def _status_until(health: object, service: str, wanted: int) -> list[int]:
    """Ask the health service about ``service`` until it answers ``wanted`` or ``BOUND``
    seconds pass; every status seen, in order."""
    seen: list[int] = []
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        request = health_pb2.HealthCheckRequest(service=service)
        status = int(health.Check(request, timeout=5).status)  # type: ignore[attr-defined]
        seen.append(status)
        if status == wanted:
            break
        time.sleep(0.1)
    return seen


def test_readiness_is_not_serving_while_the_consumers_cannot_reach_the_messaging_engine(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("stovepipe_redis")
    if shutil.which("redis-server") is None:
        unreachable("redis-server is not installed")
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    with private_redis(tmp_path) as redis:
        config = tmp_path / "stovepipe.toml"
        config.write_text(
            f'storage_url = "sqlite:///{tmp_path / "storage.sqlite"}"\n'
            f'messaging_url = "{redis.url}?timeout=1&poll_interval=0.05"\n'
            f"breaker_failures = 3\nbreaker_reset = {BREAKER_RESET}\n"
            '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n',
            encoding="utf-8",
        )
        server = processes.serve(["--config", str(config)], cwd=tmp_path)
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert _status_until(health, STOVEPIPE_SERVICE, serving)[-1] == serving
            redis.pause()
            try:
                # No RPC publishes meanwhile: only the consumers meet the frozen engine.
                down = _status_until(health, STOVEPIPE_SERVICE, not_serving)
                assert down[-1] == not_serving, f"{down[-1]} after {BOUND} s: {server.output()}"
                # It stays so while the engine stays down, well past the breaker's reset
                # window, though the consumers' retries grow sparser than it.
                time.sleep(5 * BREAKER_RESET)
                request = health_pb2.HealthCheckRequest(service=STOVEPIPE_SERVICE)
                assert health.Check(request, timeout=5).status == not_serving
                liveness = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert liveness.status == serving
            finally:
                redis.resume()
            up = _status_until(health, STOVEPIPE_SERVICE, serving)
            assert up[-1] == serving, f"still {up[-1]} {BOUND} s after the engine resumed"
        assert server.popen.poll() is None, server.output()
