"""Stovepipe's MySQL and MariaDB storage backend: ``mysql://user:password@host:port/database``.

Installing this distribution registers the ``mysql`` scheme with
:func:`stovepipe.storage.open_storage`. URL options are described in
:mod:`stovepipe_mysql.options`, behaviour and retries in :mod:`stovepipe_mysql.backend`.
"""

from stovepipe_mysql.backend import MySQLBackend, open_backend
from stovepipe_mysql.migrations import migrate

__all__ = ["MySQLBackend", "migrate", "open_backend"]
