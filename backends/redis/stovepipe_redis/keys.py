"""The key layout: one Redis key per stored item, unambiguous for any string.

Every key is the deployment's prefix (``stovepipe:`` unless the URL says otherwise), then a
tag naming the store, then that store's key, all as UTF-8 bytes (Redis keys are binary-safe,
so NUL and any other code point are kept as they are)::

    <prefix>request:<id>                      a request
    <prefix>request_uri:<n>:<queue>:<uri>     the (queue, uri) -> id mapping; n = len(queue)
    <prefix>counter:<domain>                  a counter

``n`` is the length of the queue in UTF-8 bytes, written in decimal. It fixes where the queue
ends, so ``:`` or ``/`` inside a queue or URI can never make two pairs share a key:
``("a:b", "c")`` is ``request_uri:3:a:b:c`` and ``("a", "b:c")`` is ``request_uri:1:a:b:c``.
The tags ``request:``, ``request_uri:`` and ``counter:`` are prefix-free (none starts
another), so keys of different stores never meet either.

Every operation touches exactly one of these keys, so the layout also suits Redis Cluster,
whose hash slots are computed per key.
"""

from __future__ import annotations

from typing import Final

DEFAULT_PREFIX: Final = "stovepipe:"
"""The prefix of every key unless the URL's ``prefix`` option names another."""


class KeyLayout:
    """Encodes store keys into Redis keys under one prefix."""

    __slots__ = ("_counter", "_request", "_request_uri")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        encoded = prefix.encode("utf-8")
        self._request = encoded + b"request:"
        self._request_uri = encoded + b"request_uri:"
        self._counter = encoded + b"counter:"

    def request(self, request_id: str) -> bytes:
        """The key of the request with ``request_id``."""
        return self._request + request_id.encode("utf-8")

    def request_uri(self, queue: str, uri: str) -> bytes:
        """The key of the ``(queue, uri)`` mapping: the queue's byte length fixes its end."""
        encoded_queue = queue.encode("utf-8")
        return b"%b%d:%b:%b" % (
            self._request_uri,
            len(encoded_queue),
            encoded_queue,
            uri.encode("utf-8"),
        )

    def counter(self, domain: str) -> bytes:
        """The key of the counter of ``domain``."""
        return self._counter + domain.encode("utf-8")
