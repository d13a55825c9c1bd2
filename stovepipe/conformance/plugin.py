"""The pytest plugin the conformance suites run under (a ``pytest11`` entry point).

It holds, once for both suites:

* the options: ``--storage-url URL`` and ``--messaging-url URL`` (each repeatable;
  ``--queue-url`` is a deprecated alias of the latter, since "queue" names a repository and
  ref in Stovepipe);
* which backends a run covers: exactly the URLs given, else ``memory://``, a fresh SQLite file
  and every network backend whose server can be found (:func:`server_url`: the URL in
  ``STOVEPIPE_TEST_<SCHEME>_URL``, else a throwaway server from the backend's hook in the
  ``stovepipe.storage.test_servers`` entry-point group, started once for the session);
* a time limit on each test of the suites (``--conformance-timeout``, default
  :data:`DEFAULT_TIMEOUT` seconds for each of setup, call and teardown): a test that hangs
  fails with the stacks of every thread, instead of holding the run forever, and the other
  tests of the same target then fail at once;
* what a run does about a backend it cannot have: a URL given explicitly that cannot be opened
  is a failure naming the error; a server found by discovery that cannot be had or reached is
  skipped with the reason, or fails when the ``CI`` environment variable is set, and the run
  ends with one line naming every engine that could not run and what to install.

Importing it costs only pytest and the standard library, since pytest loads it in every run
of an environment where Stovepipe is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import pathlib
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Generator
from types import FrameType
from typing import Final, NoReturn

import pytest

TEST_SERVERS_GROUP = "stovepipe.storage.test_servers"
EMBEDDED_TARGETS = ("memory", "sqlite")
MESSAGING_NETWORK_TARGETS = ("mysql", "redis")
SUITE_PACKAGES = ("stovepipe.conformance.storage", "stovepipe.conformance.messaging")
DEFAULT_TIMEOUT = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stovepipe", "Stovepipe conformance suites")
    group.addoption(
        "--storage-url",
        action="append",
        default=[],
        metavar="URL",
        help="run the storage conformance suite against this URL only (repeatable)",
    )
    group.addoption(
        "--messaging-url",
        action="append",
        default=[],
        metavar="URL",
        help="run the messaging conformance suite against this messaging URL only (repeatable)",
    )
    group.addoption(
        "--queue-url",
        action="append",
        default=[],
        metavar="URL",
        help="deprecated: the old name of --messaging-url",
    )
    group.addoption(
        "--conformance-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="fail a conformance test whose setup, call or teardown takes longer "
        f"(default {DEFAULT_TIMEOUT:.0f}; 0 for no limit)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("queue_url", None):
        # "queue" names a repository and ref in Stovepipe, never the transport.
        config.issue_config_time_warning(
            DeprecationWarning("--queue-url is deprecated: use --messaging-url"), stacklevel=2
        )


def in_ci() -> bool:
    """True when the run must treat a backend it cannot reach as a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unreachable(reason: str, *, explicit: bool = False) -> NoReturn:
    """Fail or skip the current test because its backend cannot be had, saying ``reason``.

    A URL given explicitly (``explicit``) must work, so it fails; so does anything under
    ``CI``. Otherwise the test is skipped.
    """
    if explicit:
        pytest.fail(f"{reason} (the URL was given explicitly: it must work)", pytrace=False)
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a backend the run covers must be reachable)")
    pytest.skip(reason)


def is_explicit(target: str) -> bool:
    """True for a target given as a URL, false for one named by scheme for discovery.

    An engine's name is a bare scheme (letters, digits, ``+``, ``.``, ``-``). Anything else
    is a URL given explicitly, a malformed one included (``sqlite:/x.db``,
    ``127.0.0.1:6379``): it must open, or the run fails naming the error, never skips.
    """
    return _ENGINE_NAME.fullmatch(target) is None


def target_id(target: str) -> str:
    """The scheme of a target, for test ids and messages."""
    return target.split(":", 1)[0] if is_explicit(target) else target


_ENGINE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class _Servers:
    """The session's test servers: URLs found or started, and why the others could not be."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.urls: dict[str, str] = {}
        self.missing: dict[str, str] = {}


_SERVERS = pytest.StashKey[_Servers]()


def url_variable(engine: str) -> str:
    """The environment variable naming ``engine``'s test server: ``STOVEPIPE_TEST_<ENGINE>_URL``."""
    return f"STOVEPIPE_TEST_{engine.upper()}_URL"


