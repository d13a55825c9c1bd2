"""Keys are exact: compared byte for byte, and distinct keys never share storage."""

from __future__ import annotations

import pytest

from stovepipe.entity import Request, RequestState
from stovepipe.storage import AlreadyExists, Storage

CASE = ["main", "Main", "MAIN", "ß", "ss", "SS", "i", "\u0130", "\u0131"]  # I with dot, dotless i
WHITESPACE = ["x", " x", "x ", "x  ", "\tx", "x\t", "x\n", "\u00a0x", "x\u3000"]
UNICODE = ["é", "e\u0301", "😀", "😁", "a\x00", "a", "\uff41", "\x00", "\x7f", "\u200b"]
SEPARATORS = ["a/b", "a:b", "a|b", "a\\b", "a%2Fb", "a/", "/a", "a:", ":a", "a//b", "a.b"]
VARIANTS = {"case": CASE, "whitespace": WHITESPACE, "unicode": UNICODE, "separators": SEPARATORS}

# (queue, uri) pairs that a naive join of the two (with "/", ":", NUL, "|" or an escape that
# is itself unescaped) would turn into the same key.
COLLIDING_PAIRS = [
    ("a/b", "c"),
    ("a", "b/c"),
    ("a:b", "c"),
    ("a", "b:c"),
    ("a:", "b"),
    ("a", ":b"),
    ("a\x00", "b"),
    ("a", "\x00b"),
    ("a|b", "c"),
    ("a", "b|c"),
    ("a\\", "/b"),
    ("a\\/", "b"),
    ("a%2F", "b"),
    ("a", "%2Fb"),
    ("1:a", "b"),
    ("1", "a:b"),
    ("", "ab"),
    ("ab", ""),
]


def spread(ns: str, variant: str) -> str:
    """Put the test's token where it leaves the variant's leading and trailing characters."""
    return f"{variant[:1]}{ns}{variant[1:]}" if variant[:1].isspace() else f"{ns}{variant}"


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_request_ids(storage: Storage, ns: str, kind: str) -> None:
    ids = [spread(ns, v) for v in VARIANTS[kind]]
    for n, request_id in enumerate(ids):
        storage.requests.create(Request(request_id, f"q{n}", f"u{n}", RequestState.ACCEPTED, 1))
    for n, request_id in enumerate(ids):
        assert storage.requests.get(request_id) == Request(
            request_id, f"q{n}", f"u{n}", RequestState.ACCEPTED, 1
        )


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_queue_and_uri_values(storage: Storage, ns: str, kind: str) -> None:
    values = [spread(ns, v) for v in VARIANTS[kind]]
    for n, value in enumerate(values):
        request = Request(f"{ns}/{kind}/{n}", value, value, RequestState.ACCEPTED, 1)
        storage.requests.create(request)
        assert storage.requests.get(request.id) == request


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_queue_and_uri_pairs(storage: Storage, ns: str, kind: str) -> None:
    values = [spread(ns, v) for v in VARIANTS[kind]]
    pairs = [(queue, uri) for queue in values[:3] for uri in values]
    for n, (queue, uri) in enumerate(pairs):
        storage.request_uris.create(queue, uri, f"id-{n}")
    for n, (queue, uri) in enumerate(pairs):
        assert storage.request_uris.get_id_by_uri(queue, uri) == f"id-{n}"


def test_keys_are_exact_separators_never_make_two_pairs_collide(storage: Storage, ns: str) -> None:
    pairs = [(f"{ns}{queue}", uri) for queue, uri in COLLIDING_PAIRS]
    assert len(set(pairs)) == len(pairs)
    for n, (queue, uri) in enumerate(pairs):
        try:
            storage.request_uris.create(queue, uri, f"id-{n}")
        except AlreadyExists:
            pytest.fail(f"({queue!r}, {uri!r}) collided with an earlier, distinct pair")
    for n, (queue, uri) in enumerate(pairs):
        assert storage.request_uris.get_id_by_uri(queue, uri) == f"id-{n}"


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_counter_domains(storage: Storage, ns: str, kind: str) -> None:
    domains = [spread(ns, v) for v in VARIANTS[kind]]
    assert [storage.counter.next(d) for d in domains] == [1] * len(domains)
    assert storage.counter.next(domains[-1]) == 2


def test_keys_are_exact_ids_and_queues_of_different_stores_never_collide(
    storage: Storage, ns: str
) -> None:
    # The same string used as a request id, a queue, a uri and a counter domain.
    key = f"request/{ns}/1"
    storage.request_uris.create(key, key, "mapped")
    storage.requests.create(Request(key, key, key, RequestState.ACCEPTED, 1))
    assert storage.counter.next(key) == 1
    assert storage.request_uris.get_id_by_uri(key, key) == "mapped"
    assert storage.requests.get(key) == Request(key, key, key, RequestState.ACCEPTED, 1)
