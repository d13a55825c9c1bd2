"""Where the etcd backend's own tests find a server.

``STOVEPIPE_TEST_ETCD_URL`` names it; without it the conformance plugin starts a throwaway etcd
for the session (``stovepipe_etcd.testing``). With neither, the tests that need a server are
skipped, or fail when the ``CI`` environment variable is set. Each test writes under a prefix
of its own, so a shared server is fine.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
from stovepipe_etcd import EtcdBackend, open_backend

from stovepipe.conformance.plugin import server_url


def with_options(url: str, **options: str) -> str:
    """``url`` with query options set, replacing any of the same name."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in options]
    return urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode([*query, *options.items()]))
    )


@pytest.fixture(scope="session")
def etcd_url(request: pytest.FixtureRequest) -> str:
    """The test server's URL."""
    return server_url(request.config, "etcd")


@pytest.fixture
def url_with(etcd_url: str) -> Callable[..., str]:
    """Make the server's URL with the given query options."""
    return lambda **options: with_options(etcd_url, **options)


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to the test."""
    return f"stovepipe-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def url(etcd_url: str, prefix: str) -> str:
    """The server's URL with the test's own prefix."""
    return with_options(etcd_url, prefix=prefix)


@pytest.fixture
def backend(url: str) -> Iterator[EtcdBackend]:
    """A backend under the test's prefix, closed after the test."""
    opened = open_backend(url)
    yield opened
    opened.close()
