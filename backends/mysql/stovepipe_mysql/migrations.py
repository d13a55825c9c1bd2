"""Apply the schema: every ``schema/*.sql`` file, in name order, exactly as it stands: the
storage's tables and the messaging queue's (``0003_messaging.sql``).

Each file is sent whole as one multi-statement batch, as ``mysql DATABASE < file.sql``
would run it, so what a DBA reviews is byte for byte what runs. Every file runs on every
migration and every statement in them is idempotent (``CREATE TABLE IF NOT EXISTS``; a column
is added only if ``information_schema`` lacks it, under a named lock), so migrating again, or
from several processes at once, is harmless, and a database made by earlier files is upgraded
in place.
"""

from __future__ import annotations

import importlib.resources
from typing import Final

import pymysql
from pymysql.constants import CLIENT

from stovepipe.storage.errors import StorageError
from stovepipe_mysql.backend import connect_failure
from stovepipe_mysql.options import MySQLOptions, parse_url


def schema_files() -> list[tuple[str, str]]:
    """``(name, SQL text)`` of every schema file, in the order they are applied."""
    directory = importlib.resources.files("stovepipe_mysql.schema")
    files = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [(entry.name, entry.read_text(encoding="utf-8")) for entry in files]


MESSAGING_SCHEMA: Final = "0003_messaging.sql"
"""The file of the messaging queue's tables (``stovepipe_mysql.messaging``)."""


def migrate_options(options: MySQLOptions, only: str | None = None) -> None:
    """Apply the schema to the database ``options`` name: every file, or the one named
    ``only``."""
    arguments = options.connect_arguments()
    arguments["client_flag"] |= CLIENT.MULTI_STATEMENTS
    try:
        connection = pymysql.connect(**arguments)
    except Exception as error:  # not only pymysql.Error: see connect_failure
        raise connect_failure(error, options.address) from error
    try:
        with connection.cursor() as cursor:
            for name, sql in schema_files():
                if only is not None and name != only:
                    continue
                try:
                    cursor.execute(sql)
                    while cursor.nextset():  # a failing later statement raises here
                        pass
                except pymysql.Error as error:
                    raise StorageError(f"mysql {options.address}: {name}: {error}") from error
    finally:
        connection.close()


def migrate(url: str) -> None:
    """Apply the schema to the database a ``mysql://`` URL names. Idempotent."""
    migrate_options(parse_url(url))
