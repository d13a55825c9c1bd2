"""Schema migration, URL options, entry points and the test-server hook."""

from __future__ import annotations

import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from stovepipe_mysql import migrate, open_backend
from stovepipe_mysql.migrations import schema_files
from stovepipe_mysql.options import parse_url
from stovepipe_mysql.throwaway_server import mysql_test_server

from stovepipe.conformance.plugin import unreachable
from stovepipe.conformance.servers import ServerUnavailable, find_binary
from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.storage import StorageError, open_storage
from stovepipe.testing import run_cli

SCHEMA_DIRECTORY = pathlib.Path(__file__).parents[1] / "schema"
# The storage's tables and the messaging queue's (0003_messaging.sql).
TABLES = {
    "request",
    "request_uri",
    "counter",
    "queue",
    "build",
    "fact",
    "stovepipe_queue_message",
    "stovepipe_queue_dead_letter",
    "stovepipe_queue_key_lease",
}


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
    assert tables(admin, database) == TABLES


def columns(admin: Any, database: str, table: str) -> list[str]:
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        return [row[0] for row in cursor.fetchall()]


def insert_rows_as_version_0001_does(url: str) -> None:
    """Rows of every 0001 table, written with the statements of the version before 0002."""
    connection = pymysql.connect(**parse_url(url).connect_arguments())
    try:
        with connection.cursor() as cursor:
            for n in (1, 2):
                cursor.execute(
                    "INSERT INTO request (id, queue, uri, state, version)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (f"request/q/{n}".encode(), b"q", f"git://r/{n}".encode(), b"accepted", n),
                )
                cursor.execute(
                    "INSERT INTO request_uri (queue, uri, request_id) VALUES (%s, %s, %s)",
                    (b"q", f"git://r/{n}".encode(), f"request/q/{n}".encode()),
                )
            cursor.execute(
                "INSERT INTO counter (domain, `value`) VALUES (%s, %s)", (b"request/q", 2)
            )
    finally:
        connection.close()


def test_open_of_a_database_made_by_0001_alone_fails_naming_stovepipe_migrate(
    database_of_0001: str,
) -> None:
    with pytest.raises(StorageError, match=r"stovepipe migrate URL"):
        open_storage(database_of_0001)


def test_stovepipe_migrate_upgrades_a_database_made_by_0001_in_place_keeping_its_rows(
    database_of_0001: str, admin: Any
) -> None:
    insert_rows_as_version_0001_does(database_of_0001)
    completed = run_cli("migrate", database_of_0001, timeout=60)
    assert completed.returncode == 0, completed.stderr
    database = parse_url(database_of_0001).database
    assert tables(admin, database) == TABLES
    assert columns(admin, database, "request")[-2:] == ["build_strategy", "base_uri"]
    with open_storage(database_of_0001) as storage:
        for n in (1, 2):
            assert storage.requests.get(f"request/q/{n}") == Request(
                id=f"request/q/{n}",
                queue="q",
                uri=f"git://r/{n}",
                state=RequestState.ACCEPTED,
                version=n,
                build_strategy=BuildStrategy.UNSET,
                base_uri="",
            )
            assert storage.request_uris.get_id_by_uri("q", f"git://r/{n}") == f"request/q/{n}"
        assert storage.counter.next("request/q") == 3
        # The upgraded rows take the new fields, and the new stores work.
        upgraded = Request(
            "request/q/1", "q", "git://r/1", RequestState.PROCESSING, 2, BuildStrategy.FULL, "b"
        )
        storage.requests.update(upgraded, old_version=1, new_version=2)
        assert storage.requests.get("request/q/1") == upgraded
        storage.queues.create(Queue("q", latest_request_id="request/q/2"))
        assert storage.queues.get("q") == Queue("q", latest_request_id="request/q/2")
        storage.builds.create(Build("b/1", "request/q/1", BuildStatus.ACCEPTED, "", 1))
        assert storage.builds.get("b/1").status is BuildStatus.ACCEPTED
        storage.facts.create(Fact("q", "git://r/1", "", 0.0, "request/q/1", 1.5))
        assert storage.facts.get("q", "git://r/1", "").created_at == 1.5


def test_migrate_twice_after_an_upgrade_is_harmless_and_keeps_the_rows(
    database_of_0001: str, admin: Any
) -> None:
    insert_rows_as_version_0001_does(database_of_0001)
    migrate(database_of_0001)
    with open_storage(database_of_0001) as storage:
        written = Request(
            "request/q/2",
            "q",
            "git://r/2",
            RequestState.PROCESSING,
            3,
            BuildStrategy.INCREMENTAL,
            "x",
        )
        storage.requests.update(written, old_version=2, new_version=3)
        storage.facts.create(Fact("q", "u", "p", 1.0, "request/q/2", 2.5))
    migrate(database_of_0001)
    migrate(database_of_0001)
    database = parse_url(database_of_0001).database
    assert columns(admin, database, "request") == [
        "id",
        "queue",
        "uri",
        "state",
        "version",
        "build_strategy",
        "base_uri",
    ]
    with open_storage(database_of_0001) as storage:
        assert storage.requests.get("request/q/2") == written
        assert storage.requests.get("request/q/1").build_strategy is BuildStrategy.UNSET
        assert storage.facts.get("q", "u", "p") == Fact("q", "u", "p", 1.0, "request/q/2", 2.5)