def server_url(config: pytest.Config, engine: str) -> str:
    """The URL of a test server of ``engine`` (``mysql``, ``redis``, ``etcd``, ...).

    The URL in ``STOVEPIPE_TEST_<ENGINE>_URL`` wins. Otherwise the backend's hook in the
    ``stovepipe.storage.test_servers`` entry-point group starts a throwaway server, once per
    session, stopped when the run ends. When neither gives a server the current test is
    skipped (failed under ``CI``) with the hook's reason, which names what to install, and
    the run ends with one line listing every engine that could not run.
    """
    if url := os.environ.get(url_variable(engine)):
        return url
    servers = config.stash.setdefault(_SERVERS, _Servers())
    if engine not in servers.urls and engine not in servers.missing:
        hooks = importlib.metadata.entry_points(group=TEST_SERVERS_GROUP, name=engine)
        if not hooks:
            servers.missing[engine] = (
                f"set {url_variable(engine)}: no installed backend starts a {engine} test server"
            )
        else:
            start: Callable[[], contextlib.AbstractContextManager[str]] = next(iter(hooks)).load()
            try:
                servers.urls[engine] = servers.stack.enter_context(start())
            except Exception as error:  # the hook says what to install
                servers.missing[engine] = f"{error} (or set {url_variable(engine)})"
    if engine in servers.missing:
        unreachable(f"no {engine} test server: {servers.missing[engine]}")
    return servers.urls[engine]


def storage_targets(config: pytest.Config) -> list[str]:
    """The storage URLs given, else the embedded backends and every discoverable server."""
    given: list[str] = config.getoption("storage_url")
    if given:
        return given
    from stovepipe.storage import installed_schemes

    hooks = {ep.name for ep in importlib.metadata.entry_points(group=TEST_SERVERS_GROUP)}
    network = [
        scheme
        for scheme in installed_schemes()
        if scheme not in EMBEDDED_TARGETS
        and (scheme in hooks or url_variable(scheme) in os.environ)
    ]
    return [*EMBEDDED_TARGETS, *network]


def messaging_targets(config: pytest.Config) -> list[str]:
    """The messaging URLs given (``--messaging-url``, or the deprecated ``--queue-url``),
    else the embedded ones and the network servers."""
    given: list[str] = [*config.getoption("messaging_url"), *config.getoption("queue_url")]
    return given or [*EMBEDDED_TARGETS, *MESSAGING_NETWORK_TARGETS]


def resolve_storage_url(config: pytest.Config, target: str, scratch: pathlib.Path) -> str:
    """The URL of a storage target: as given, embedded, or a test server's."""
    if is_explicit(target):
        return target
    if target == "memory":
        return "memory://"
    if target == "sqlite":
        return f"sqlite:///{scratch}/contract.db"
    return server_url(config, target)


def resolve_messaging_url(config: pytest.Config, target: str, scratch: pathlib.Path) -> str:
    """The URL of a messaging target, opened once so a missing server or driver says so."""
    from stovepipe.messaging.registry import open_messaging

    if is_explicit(target):
        url = target
    elif target == "memory":
        url = "memory://"
    elif target == "sqlite":
        url = f"sqlite:///{scratch}/queue.db"
    else:
        url = server_url(config, target)
    try:
        open_messaging(url).stop()
    except Exception as error:
        unreachable(
            f"cannot open the {target_id(url)} queue at {url}: {error!r}",
            explicit=is_explicit(target),
        )
    return url


