"""Where the etcd backend's own tests find a server.

``STOVEPIPE_TEST_ETCD_URL`` names it (``.ci/run`` starts one and sets it). Without it the tests
that need a server are skipped, or fail when the ``CI`` environment variable is set. Each test
writes under a prefix of its own, so a shared server is fine.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
from stovepipe_etcd import EtcdBackend, open_backend

from stovepipe.conformance.plugin import in_ci

URL_VARIABLE = "STOVEPIPE_TEST_ETCD_URL"


def with_options(url: str, **options: str) -> str:
    """``url`` with query options set, replacing any of the same name."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in options]
    return urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode([*query, *options.items()]))
    )


@pytest.fixture(scope="session")
def etcd_url() -> str:
    """The server's URL as configured."""
    url = os.environ.get(URL_VARIABLE)
    if not url:
        reason = f"set {URL_VARIABLE} to an etcd server, e.g. etcd://127.0.0.1:2379"
        if in_ci():
            pytest.fail(f"{reason} (CI is set: the etcd backend's tests must run)")
        pytest.skip(reason)
    return url


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
