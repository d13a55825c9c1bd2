"""Schema migration, URL options, entry points and the test-server hook."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from stovepipe_mysql import migrate, open_backend
from stovepipe_mysql.migrations import schema_files
from stovepipe_mysql.options import parse_url
from stovepipe_mysql.throwaway_server import mysql_test_server

from stovepipe.storage import StorageError, open_storage
from stovepipe.testing import run_cli

SCHEMA_DIRECTORY = pathlib.Path(__file__).parents[1] / "schema"


def tables(admin: Any, database: str) -> set[str]:
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,)
        )
        return {row[0] for row in cursor.fetchall()}


def test_migrate_runs_exactly_the_schema_files_a_dba_reviews() -> None:
    shipped = dict(schema_files())
    reviewed = {
        path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIRECTORY.glob("*.sql")
    }
    assert shipped == reviewed
    assert shipped


def test_migrate_creates_the_tables_and_is_idempotent(scratch_database: str, admin: Any) -> None:
    database = parse_url(scratch_database).database
    migrate(scratch_database)
    migrate(scratch_database)
    assert tables(admin, database) == {"request", "request_uri", "counter"}


def test_migrate_command_line_applies_the_schema(scratch_database: str, admin: Any) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "stovepipe_mysql", "migrate", scratch_database],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert tables(admin, parse_url(scratch_database).database) == {
        "request",
        "request_uri",
        "counter",
    }


def test_migrate_entry_point_names_the_migrate_callable() -> None:
    (entry_point,) = importlib.metadata.entry_points(
        group="stovepipe.storage.migrations", name="mysql"
    )
    assert entry_point.load() is migrate


def test_open_does_not_apply_the_schema_unless_asked_and_says_how(scratch_database: str) -> None:
    with pytest.raises(StorageError, match=r"stovepipe migrate URL"):
        open_storage(scratch_database)


def test_open_of_a_partly_migrated_database_fails_naming_the_missing_table(
    scratch_database: str, admin: Any
) -> None:
    migrate(scratch_database)
    database = parse_url(scratch_database).database
    with admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE {database}.counter")
    with pytest.raises(StorageError, match=r"counter.*stovepipe migrate URL"):
        open_storage(scratch_database)


def test_serve_on_a_database_without_the_schema_stops_at_start_up_with_one_line(
    scratch_database: str, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "s.toml"
    config.write_text('[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n', encoding="utf-8")
    completed = run_cli(
        "serve",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--storage-url",
        scratch_database,
    )
    assert completed.returncode == 2
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"stovepipe: storage {scratch_database}: ")
    assert "stovepipe migrate URL" in line


def test_open_with_migrate_true_applies_the_schema(
    scratch_database: str, url_with: Callable[..., str]
) -> None:
    with open_storage(scratch_database + "?migrate=true") as storage:
        assert storage.counter.next("request/q") == 1


def test_url_options_are_parsed_and_unknown_ones_rejected() -> None:
    options = parse_url(
        "mysql://us%40er:p%3Ass@db.example:3307/stove?timeout=0.5&pool_size=3&migrate=true"
    )
    assert (options.user, options.password, options.host, options.port) == (
        "us@er",
        "p:ss",
        "db.example",
        3307,
    )
    assert (options.database, options.timeout, options.pool_size, options.migrate) == (
        "stove",
        0.5,
        3,
        True,
    )
    assert options.ssl_context() is None
    for bad in (
        "mysql://h/db?colour=blue",
        "mysql://h/db?timeout=0",
        "mysql://h/db?pool_size=0",
        "mysql://h/db?ssl_verify=maybe",
        "mysql://h/db?ssl_key=client.key",
        "mysql://h/",
        "mysql:///db",
    ):
        with pytest.raises(ValueError):
            open_backend(bad)


def test_ssl_verify_checks_certificate_and_host_name_unless_turned_off() -> None:
    import ssl

    verified = parse_url("mysql://h/db?ssl_verify=true").ssl_context()
    assert verified is not None
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    unverified = parse_url("mysql://h/db?ssl_verify=false").ssl_context()
    assert unverified is not None
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname


def test_test_server_hook_yields_a_migrated_mysql_8_or_explains_why_it_cannot() -> None:
    if os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock"):
        with mysql_test_server() as url, open_storage(url) as storage:
            assert storage.counter.next("request/q") == 1
    else:
        # Without testcontainers installed the hook names the extra to install instead.
        with pytest.raises(RuntimeError, match=r"Docker|testcontainers"), mysql_test_server():
            pass
