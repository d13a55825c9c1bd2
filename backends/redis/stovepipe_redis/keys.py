"""The key layout: one Redis key per stored item, unambiguous for any string.

Every key is the deployment's prefix (``stovepipe:`` unless the URL says otherwise), then a
tag naming the store, then that store's key, all as UTF-8 bytes (Redis keys are binary-safe,
so NUL and any other code point are kept as they are)::

    <prefix>request:<id>                                  a request
    <prefix>request_uri:<n>:<queue>:<uri>                 the (queue, uri) -> id mapping
    <prefix>counter:<domain>                              a counter
    <prefix>queue:<name>                                  a queue
    <prefix>build:<id>                                    a build
    <prefix>fact:<n>:<queue>:<m>:<uri>:<k>:<project>      a fact

``n``, ``m`` and ``k`` are the lengths of the part that follows each, in UTF-8 bytes, written
in decimal. A length fixes where its part ends, so ``:``, ``/`` or NUL inside a part can never
make two keys meet: ``("a:b", "c")`` is ``request_uri:3:a:b:c`` and ``("a", "b:c")`` is
``request_uri:1:a:b:c``. A fact's key prefixes every one of its three parts, so reading the
key from the left recovers the parts one by one. The one-part keys
hold their part as it is: after the tag, it is the rest of the key.

The tags ``request:``, ``request_uri:``, ``counter:``, ``queue:``, ``build:`` and ``fact:`` are
prefix-free (none starts another), so keys of different stores never meet either.

Every operation touches exactly one of these keys, so the layout also suits Redis Cluster,
whose hash slots are computed per key.
"""

from __future__ import annotations

from typing import Final

DEFAULT_PREFIX: Final = "stovepipe:"
"""The prefix of every key unless the URL's ``prefix`` option names another."""


class KeyLayout:
    """Encodes store keys into Redis keys under one prefix."""

    __slots__ = ("_build", "_counter", "_fact", "_queue", "_request", "_request_uri")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        encoded = prefix.encode("utf-8")
        self._request = encoded + b"request:"
        self._request_uri = encoded + b"request_uri:"
        self._counter = encoded + b"counter:"
        self._queue = encoded + b"queue:"
        self._build = encoded + b"build:"
        self._fact = encoded + b"fact:"

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

    def queue(self, name: str) -> bytes:
        """The key of the queue named ``name``."""
        return self._queue + name.encode("utf-8")

    def build(self, build_id: str) -> bytes:
        """The key of the build with ``build_id``."""
        return self._build + build_id.encode("utf-8")

    def fact(self, queue: str, uri: str, project: str) -> bytes:
        """The key of the fact on ``(queue, uri, project)``: each part after its byte length."""
        encoded_queue = queue.encode("utf-8")
        encoded_uri = uri.encode("utf-8")
        encoded_project = project.encode("utf-8")
        return b"%b%d:%b:%d:%b:%d:%b" % (
            self._fact,
            len(encoded_queue),
            encoded_queue,
            len(encoded_uri),
            encoded_uri,
            len(encoded_project),
            encoded_project,
        )
