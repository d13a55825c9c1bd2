"""The settings of serving under faults (shutdown_delay, bulkhead_size, breaker_*) and of
Ingest's hot path (ingest_cache_size, republish_interval)."""

from __future__ import annotations

import pathlib

import pytest

from stovepipe import config


def load(tmp_path: pathlib.Path, text: str = "", **environ: str) -> config.Config:
    path = tmp_path / "stovepipe.toml"
    path.write_text(text + '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n', encoding="utf-8")
    return config.load(path, environ=environ, cwd=tmp_path)


def test_serving_settings_defaults_leave_a_third_of_the_workers_free(
    tmp_path: pathlib.Path,
) -> None:
    loaded = load(tmp_path, "max_workers = 12\n")
    assert loaded.shutdown_delay == config.DEFAULT_SHUTDOWN_DELAY > 0
    assert loaded.bulkhead_size == 4
    assert loaded.breaker_failures == config.DEFAULT_BREAKER_FAILURES
    assert loaded.breaker_reset == config.DEFAULT_BREAKER_RESET


def test_serving_settings_from_file_environment_and_flag(tmp_path: pathlib.Path) -> None:
    text = "shutdown_delay = 4\nbulkhead_size = 0\nbreaker_failures = 0\nbreaker_reset = 2.5\n"
    from_file = load(tmp_path, text)
    assert (from_file.shutdown_delay, from_file.bulkhead_size) == (4.0, 0)  # 0: off
    assert (from_file.breaker_failures, from_file.breaker_reset) == (0, 2.5)
    from_env = load(tmp_path, text, STOVEPIPE_SHUTDOWN_DELAY="0", STOVEPIPE_BULKHEAD_SIZE="3")
    assert (from_env.shutdown_delay, from_env.bulkhead_size) == (0.0, 3)
    path = tmp_path / "stovepipe.toml"
    from_flag = config.load(path, environ={}, overrides={"shutdown_delay": "1.5"}, cwd=tmp_path)
    assert from_flag.shutdown_delay == 1.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_workers = 8\nbulkhead_size = 8\n", "bulkhead_size must be below max_workers"),
        ("bulkhead_size = -1\n", "bulkhead_size must be a non-negative int"),
        ("breaker_reset = 0\n", "breaker_reset must be a number of seconds above 0"),
        ("shutdown_delay = -1\n", "shutdown_delay must be a non-negative float"),
        ("shutdown_delay = 7200\n", "shutdown_delay must be at most 3600 seconds"),
        ("breaker_failures = 'often'\n", "breaker_failures must be a non-negative int"),
    ],
)
def test_serving_settings_out_of_range_are_refused_with_the_reason(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, text)


def test_serving_settings_a_single_worker_has_no_bulkhead_by_default(
    tmp_path: pathlib.Path,
) -> None:
    assert load(tmp_path, "max_workers = 1\n").bulkhead_size == 0
    assert load(tmp_path, "max_workers = 2\n").bulkhead_size == 1


def test_ingest_settings_default_and_reach_the_ingest_controller(tmp_path: pathlib.Path) -> None:
    from stovepipe.controller.ingest import DEFAULT_CACHE_SIZE, DEFAULT_REPUBLISH_INTERVAL
    from stovepipe.server import build_server

    defaults = load(tmp_path)
    assert (defaults.ingest_cache_size, defaults.republish_interval) == (
        DEFAULT_CACHE_SIZE,
        DEFAULT_REPUBLISH_INTERVAL,
    )
    text = f'storage_url = "sqlite:///{tmp_path}/s.db"\nlisten = "127.0.0.1:0"\n'
    text += "ingest_cache_size = 16\nrepublish_interval = 2.5\n"
    from_file = load(tmp_path, text)
    server = build_server(from_file)
    try:
        assert server.ingest.cache_size == 16
        assert server.ingest.republish_interval == 2.5
    finally:
        server.stop(grace=0)
    from_env = load(tmp_path, STOVEPIPE_INGEST_CACHE_SIZE="1", STOVEPIPE_REPUBLISH_INTERVAL="0")
    assert (from_env.ingest_cache_size, from_env.republish_interval) == (1, 0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest_cache_size = 0\n", "ingest_cache_size must be at least 1"),
        ("ingest_cache_size = 1.5\n", "ingest_cache_size must be a non-negative int"),
        ("republish_interval = -1\n", "republish_interval must be a non-negative float"),
        ("republish_interval = inf\n", "republish_interval must be a finite number"),
    ],
)
def test_ingest_settings_out_of_range_are_refused_with_the_reason(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, text)
