"""``rediss://``: the same backend over TLS, against a private TLS-only redis-server."""

from __future__ import annotations

import pathlib
import time
import urllib.parse

import pytest

from stovepipe.entity import Request, RequestState
from stovepipe.storage import StorageError, Unavailable, open_storage


def test_rediss_speaks_tls_and_keeps_the_contract(tls_server: tuple[str, pathlib.Path]) -> None:
    url, certificate = tls_server
    query = urllib.parse.urlencode({"ssl_ca_certs": str(certificate), "prefix": "tls:"})
    request = Request("request/q/1", "q", "git://r/main/0", RequestState.ACCEPTED, 1)
    with open_storage(f"{url}?{query}") as storage:
        storage.requests.create(request)
        storage.requests.update(request, old_version=1, new_version=2)
        assert storage.requests.get("request/q/1").version == 2
        storage.request_uris.create("q", "git://r/main/0", "request/q/1")
        assert storage.request_uris.get_id_by_uri("q", "git://r/main/0") == "request/q/1"
        assert storage.counter.next("request/q") == 1


def test_rediss_rejects_an_unverified_certificate_as_a_storage_error_not_unavailable(
    tls_server: tuple[str, pathlib.Path],
) -> None:
    url, _ = tls_server
    started = time.monotonic()
    with pytest.raises(StorageError, match="certificate verify failed") as raised:
        open_storage(f"{url}?timeout=1")
    assert not isinstance(raised.value, Unavailable)
    assert time.monotonic() - started < 5


def test_plain_redis_against_a_tls_port_is_unavailable_promptly(
    tls_server: tuple[str, pathlib.Path],
) -> None:
    url, _ = tls_server
    started = time.monotonic()
    with pytest.raises(Unavailable):
        open_storage(url.replace("rediss://", "redis://", 1) + "?timeout=1")
    assert time.monotonic() - started < 5
