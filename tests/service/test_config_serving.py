"""The settings of serving under faults: shutdown_delay, bulkhead_size, breaker_*."""

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
