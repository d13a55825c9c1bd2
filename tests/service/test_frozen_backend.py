"""A network backend frozen (SIGSTOP) under 200 concurrent Ingest callers: every Ingest is
answered within its deadline, every Ping and health check within a second (each probe's own
deadline) throughout, and the service recovers once the backend runs again.

How fast the probes answer (100 ms at the 99th percentile on an idle machine) is a figure of
``benchmarks/bench_frozen_backend.py``, not asserted here: on a loaded 2-core machine the 200
callers, the server and the probes share the cores, and a probe waits for the scheduler."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from stovepipe.conformance.plugin import unreachable
from stovepipe.fault_testing import freeze_under_load, private_redis
from stovepipe.testing import ServeProcesses

DEADLINE = 2.0
SLACK = 1.5
"""Seconds an answer may come after the caller's deadline: the client's own timer, on a
machine whose cores the 200 callers share."""


def test_frozen_redis_ingest_answers_within_its_deadline_ping_and_health_within_a_second(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("stovepipe_redis")
    if shutil.which("redis-server") is None:
        unreachable("redis-server is not installed")
    with private_redis(tmp_path) as redis:
        config = tmp_path / "stovepipe.toml"
        config.write_text(
            f'storage_url = "{redis.url}"\n[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n',
            encoding="utf-8",
        )
        server = processes.serve(["--config", str(config)], cwd=tmp_path)
        figures = freeze_under_load(
            server.address, redis, callers=200, deadline=DEADLINE, freeze_seconds=6.0
        )
        print(figures.summary(), dict(figures.outcomes))
        assert server.popen.poll() is None, server.output()

    assert len(figures.call_seconds) >= 200, figures.outcomes  # the load was real
    assert max(figures.call_seconds) <= DEADLINE + SLACK, figures.summary()
    # Most callers were told at once to come back later, rather than waiting it out.
    assert figures.outcomes["UNAVAILABLE"] > figures.outcomes["DEADLINE_EXCEEDED"]
    # Every probe was answered within its 1 s deadline: none waited for the frozen backend
    # (6 s), nor for a thread the callers held.
    assert figures.probe_failures == 0, figures.summary()
    assert len(figures.ping_seconds) > 20 and len(figures.health_seconds) > 20
    assert figures.not_serving_seen  # readiness followed the breaker
    assert figures.recovery_seconds is not None
