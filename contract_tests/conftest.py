"""Which storage URLs the suite runs against, and the fixtures every contract test uses.

Targets, in order of precedence:

* ``--storage-url URL`` (repeatable): exactly these URLs, any installed backend.
* Otherwise ``memory://``, a fresh SQLite file, and every other installed scheme whose server
  can be found: the URL in ``STOVEPIPE_TEST_<SCHEME>_URL`` (e.g. ``STOVEPIPE_TEST_MYSQL_URL``),
  else a throwaway server from the backend's hook in the ``stovepipe.storage.test_servers``
  entry-point group (testcontainers, where Docker is available). A backend whose server cannot
  be had is skipped with the reason, or, when the ``CI`` environment variable is set, fails.

Tests isolate themselves with unique keys (the ``ns`` fixture), so a backend needs no reset
hook and the suite can share a server with anything else.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import Phase, settings

from stovepipe.storage import Storage, installed_schemes, open_storage

TEST_SERVERS_GROUP = "stovepipe.storage.test_servers"
EMBEDDED_TARGETS = ("memory", "sqlite")


# For runs that only need to know whether a rule fails, not the smallest example of it.
settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])


def in_ci() -> bool:
    """True when the run must treat a backend it cannot reach as a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage-url",
        action="append",
        default=[],
        metavar="URL",
        help="run the storage contract suite against this URL (repeatable)",
    )


def _default_targets() -> list[str]:
    """Embedded backends, then every network scheme with an env URL or a test-server hook."""
    hooks = {ep.name for ep in importlib.metadata.entry_points(group=TEST_SERVERS_GROUP)}
    network = [
        scheme
        for scheme in installed_schemes()
        if scheme not in EMBEDDED_TARGETS
        and (scheme in hooks or f"STOVEPIPE_TEST_{scheme.upper()}_URL" in os.environ)
    ]
    return [*EMBEDDED_TARGETS, *network]


def _target_id(target: str) -> str:
    return target.split("://", 1)[0] if "://" in target else target


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage_target" in metafunc.fixturenames:
        targets = metafunc.config.getoption("storage_url") or _default_targets()
        metafunc.parametrize(
            "storage_target", targets, ids=[_target_id(t) for t in targets], scope="session"
        )


def _unreachable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a backend the run covers must be reachable)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _server_stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def storage_url(
    storage_target: str,
    tmp_path_factory: pytest.TempPathFactory,
    _server_stack: contextlib.ExitStack,
) -> str:
    """The URL of the backend under test, resolved from its target."""
    if "://" in storage_target:
        return storage_target
    if storage_target == "memory":
        return "memory://"
    if storage_target == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/contract.db"
    env_name = f"STOVEPIPE_TEST_{storage_target.upper()}_URL"
    if url := os.environ.get(env_name):
        return url
    hooks = importlib.metadata.entry_points(group=TEST_SERVERS_GROUP, name=storage_target)
    if not hooks:
        _unreachable(f"{storage_target}: set {env_name} to a server URL")
    start_server: Callable[[], contextlib.AbstractContextManager[str]] = next(iter(hooks)).load()
    try:
        return _server_stack.enter_context(start_server())
    except Exception as error:  # the hook says why: no Docker, no testcontainers, ...
        _unreachable(f"{storage_target}: set {env_name}, or make its test server start: {error}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def _shared_storage(storage_url: str) -> Iterator[Storage]:
    try:
        storage = open_storage(storage_url)
    except Exception as error:
        _unreachable(f"cannot open {_target_id(storage_url)} storage: {error!r}")
        raise
    with storage:
        yield storage


@pytest.fixture
def storage(_shared_storage: Storage) -> Storage:
    """One storage instance per backend, shared by the whole run, as a server shares it."""
    return _shared_storage


@pytest.fixture
def ns() -> str:
    """A token unique to the test, to be put in every key it writes."""
    return uuid.uuid4().hex[:12]