def test_a_version_that_predates_the_new_columns_still_inserts_requests_after_the_upgrade(
    database_of_0001: str,
) -> None:
    # During a rolling upgrade the old version keeps writing with its own statements.
    migrate(database_of_0001)
    insert_rows_as_version_0001_does(database_of_0001)
    with open_storage(database_of_0001) as storage:
        assert storage.requests.get("request/q/1").base_uri == ""


def test_migrations_racing_from_8_connections_upgrade_a_0001_database_once_without_error(
    database_of_0001: str, admin: Any
) -> None:
    # Each ALTER is chosen by looking at information_schema first; without the named lock in
    # the file, racers all see the column missing and all but one fail adding it.
    racers = 8
    barrier = threading.Barrier(racers, timeout=30)
    errors: list[BaseException] = []

    def racer() -> None:
        try:
            barrier.wait()
            migrate(database_of_0001)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    database = parse_url(database_of_0001).database
    assert columns(admin, database, "request")[-2:] == ["build_strategy", "base_uri"]


def test_schema_files_apply_with_the_stock_client_as_ci_and_compose_apply_them(
    scratch_database: str, admin: Any
) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("no mariadb or mysql client on PATH")
    options = parse_url(scratch_database)
    for _ in range(2):
        for path in sorted(SCHEMA_DIRECTORY.glob("*.sql")):
            completed = subprocess.run(
                [
                    client,
                    "--protocol=tcp",
                    f"--host={options.host}",
                    f"--port={options.port}",
                    f"--user={options.user}",
                    *([f"--password={options.password}"] if options.password else []),
                    options.database,
                ],
                stdin=path.open("rb"),
                capture_output=True,
                timeout=60,
            )
            assert completed.returncode == 0, completed.stderr
            assert completed.stdout == b""
    assert tables(admin, options.database) == TABLES
    assert columns(admin, options.database, "request")[-2:] == ["build_strategy", "base_uri"]


def test_migrate_command_line_applies_the_schema(scratch_database: str, admin: Any) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "stovepipe_mysql", "migrate", scratch_database],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert tables(admin, parse_url(scratch_database).database) == TABLES


def test_migrate_entry_point_names_the_migrate_callable() -> None:
    (entry_point,) = importlib.metadata.entry_points(
        group="stovepipe.storage.migrations", name="mysql"
    )
    assert entry_point.load() is migrate


def test_open_does_not_apply_the_schema_unless_asked_and_says_how(scratch_database: str) -> None:
    with pytest.raises(StorageError, match=r"stovepipe migrate URL"):
        open_storage(scratch_database)


def test_open_of_a_database_missing_a_new_column_fails_naming_it_and_stovepipe_migrate(
    scratch_database: str, admin: Any
) -> None:
    migrate(scratch_database)
    database = parse_url(scratch_database).database
    with admin.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {database}.request DROP COLUMN base_uri")
    with pytest.raises(StorageError, match=r"base_uri.*stovepipe migrate URL"):
        open_storage(scratch_database)


@pytest.mark.parametrize("table", ["counter", "queue", "build", "fact"])
def test_open_of_a_partly_migrated_database_fails_naming_the_missing_table(
    scratch_database: str, admin: Any, table: str
) -> None:
    migrate(scratch_database)
    database = parse_url(scratch_database).database
    with admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE {database}.{table}")
    with pytest.raises(StorageError, match=rf"{table}.*stovepipe migrate URL"):
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


def test_test_server_hook_yields_a_migrated_server_from_the_installed_binaries() -> None:
    if find_binary("mariadbd", "mysqld") is None:
        unreachable("no mariadbd or mysqld installed: the hook would fall back to Docker")
    with mysql_test_server() as url, open_storage(url) as storage:
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1"
        assert storage.counter.next("request/q") == 1


def test_test_server_hook_without_binaries_or_docker_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("stovepipe_mysql.throwaway_server.find_binary", lambda *names: None)
    # An import of None raises ImportError: as if testcontainers were not installed.
    monkeypatch.setitem(sys.modules, "testcontainers.community.mysql", None)
    with (
        pytest.raises(ServerUnavailable, match=r"apt-get install mariadb-server"),
        mysql_test_server(),
    ):
        pass


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl_ca={missing}", "ssl_ca="),
        ("ssl_ca={not_pem}", "ssl_ca="),
        ("ssl_cert={missing}&ssl_key={missing}", "ssl_cert="),
    ],
)
def test_tls_option_files_that_cannot_be_read_are_refused_naming_the_option(
    query: str, named: str, tmp_path: pathlib.Path
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n", encoding="utf-8")
    missing = tmp_path / "missing.pem"
    options = parse_url(
        "mysql://u:s3cret@127.0.0.1:1/db?" + query.format(missing=missing, not_pem=not_pem)
    )
    with pytest.raises(ValueError, match=named) as raised:
        options.connect_arguments()
    assert "s3cret" not in str(raised.value)
