"""Fixtures for the Redis backend's own tests: a real server, a key prefix per test.

The server's URL comes from ``STOVEPIPE_TEST_REDIS_URL``, else from the backend's
throwaway-server hook (Docker). With neither, the tests are skipped, except when ``CI`` is
set (to anything but ``false``, ``0`` or ``no``): then they fail, as CI must cover Redis.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from stovepipe.storage import Storage, open_storage


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The base URL of a real Redis server (no query options)."""
    url = os.environ.get("STOVEPIPE_TEST_REDIS_URL")
    if url:
        yield url
        return
    from stovepipe_redis.testing import redis_server

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(redis_server())
        except Exception as error:
            reason = f"no Redis: STOVEPIPE_TEST_REDIS_URL is unset and {error}"
            if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
                pytest.fail(reason)
            pytest.skip(reason)
        yield url


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"stovepipe-test-{uuid.uuid4().hex}:"


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test database; deletes the test's keys afterwards."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
        keys = list(client.scan_iter(match=prefix.encode() + b"*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


UrlWith = Callable[..., str]


@pytest.fixture
def url_with(redis_url: str, prefix: str) -> UrlWith:
    """Builds the server's URL with query options; ``prefix`` defaults to the test's."""

    def build(**options: str) -> str:
        options.setdefault("prefix", prefix)
        parts = urllib.parse.urlsplit(redis_url)
        query = urllib.parse.parse_qsl(parts.query) + list(options.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    return build


@pytest.fixture
def storage(url_with: UrlWith, raw: redis.Redis) -> Iterator[Storage]:
    """A storage on the test server whose keys all start with the test's prefix."""
    with open_storage(url_with()) as opened:
        yield opened
