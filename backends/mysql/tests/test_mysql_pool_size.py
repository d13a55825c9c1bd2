"""The storage's connection pool is sized from the server's worker count by default."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from stovepipe_mysql.backend import MySQLBackend
from stovepipe_mysql.options import DEFAULT_POOL_SIZE, parse_url

from stovepipe import config as configuration
from stovepipe import server
from stovepipe.storage import open_storage


def test_mysql_pool_size_defaults_to_the_workers_unless_the_url_sets_it() -> None:
    url = "mysql://u@db.example/stove"
    assert parse_url(url).pool_size == DEFAULT_POOL_SIZE
    assert parse_url(url, workers=32).pool_size == 32
    assert parse_url(f"{url}?pool_size=3", workers=32).pool_size == 3


def test_mysql_pool_size_of_open_storage_follows_workers(url_with: Callable[..., str]) -> None:
    with open_storage(url_with(timeout=2), workers=24) as storage:
        backend = storage._backend
        assert isinstance(backend, MySQLBackend)
        assert backend.options.pool_size == 24


def test_mysql_pool_size_of_a_server_is_its_max_workers(
    url_with: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "stovepipe.toml"
    path.write_text(
        f"storage_url = {json.dumps(url_with(timeout=2))}\n"
        'queue_url = "memory://"\nlisten = "127.0.0.1:0"\nmax_workers = 17\n'
        '[queues."demo/main"]\ntype = "fake"\ncommits = ["c1"]\n'
    )
    config = configuration.load(path, environ={})
    built = server.build_server(config)
    try:
        backend = built.storage._backend
        assert isinstance(backend, MySQLBackend)
        assert backend.options.pool_size == 17
    finally:
        built.stop(grace=0)
