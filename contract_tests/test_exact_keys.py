"""Keys are exact: compared byte for byte, and distinct keys never share storage."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
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


FactKey = tuple[str, str, str]

# Separators a fact key's three parts might naively be joined with.
JOINS = ["/", ":", "\x00", "\x1f", "|", "\\", "\n", ",", "::", "\x00\x00", ""]


def joined_the_same(separator: str) -> list[list[FactKey]]:
    """Groups of distinct keys that ``separator.join`` turns into one string, one group per
    joined string; empty parts included."""
    if not separator:
        return [[("abc"[:i], "abc"[i:j], "abc"[j:]) for i in range(4) for j in range(i, 4)]]
    step = len(separator)
    groups = []
    for target in [f"a{separator}b{separator}c{separator}d", f"a{separator * 3}b", separator * 3]:
        cuts = [i for i in range(len(target)) if target.startswith(separator, i)]
        groups.append(
            [
                (target[:i], target[i + step : j], target[j + step :])
                for i, j in itertools.combinations(cuts, 2)
                if j >= i + step
            ]
        )
    return groups


def length_prefixed_the_same(ns: str) -> list[FactKey]:
    """Two keys that prefixing each part with its decimal length, undelimited, confuses.

    ``("3abc14" + ns, "", "")`` encodes as ``"18" "3abc14<ns>" "0" "0"`` and
    ``("8", "abc", ns + "00")`` as ``"18" "3abc" "14" "<ns>00"``: the same string.
    """
    queue = f"3abc{len(ns) + 2}{ns}"
    assert 10 <= len(queue) <= 19, "the construction needs a two-digit length starting with 1"
    return [(queue, "", ""), (str(len(queue) - 10), "abc", f"{ns}00")]


# Encodings a backend might naively lay a fact key out with; each group colliding_fact_keys
# returns collides under one of them, so a backend laying keys out so fails the test.
NAIVE_ENCODINGS: list[Callable[[FactKey], str]] = [
    *[lambda key, separator=separator: separator.join(key) for separator in JOINS],
    lambda key: "/".join(part.replace("/", "\\/") for part in key),  # "\\" left unescaped
    lambda key: "/".join(part.replace("/", "%2F") for part in key),  # "%" left unescaped
    lambda key: "".join(f"{len(part)}{part}" for part in key),  # no end to a length
    lambda key: "/".join(part.split("\x00")[0] for part in key),  # C strings end at NUL
]


def colliding_fact_keys(ns: str) -> list[list[FactKey]]:
    """Groups of distinct fact keys, each group one key under some naive encoding."""

    def prefixed(keys: list[FactKey]) -> list[FactKey]:
        # The same prefix on every queue keeps joined keys equal: join(ns+q, u, p) = ns+join.
        return [(ns + queue, uri, project) for queue, uri, project in keys]

    return [
        *[prefixed(group) for separator in JOINS for group in joined_the_same(separator)],
        prefixed([("a", "b\\", "/c"), ("a", "b/\\", "c")]),
        prefixed([("a", "\\", "/"), ("a", "/\\", "")]),
        prefixed([("a/", "b", ""), ("a%2F", "b", "")]),
        prefixed([("a", "b/", "%2F"), ("a", "b%2F", "/")]),
        prefixed(
            [("a", "b", ""), ("a", "b", "\x00"), ("a\x00z", "b", ""), ("a", "b\x00z", "\x00")]
        ),
        length_prefixed_the_same(ns),
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


# Every character a key might be joined or escaped with: each ASCII one that is not a letter
# or digit, and a few beyond ASCII.
JOIN_CHARACTERS = [c for c in map(chr, range(128)) if not c.isalnum()] + [
    "\u0085",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
]
ESCAPE_CHARACTERS = ["\\", "%", "^", "~", "!", "$", "&", "'", '"', "`", "\x00", "\x1b", "\x10"]


def generated_colliding_pairs() -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pairs of distinct (queue, uri) pairs, built so that joining queue and uri with any one
    character ``s`` (``a s b`` both ways), or escaping ``s`` with an escape character ``e``
    that is not itself escaped, gives both the same key."""
    pairs = [((f"a{s}b", "c"), ("a", f"b{s}c")) for s in JOIN_CHARACTERS]
    pairs += [
        ((f"x{e}", f"y{s}z"), (f"x{s}y{e}", "z"))
        for s in JOIN_CHARACTERS
        for e in ESCAPE_CHARACTERS
        if s != e
    ]
    return pairs


def test_keys_are_exact_no_join_character_and_no_unescaped_escape_makes_pairs_collide(
    storage: Storage, ns: str
) -> None:
    for n, (first, second) in enumerate(generated_colliding_pairs()):
        (q1, u1), (q2, u2) = (f"{ns}{first[0]}", first[1]), (f"{ns}{second[0]}", second[1])
        storage.request_uris.create(q1, u1, f"id-{n}-1")
        try:
            storage.request_uris.create(q2, u2, f"id-{n}-2")
        except AlreadyExists:
            pytest.fail(f"({q2!r}, {u2!r}) collided with the distinct pair ({q1!r}, {u1!r})")
        assert storage.request_uris.get_id_by_uri(q1, u1) == f"id-{n}-1", (q1, u1)
        assert storage.request_uris.get_id_by_uri(q2, u2) == f"id-{n}-2", (q2, u2)


