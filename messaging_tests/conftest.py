"""The fixtures the messaging conformance tests share.

Which messaging URLs a run covers, the ``--messaging-url`` option and what happens to one that
cannot be had live in the plugin :mod:`stovepipe.conformance.plugin`. The rules about
processes dying run only on the implementations that declare themselves durable and shared (a
``capabilities`` attribute, as storage backends have: ``memory://`` declares neither, since its
messages live and die with its process by design). Tests isolate themselves with unique
topics, so a shared server needs no reset.
"""

from __future__ import annotations

import importlib.util
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from stovepipe.conformance.plugin import (
    MESSAGING_NETWORK_TARGETS,
    messaging_capabilities,
    messaging_targets,
    resolve_messaging_url,
    target_id,
)
from stovepipe.messaging.registry import InspectableMessaging, open_messaging, with_query
from stovepipe.storage import Capability

from .processes import Children, spawned

NETWORK_TARGETS = MESSAGING_NETWORK_TARGETS
MessagingFactory = Callable[..., InspectableMessaging]

# The modules about one engine's queue need its driver; without it they are not collected.
collect_ignore = [
    module
    for module, driver in (
        ("test_errors.py", "stovepipe_redis"),
        ("test_errors.py", "stovepipe_mysql"),
        ("test_redis.py", "stovepipe_redis"),
        ("test_mysql.py", "stovepipe_mysql"),
    )
    if importlib.util.find_spec(driver) is None
]

_targets = messaging_targets
_target_id = target_id


def _resolve(target: str, request: pytest.FixtureRequest) -> str:
    tmp_path_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    return resolve_messaging_url(request.config, target, tmp_path_factory.mktemp("queue"))


def engine_url(engine: str, request: pytest.FixtureRequest) -> str:
    """The ``engine`` queue's URL for the tests of that engine alone: the one the run names.

    Skipped when the run's ``--messaging-url`` names only other queues.
    """
    covered = [t for t in messaging_targets(request.config) if target_id(t) == engine]
    if not covered:
        pytest.skip(f"the run covers no {engine} queue")
    return _resolve(covered[0], request)


@pytest.fixture(scope="session")
def messaging_url(messaging_target: str, request: pytest.FixtureRequest) -> str:
    """The URL of the messaging implementation under test."""
    return _resolve(messaging_target, request)


@pytest.fixture(scope="session")
def durable_messaging_url(durable_messaging_target: str, request: pytest.FixtureRequest) -> str:
    """The URL of a messaging implementation under test that declares itself durable and
    shared (messages outlive the process that published them and reach every process on
    the URL); the test is skipped, naming the capability, for one that does not."""
    url = _resolve(durable_messaging_target, request)
    declared = messaging_capabilities(url)
    for needed in (Capability.DURABLE, Capability.SHARED):
        if needed not in declared:
            pytest.skip(
                f"the messaging implementation does not declare the capability {needed.value!r}"
            )
    return url


def url_with(url: str, **options: object) -> str:
    """``url`` with these query options added (replacing any of the same name)."""
    from urllib.parse import parse_qsl, urlencode

    query = dict(parse_qsl(url.partition("?")[2]))
    query.update({name: str(value) for name, value in options.items()})
    return with_query(url, urlencode(query))


def _factory(url: str) -> Iterator[MessagingFactory]:
    opened: list[InspectableMessaging] = []

    def make(**options: object) -> InspectableMessaging:
        messaging = open_messaging(url_with(url, **options))
        opened.append(messaging)
        return messaging

    yield make
    for messaging in opened:
        messaging.stop(timeout=5)


@pytest.fixture
def make_messaging(messaging_url: str) -> Iterator[MessagingFactory]:
    """``make(**url_options)``: messaging of the implementation under test, stopped at
    teardown."""
    yield from _factory(messaging_url)


@pytest.fixture
def make_durable_messaging(durable_messaging_url: str) -> Iterator[MessagingFactory]:
    """``make(**url_options)``: durable messaging under test, stopped at teardown."""
    yield from _factory(durable_messaging_url)


@pytest.fixture
def topic() -> str:
    """A topic unique to the test."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def record_path(tmp_path: pathlib.Path) -> pathlib.Path:
    """A file where consumers in child processes append one JSON line per event."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def children(record_path: pathlib.Path) -> Iterator[Children]:
    """Consumer processes for this test, killed at teardown if still running."""
    yield from spawned(record_path)


def backlog_when_drained(queue: InspectableMessaging, topic: str, timeout: float = 10) -> int:
    """The durable ``queue``'s backlog of ``topic`` once it is empty, or after ``timeout``."""
    from stovepipe.messaging.brokered import BrokeredMessaging

    assert isinstance(queue, BrokeredMessaging)
    deadline = time.monotonic() + timeout
    while (left := queue.backlog(topic)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
