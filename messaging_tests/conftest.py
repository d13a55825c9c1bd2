"""Which messaging queue URLs the suite runs against, and the fixtures its tests share.

Targets, in order of precedence:

* ``--queue-url URL`` (repeatable): exactly these URLs.
* Otherwise ``memory://``, a fresh SQLite file, and the servers named by
  ``STOVEPIPE_TEST_MYSQL_URL`` and ``STOVEPIPE_TEST_REDIS_URL``. A server that is not named,
  cannot be reached or whose driver is missing is skipped with the reason, or, when the ``CI``
  environment variable is set, fails.

The rules about processes dying run only on the durable queues (every URL but ``memory://``,
whose messages live and die with its process by design). Tests isolate themselves with
unique topics, so a shared server needs no reset.
"""

from __future__ import annotations

import os
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from messaging_tests.processes import Children, spawned
from stovepipe.messagequeue.registry import InspectableMessageQueue, open_queue, with_query

NETWORK_TARGETS = ("mysql", "redis")
QueueFactory = Callable[..., InspectableMessageQueue]


def in_ci() -> bool:
    """True when the run must treat a server it cannot reach as a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--queue-url",
        action="append",
        default=[],
        metavar="URL",
        help="run the messaging suite against this queue URL (repeatable)",
    )


def _targets(config: pytest.Config) -> list[str]:
    given: list[str] = config.getoption("queue_url")
    return given or ["memory", "sqlite", *NETWORK_TARGETS]


def _target_id(target: str) -> str:
    return target.split("://", 1)[0] if "://" in target else target


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    targets = _targets(metafunc.config)
    for fixture, wanted in (
        ("queue_target", targets),
        ("durable_queue_target", [t for t in targets if _target_id(t) != "memory"]),
    ):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(
                fixture, wanted, ids=[_target_id(t) for t in wanted], scope="session"
            )


def _unreachable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set: every queue the run covers must be reachable)")
    pytest.skip(reason)


def _resolve(target: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if "://" in target:
        url = target
    elif target == "memory":
        url = "memory://"
    elif target == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('queue')}/queue.db"
    else:
        env_name = f"STOVEPIPE_TEST_{target.upper()}_URL"
        url = os.environ.get(env_name, "")
        if not url:
            _unreachable(f"{target}: set {env_name} to a server URL")
    try:  # reach the server (and load its driver) once, so a missing one says so clearly
        open_queue(url).stop()
    except Exception as error:
        _unreachable(f"cannot open the {_target_id(url)} queue at {url}: {error!r}")
    return url


@pytest.fixture(scope="session")
def queue_url(queue_target: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of the queue under test."""
    return _resolve(queue_target, tmp_path_factory)


@pytest.fixture(scope="session")
def durable_queue_url(durable_queue_target: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a durable queue under test."""
    return _resolve(durable_queue_target, tmp_path_factory)


def url_with(url: str, **options: object) -> str:
    """``url`` with these query options added (replacing any of the same name)."""
    from urllib.parse import parse_qsl, urlencode

    query = dict(parse_qsl(url.partition("?")[2]))
    query.update({name: str(value) for name, value in options.items()})
    return with_query(url, urlencode(query))


def _factory(url: str) -> Iterator[QueueFactory]:
    opened: list[InspectableMessageQueue] = []

    def make(**options: object) -> InspectableMessageQueue:
        queue = open_queue(url_with(url, **options))
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.stop(timeout=5)


@pytest.fixture
def make_queue(queue_url: str) -> Iterator[QueueFactory]:
    """``make(**url_options)``: a queue of the implementation under test, stopped at teardown."""
    yield from _factory(queue_url)


@pytest.fixture
def make_durable_queue(durable_queue_url: str) -> Iterator[QueueFactory]:
    """``make(**url_options)``: a durable queue under test, stopped at teardown."""
    yield from _factory(durable_queue_url)


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


def backlog_when_drained(queue: InspectableMessageQueue, topic: str, timeout: float = 10) -> int:
    """The durable ``queue``'s backlog of ``topic`` once it is empty, or after ``timeout``."""
    from stovepipe.messagequeue.brokered import BrokeredMessageQueue

    assert isinstance(queue, BrokeredMessageQueue)
    deadline = time.monotonic() + timeout
    while (left := queue.backlog(topic)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
