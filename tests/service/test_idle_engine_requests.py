"""An idle ``stovepipe serve`` sends at most 5 requests per second to its engines: counted by
each engine itself (a private server of this test's), over 10 s idle after start-up and 10 s
idle after a burst of new heads went through the whole pipeline.

SQLite is not measured: it is a library in the server's process, with no request to count.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from stovepipe.conformance.plugin import unreachable
from stovepipe.idle_testing import IDLE_REQUESTS_PER_SECOND_LIMIT, measure_idle

BINARIES = {"mysql": "mariadbd", "redis": "redis-server", "etcd": "etcd"}
PACKAGES = {"mysql": "stovepipe_mysql", "redis": "stovepipe_redis", "etcd": "stovepipe_etcd"}


@pytest.mark.parametrize("engine", ["mysql", "redis", "etcd"])
def test_an_idle_server_sends_at_most_5_requests_a_second_to_its_engine(engine: str) -> None:
    if importlib.util.find_spec(PACKAGES[engine]) is None:
        unreachable(f"{PACKAGES[engine]} is not installed")
    if (
        shutil.which(BINARIES[engine]) is None
        and shutil.which(BINARIES[engine], path="/usr/sbin:/sbin") is None
    ):
        unreachable(f"{BINARIES[engine]} is not installed")
    figures = measure_idle(engine, seconds=10.0)
    print(figures)
    # The counter counts: the burst's requests were seen.
    assert figures.during_work > 10 * IDLE_REQUESTS_PER_SECOND_LIMIT, figures
    assert figures.after_start <= IDLE_REQUESTS_PER_SECOND_LIMIT, figures
    assert figures.after_work <= IDLE_REQUESTS_PER_SECOND_LIMIT, figures
