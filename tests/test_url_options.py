"""One URL-options parser for every storage backend and messaging implementation: the same
rules, checked here for every scheme through the public openers, before any server is
reached."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Callable

import pytest

from stovepipe import cli
from stovepipe.messaging.registry import open_messaging
from stovepipe.storage import open_storage
from stovepipe.testing import run_cli
from stovepipe.urloptions import URLOptionError, URLOptions

# Every URL names a closed port: a parser that let a bad option through would fail
# differently (unreachable), never pass.
STORAGE_URLS = {
    "sqlite": "sqlite:///never.db",
    "mysql": "mysql://u:pw-9@127.0.0.1:1/db",
    "redis": "redis://:pw-9@127.0.0.1:1/0",
    "rediss": "rediss://:pw-9@127.0.0.1:1/0",
    "etcd": "etcd://u:pw-9@127.0.0.1:1",
}
MESSAGING_URLS = {
    "memory": "memory://",
    "sqlite": "sqlite:///never.db",
    "mysql": "mysql://u:pw-9@127.0.0.1:1/db",
    "redis": "redis://:pw-9@127.0.0.1:1/0",
    "rediss": "rediss://:pw-9@127.0.0.1:1/0",
}
# The seconds option each checks; the in-process queue has no timeout, so its backoff.
MESSAGING_SECONDS = {"memory": "backoff"}

Opener = Callable[[str], object]
CASES = [
    *[(f"storage {s}", url, "timeout", open_storage) for s, url in STORAGE_URLS.items()],
    *[
        (f"messaging {s}", url, MESSAGING_SECONDS.get(s, "timeout"), open_messaging)
        for s, url in MESSAGING_URLS.items()
    ],
]
IDS = [case[0] for case in CASES]


def with_query(url: str, query: str) -> str:
    return f"{url}?{query}"


def refused(opener: Opener, url: str) -> str:
    """The one-line message ``opener`` refuses ``url`` with."""
    with pytest.raises(ValueError) as raised:
        opener(url)
    message = str(raised.value)
    assert "\n" not in message
    assert "pw-9" not in message  # the URL is redacted
    return message


@pytest.mark.parametrize(("name", "url", "seconds", "opener"), CASES, ids=IDS)
def test_a_repeated_option_is_refused_for_every_scheme(
    name: str, url: str, seconds: str, opener: Opener
) -> None:
    message = refused(opener, with_query(url, f"{seconds}=1&{seconds}=2"))
    assert f"option {seconds} is given more than once" in message


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "-inf", "1e999", "soon", ""])
@pytest.mark.parametrize(("name", "url", "seconds", "opener"), CASES, ids=IDS)
def test_a_timeout_that_is_not_finite_or_not_positive_is_refused_for_every_scheme(
    name: str, url: str, seconds: str, opener: Opener, value: str
) -> None:
    message = refused(opener, with_query(url, f"{seconds}={value}"))
    assert f"option {seconds} must be a finite number" in message
    assert repr(value) in message


@pytest.mark.parametrize(("name", "url", "seconds", "opener"), CASES, ids=IDS)
def test_an_unknown_option_is_refused_naming_the_known_ones_for_every_scheme(
    name: str, url: str, seconds: str, opener: Opener
) -> None:
    message = refused(opener, with_query(url, "colour=red"))
    assert "unknown option(s) colour; known: " in message
    assert seconds in message.split("known: ", 1)[1]


@pytest.mark.parametrize(("name", "url", "seconds", "opener"), CASES, ids=IDS)
def test_a_query_that_is_not_name_value_pairs_is_refused_for_every_scheme(
    name: str, url: str, seconds: str, opener: Opener
) -> None:
    message = refused(opener, with_query(url, "justaword"))
    assert "the query must be name=value pairs joined by &" in message


def test_integers_are_decimal_digits_only() -> None:
    for text in ("1_0", " 5", "5.0", "0x10", "", "ten"):
        options = URLOptions(f"x://h?n={text}", "x", {"n"})
        with pytest.raises(URLOptionError, match="option n must be an integer of at least 1"):
            options.integer("n", 1, minimum=1)
    assert URLOptions("x://h?n=07", "x", {"n"}).integer("n", 1, minimum=1) == 7
    assert URLOptions("x://h", "x", {"n"}).integer("n", 3, minimum=1) == 3


def test_numbers_are_finite_decimals_within_their_bounds() -> None:
    assert URLOptions("x://h?t=.5", "x", {"t"}).seconds("t", 5.0) == 0.5
    assert URLOptions("x://h?t=2e1", "x", {"t"}).seconds("t", 5.0) == 20.0
    for text in ("0", "-0", "1_0", " 1", "Infinity", "NaN"):
        with pytest.raises(URLOptionError, match="above 0"):
            URLOptions(f"x://h?t={text}", "x", {"t"}).seconds("t", 5.0)
    with pytest.raises(URLOptionError, match="at most 10"):
        URLOptions("x://h?t=11", "x", {"t"}).seconds("t", 5.0, maximum=10)
    with pytest.raises(URLOptionError, match=r"a finite number of at least 0, not '-0\.5'"):
        URLOptions("x://h?b=-0.5", "x", {"b"}).number("b", 0.1, minimum=0.0)


def test_booleans_are_true_or_false_words_only() -> None:
    for text, value in (("true", True), ("YES", True), ("1", True), ("False", False), ("0", False)):
        assert URLOptions(f"x://h?b={text}", "x", {"b"}).boolean("b", not value) is value
    with pytest.raises(URLOptionError, match="must be true or false, not 'maybe'"):
        URLOptions("x://h?b=maybe", "x", {"b"}).boolean("b", False)


def test_the_value_of_a_secret_option_never_appears_in_an_error() -> None:
    url = "x://u:pw-9@h?ssl_password=hunter2-x&ssl_password=hunter2-y"
    with pytest.raises(URLOptionError) as raised:
        URLOptions(url, "x", {"ssl_password"})
    assert "hunter2" not in str(raised.value) and "pw-9" not in str(raised.value)
    options = URLOptions("x://h?ssl_password=hunter2-x", "x", {"ssl_password"})
    with pytest.raises(URLOptionError) as raised:
        options.boolean("ssl_password", False)
    assert "hunter2" not in str(raised.value)


def cli_refusal(directory: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = directory / "stovepipe.toml"
    config.write_text('[queues."demo/main"]\ntype = "fake"\ncommits = ["c1"]\n')
    common = ["--listen", "127.0.0.1:0", "--config", str(config)]
    return run_cli("serve", *common, *args, cwd=directory)


@pytest.mark.parametrize(
    ("flag", "url", "expected"),
    [
        ("--storage-url", "mysql://u:pw-9@127.0.0.1:1/db?timeout=nan", "must be a finite number"),
        ("--storage-url", "redis://:pw-9@[::1/0", "Invalid IPv6 URL"),
        ("--storage-url", "etcd://u:pw-9@h:port", "invalid port"),
        ("--messaging-url", "redis://:pw-9@127.0.0.1:1/0?timeout=-1", "above 0"),
        ("--messaging-url", "sqlite:///q.db?timeout=1&timeout=1", "more than once"),
    ],
)
def test_a_malformed_url_given_to_serve_is_one_line_and_exit_status_2(
    flag: str, url: str, expected: str, tmp_path: pathlib.Path
) -> None:
    result = cli_refusal(tmp_path, flag, url)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "pw-9" not in lines[0]


@pytest.mark.parametrize(
    "url", ["mysql://u:pw-9@[::1/db", "mysql://u:pw-9@127.0.0.1:1/db?timeout=inf&pool_size=2"]
)
def test_a_malformed_url_given_to_migrate_is_one_line_and_exit_status_2(url: str) -> None:
    result = run_cli("migrate", url)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("stovepipe: ") and "pw-9" not in line
