"""A network backend frozen (SIGSTOP) under 200 concurrent Ingest callers: every Ingest is
answered within its deadline, Ping and health within 100 ms throughout, and the service
recovers once the backend runs again."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from stovepipe.conformance.plugin import unreachable
from stovepipe.fault_testing import FreezeFigures, freeze_under_load, private_redis
from stovepipe.resilience import DEFAULT_PROGRESS_WINDOW
from stovepipe.testing import ServeProcesses

DEADLINE = 2.0
SLACK = 0.5
"""Seconds an answer may come after the caller's deadline: the client's own timer."""
PROBE_LIMIT = 0.1
"""Seconds Ping and health answer within, at the 99th percentile of the probes."""
PROBE_WORST = 0.3 + DEFAULT_PROGRESS_WINDOW
"""Seconds the slowest probe may take: on a machine with few cores the 200 callers' process
and the server share them, and a probe can wait for the scheduler, not for the backend; and
when the backend freezes, the callers queued for its bulkhead hold their threads for one
progress window before they are refused, so a probe arriving then waits that long, once."""


def test_frozen_redis_ingest_answers_within_its_deadline_ping_and_health_within_100_ms(
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
    assert figures.probe_failures == 0
    for probes in (figures.ping_seconds, figures.health_seconds):
        assert FreezeFigures.quantile(probes, 0.99) <= PROBE_LIMIT, figures.summary()
        assert max(probes) <= PROBE_WORST, figures.summary()
    assert figures.not_serving_seen  # readiness followed the breaker
    assert figures.recovery_seconds is not None