def messaging_capabilities(url: str) -> frozenset[str]:
    """What the messaging implementation at ``url`` declares it is (its ``capabilities``
    attribute, as a storage backend declares them; durable and shared when it declares
    none). Opens it, without starting it, and stops it again."""
    from stovepipe.messaging.registry import open_messaging
    from stovepipe.storage.contract import DEFAULT_CAPABILITIES

    messaging = open_messaging(url)
    try:
        declared = getattr(messaging, "capabilities", DEFAULT_CAPABILITIES)
        return frozenset(str(capability) for capability in declared)
    finally:
        messaging.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line naming every engine whose tests could not run, and what to install."""
    servers = terminalreporter.config.stash.get(_SERVERS, None)
    if servers is not None and servers.missing:
        # One line: of a long reason (a server's log) only its first line.
        listed = "; ".join(
            f"{engine}: {why.splitlines()[0]}" for engine, why in sorted(servers.missing.items())
        )
        verdict = "failed (CI is set)" if in_ci() else "skipped"
        terminalreporter.write_line(
            f"stovepipe: the tests of {', '.join(sorted(servers.missing))} {verdict}, "
            f"no test server: {listed}",
            red=in_ci(),
            yellow=not in_ci(),
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    servers = session.config.stash.get(_SERVERS, None)
    if servers is None:
        return
    servers.stack.close()
    if servers.missing and in_ci() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted: dict[str, Callable[[], list[str]]] = {
        "storage_target": lambda: storage_targets(metafunc.config),
        "messaging_target": lambda: messaging_targets(metafunc.config),
        # Every target: the fixture skips those that do not declare what the tests need.
        "durable_messaging_target": lambda: messaging_targets(metafunc.config),
    }
    for fixture, targets_of in wanted.items():
        if fixture in metafunc.fixturenames:
            targets = targets_of()
            metafunc.parametrize(
                fixture, targets, ids=[target_id(t) for t in targets], scope="session"
            )


_DIRECTORIES = pytest.StashKey[list[pathlib.Path]]()
_HUNG = pytest.StashKey[dict[str, str]]()
"""Per target that a test hung on: that test's node id."""
TARGET_FIXTURES = ("storage_target", "messaging_target", "durable_messaging_target")


def _target_of(item: pytest.Item) -> str | None:
    """The backend target a suite test runs against, ``None`` for any other test."""
    params: dict[str, object] = getattr(getattr(item, "callspec", None), "params", {})
    for name in TARGET_FIXTURES:
        if name in params:
            return str(params[name])
    return None


def _suite_directories() -> list[pathlib.Path]:
    directories: list[pathlib.Path] = []
    for package in SUITE_PACKAGES:
        with contextlib.suppress(ImportError):
            directories.extend(
                pathlib.Path(path).resolve() for path in importlib.import_module(package).__path__
            )
    return directories


def _limit(item: pytest.Item) -> float:
    """The item's time limit in seconds, 0 for none: only the suites' tests have one."""
    seconds: float = item.config.getoption("conformance_timeout")
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return 0.0
    if not hasattr(signal, "SIGALRM"):  # the alarm is POSIX only
        return 0.0
    directories = item.config.stash.setdefault(_DIRECTORIES, _suite_directories())
    path = item.path.resolve()
    return seconds if any(path.is_relative_to(d) for d in directories) else 0.0


def _generating(frame: FrameType | None) -> bool:
    """True when ``frame`` runs under hypothesis: a property-based test makes many calls, and
    running out of time there (shrinking a failure, say) is slowness, not a hung backend."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("hypothesis."):
            return True
        frame = frame.f_back
    return False


def _stacks() -> str:
    """The stack of every thread, where a hang shows where it waits."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
    )


@contextlib.contextmanager
def _time_limit(item: pytest.Item, phase: str) -> Generator[None]:
    seconds = _limit(item)
    if not seconds:
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        target = _target_of(item)
        if target is not None and not _generating(frame):
            item.config.stash.setdefault(_HUNG, {}).setdefault(target, item.nodeid)
        pytest.fail(
            f"{phase} took longer than the limit of {seconds:g} s (--conformance-timeout); "
            f"every thread's stack:\n{_stacks()}",
            pytrace=False,
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None]:
    target = _target_of(item)
    hung = item.config.stash.get(_HUNG, {})
    if target is not None and target in hung:
        # Its calls would most likely hang as well: fail at once, so that a backend that
        # hangs costs the run one time limit, not one per test.
        pytest.fail(
            f"not run: {hung[target]} hung past the time limit against the same "
            f"{target_id(target)} target",
            pytrace=False,
        )
    with _time_limit(item, "setup"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    with _time_limit(item, "the test"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None]:
    with _time_limit(item, "teardown"):
        return (yield)