def test_keys_are_exact_for_long_uris_that_share_all_but_their_last_character(
    storage: Storage, ns: str
) -> None:
    # An index on a prefix of the uri (or a key cut to a length) maps these two as one.
    for length in (64, 191, 255, 256, 767, 1023):
        prefix = f"{ns}/" + "u" * (length - len(ns) - 2)
        uris = [prefix + "a", prefix + "b"]
        for uri in uris:
            try:
                storage.request_uris.create(f"{ns}/q", uri, f"id-{uri[-1]}-{length}")
            except AlreadyExists:
                pytest.fail(f"two uris of {length} bytes that differ in the last one collided")
        for uri in uris:
            assert storage.request_uris.get_id_by_uri(f"{ns}/q", uri) == (f"id-{uri[-1]}-{length}")


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_queue_names(storage: Storage, ns: str, kind: str) -> None:
    names = [spread(ns, v) for v in VARIANTS[kind]]
    queues = [Queue(name, latest_request_id=f"r{n}", in_flight=n) for n, name in enumerate(names)]
    for queue in queues:
        storage.queues.create(queue)
    assert [storage.queues.get(name) for name in names] == queues


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_build_ids(storage: Storage, ns: str, kind: str) -> None:
    ids = [spread(ns, v) for v in VARIANTS[kind]]
    builds = [
        Build(build_id, f"r{n}", BuildStatus.RUNNING, f"l{n}", 1) for n, build_id in enumerate(ids)
    ]
    for build in builds:
        storage.builds.create(build)
    assert [storage.builds.get(build_id) for build_id in ids] == builds


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_queue_build_and_fact_values(
    storage: Storage, ns: str, kind: str
) -> None:
    # Every stored string reads back exactly: no trimming, folding or normalising.
    for n, value in enumerate(spread(ns, v) for v in VARIANTS[kind]):
        queue = Queue(f"{ns}/{kind}/{n}", value, value, value, n)
        storage.queues.create(queue)
        assert storage.queues.get(queue.name) == queue
        build = Build(f"{ns}/{kind}/{n}", value, BuildStatus.ACCEPTED, value, 1)
        storage.builds.create(build)
        assert storage.builds.get(build.id) == build
        fact = Fact(f"{ns}/{kind}", f"{n}", "", 0.5, value, 1.5)
        storage.facts.create(fact)
        assert storage.facts.get(fact.queue, fact.uri, fact.project) == fact


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_fact_keys(storage: Storage, ns: str, kind: str) -> None:
    values = [spread(ns, v) for v in VARIANTS[kind]]
    keys = list(
        dict.fromkeys(
            [
                *itertools.product(values[:3], values[:3], values),
                *itertools.product(values[:3], values, values[:3]),
                *itertools.product(values, values[:3], values[:3]),
            ]
        )
    )
    facts = [Fact(*key, n / len(keys), f"id-{n}", float(n)) for n, key in enumerate(keys)]
    for fact in facts:
        storage.facts.create(fact)
    assert [storage.facts.get(*key) for key in keys] == facts


def test_keys_are_exact_separators_never_make_two_fact_keys_collide(
    storage: Storage, ns: str
) -> None:
    groups = colliding_fact_keys(ns)
    for group in groups:  # each group really collides under some naive encoding
        assert any(len({encode(key) for key in group}) == 1 for encode in NAIVE_ENCODINGS), group
    keys = [key for group in groups for key in group]
    assert len(set(keys)) == len(keys)
    facts = [Fact(*key, n / len(keys), f"id-{n}", float(n)) for n, key in enumerate(keys)]
    for fact in facts:
        try:
            storage.facts.create(fact)
        except AlreadyExists:
            pytest.fail(f"{fact.queue, fact.uri, fact.project!r} collided with an earlier key")
    assert [storage.facts.get(*key) for key in keys] == facts


@pytest.mark.parametrize("kind", VARIANTS)
def test_keys_are_exact_for_counter_domains(storage: Storage, ns: str, kind: str) -> None:
    domains = [spread(ns, v) for v in VARIANTS[kind]]
    assert [storage.counter.next(d) for d in domains] == [1] * len(domains)
    assert storage.counter.next(domains[-1]) == 2


def test_keys_are_exact_ids_and_queues_of_different_stores_never_collide(
    storage: Storage, ns: str
) -> None:
    # The same string as a request id, queue, uri, counter domain, build id and fact key part.
    key = f"request/{ns}/1"
    storage.request_uris.create(key, key, "mapped")
    storage.requests.create(Request(key, key, key, RequestState.ACCEPTED, 1))
    assert storage.counter.next(key) == 1
    storage.queues.create(Queue(key, in_flight=3))
    storage.builds.create(Build(key, "built", BuildStatus.RUNNING, "log", 2))
    storage.facts.create(Fact(key, key, key, 0.5, "fact", 1.5))
    storage.facts.create(Fact(key, key, "", 1.0, "whole", 2.5))
    assert storage.request_uris.get_id_by_uri(key, key) == "mapped"
    assert storage.requests.get(key) == Request(key, key, key, RequestState.ACCEPTED, 1)
    assert storage.queues.get(key) == Queue(key, in_flight=3)
    assert storage.builds.get(key) == Build(key, "built", BuildStatus.RUNNING, "log", 2)
    assert storage.facts.get(key, key, key) == Fact(key, key, key, 0.5, "fact", 1.5)
    assert storage.facts.get(key, key, "") == Fact(key, key, "", 1.0, "whole", 2.5)
