"""``python -m stovepipe_mysql migrate URL``: apply the schema to a MySQL database."""

from __future__ import annotations

import argparse
import sys

from stovepipe.storage.errors import StorageError
from stovepipe_mysql.migrations import migrate


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stovepipe_mysql")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_command = commands.add_parser(
        "migrate", help="apply schema/*.sql to the database (idempotent)"
    )
    migrate_command.add_argument("url", help="mysql://user:password@host:port/database")
    arguments = parser.parse_args(argv)
    try:
        migrate(arguments.url)
    except (StorageError, ValueError) as error:
        print(f"migrate failed: {error}", file=sys.stderr)
        return 1
    print("schema applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
