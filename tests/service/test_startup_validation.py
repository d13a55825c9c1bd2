"""Start-up refuses, in one line and exit status 2, what the service would refuse later: queue
names over the storage limits, git refs that do not exist, a ``sqlite:`` URL whose path is not
what it seems, in-process messaging beside storage that has none of its own, and a messaging
engine that cannot be reached or refuses the credentials."""

from __future__ import annotations

import logging
import pathlib
import urllib.parse
from collections.abc import Callable

import pytest

from stovepipe import cli, config
from stovepipe.server import build_sourcecontrol
from stovepipe.storage import limits
from stovepipe.testing import GitRepository, ServeProcesses, run_cli

FAKE = 'type = "fake"\ncommits = ["c1"]\n'


def write_config(directory: pathlib.Path, text: str) -> pathlib.Path:
    path = directory / "stovepipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_line_exit_2(result_stderr: str, returncode: int) -> str:
    """The single stderr line of a configuration error, checked to be exactly that."""
    assert returncode == cli.EXIT_USAGE, result_stderr
    lines = result_stderr.splitlines()
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("stovepipe: ")
    return lines[0]


def test_a_queue_name_over_the_storage_limit_is_refused_at_start(tmp_path: pathlib.Path) -> None:
    longest = "q" * limits.MAX_QUEUE_BYTES
    too_long = "é" * (limits.MAX_QUEUE_BYTES // 2 + 1)  # 101 characters, 202 bytes
    accepted = write_config(tmp_path, f'[queues."{longest}"]\n{FAKE}')
    assert list(config.load(accepted, environ={}, cwd=tmp_path).queues) == [longest]
    refused = write_config(tmp_path, f'[queues."{too_long}"]\n{FAKE}')
    with pytest.raises(config.ConfigError, match="202 bytes in UTF-8; the limit is 200 bytes"):
        config.load(refused, environ={}, cwd=tmp_path)
    result = run_cli("serve", "--listen", "127.0.0.1:0", "--config", str(refused), cwd=tmp_path)
    line = one_line_exit_2(result.stderr, result.returncode)
    assert "the limit is 200 bytes" in line


def test_a_git_queue_whose_ref_does_not_exist_is_refused_at_start(
    git_repository: Callable[..., GitRepository], tmp_path: pathlib.Path
) -> None:
    repo = git_repository("webapp")
    repo.commit()
    file = write_config(
        tmp_path, f'[queues."webapp/mian"]\ntype = "git"\npath = "{repo.path}"\nref = "mian"\n'
    )
    with pytest.raises(config.ConfigError, match="queue 'webapp/mian': ref 'mian' does not exist"):
        build_sourcecontrol(config.load(file, environ={}, cwd=tmp_path).queues)
    for command in ("serve", "worker"):
        result = run_cli(command, "--config", str(file), cwd=tmp_path)
        line = one_line_exit_2(result.stderr, result.returncode)
        assert f"ref 'mian' does not exist in {repo.path}" in line


def test_a_git_queue_on_a_branch_without_commits_starts_with_a_warning(
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = git_repository("fresh")  # git init: HEAD is on main, which has no commit yet
    file = write_config(
        tmp_path, f'[queues."fresh/main"]\ntype = "git"\npath = "{repo.path}"\nref = "main"\n'
    )
    with caplog.at_level(logging.WARNING, logger="stovepipe"):
        sources = build_sourcecontrol(config.load(file, environ={}, cwd=tmp_path).queues)
    assert list(sources.queues()) == ["fresh/main"]
    assert "'fresh/main': branch 'main' has no commits yet" in caplog.text
    # Another branch that does not exist is no branch without commits: it is refused.
    other = write_config(
        tmp_path, f'[queues."fresh/dev"]\ntype = "git"\npath = "{repo.path}"\nref = "dev"\n'
    )
    with pytest.raises(config.ConfigError, match="ref 'dev' does not exist"):
        build_sourcecontrol(config.load(other, environ={}, cwd=tmp_path).queues)


def test_serve_starts_on_a_branch_without_commits_and_logs_the_warning(
    git_repository: Callable[..., GitRepository],
    processes: ServeProcesses,
    tmp_path: pathlib.Path,
) -> None:
    repo = git_repository("fresh")  # no configuration: serves the branch checked out, unborn
    served = processes.serve(["--storage-url", f"sqlite:///{tmp_path / 's.db'}"], cwd=repo.path)
    assert served.stop() == 0
    assert "'fresh/main': branch 'main' has no commits yet" in served.output()


def test_a_sqlite_url_without_the_double_slash_is_refused_and_writes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    file = write_config(tmp_path, f'[queues."demo/main"]\n{FAKE}')
    absolute = tmp_path / "state.db"
    misleading = f"sqlite:{absolute}"  # sqlite:/tmp/.../state.db
    result = run_cli(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        str(file),
        "--storage-url",
        misleading,
        cwd=tmp_path,
    )
    line = one_line_exit_2(result.stderr, result.returncode)
    assert "sqlite:////absolute/path.db" in line
    assert not absolute.exists()
    assert not (tmp_path / absolute.relative_to("/")).exists()  # nor ./tmp/.../state.db
    assert not (tmp_path / str(absolute).lstrip("/").split("/")[0]).exists()


def test_etcd_storage_with_in_process_messaging_is_refused_naming_the_durable_engines(
    tmp_path: pathlib.Path,
) -> None:
    file = write_config(tmp_path, f'[queues."demo/main"]\n{FAKE}')
    # etcd connects lazily: the check comes before any call reaches a server.
    storage = ["--storage-url", "etcd://127.0.0.1:1?timeout=1"]
    for command, extra in (
        ("serve", ["--listen", "127.0.0.1:0"]),
        ("serve", ["--listen", "127.0.0.1:0", "--messaging-url", "memory://"]),
        ("worker", []),
    ):
        result = run_cli(command, "--config", str(file), *storage, *extra, cwd=tmp_path)
        line = one_line_exit_2(result.stderr, result.returncode)
        assert "etcd storage needs a durable messaging queue" in line
        assert "sqlite:///PATH, mysql://... or redis://..." in line


def refusing_messaging_urls(server_url: Callable[[str], str]) -> dict[str, tuple[str, str]]:
    """Messaging URLs that cannot be used, each with the secret it holds."""
    redis = urllib.parse.urlsplit(server_url("redis"))
    mysql = urllib.parse.urlsplit(server_url("mysql"))
    secret = "Wr0ng-s3cret-x"
    return {
        "unreachable": ("redis://:closed-p0rt-pw@127.0.0.1:1/0?timeout=2", "closed-p0rt-pw"),
        "redis credentials": (f"redis://nobody:{secret}@{redis.netloc}{redis.path}", secret),
        "mysql credentials": (
            f"mysql://nobody:{secret}@{mysql.hostname}:{mysql.port or 3306}{mysql.path}",
            secret,
        ),
    }


@pytest.mark.parametrize("case", ["unreachable", "redis credentials", "mysql credentials"])
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_messaging_engine_that_cannot_be_reached_or_refuses_stops_start_up_with_one_line(
    case: str, command: str, server_url: Callable[[str], str], tmp_path: pathlib.Path
) -> None:
    url, secret = refusing_messaging_urls(server_url)[case]
    file = write_config(tmp_path, f'[queues."demo/main"]\n{FAKE}')
    storage = f"sqlite:///{tmp_path / 'state.db'}"
    listen = ["--listen", "127.0.0.1:0"] if command == "serve" else []
    result = run_cli(
        command,
        "--config",
        str(file),
        "--storage-url",
        storage,
        "--messaging-url",
        url,
        *listen,
        cwd=tmp_path,
        timeout=60,
    )
    line = one_line_exit_2(result.stderr, result.returncode)
    assert line.startswith("stovepipe: messaging queue")
    assert secret not in result.stderr


@pytest.mark.parametrize("text", ["", "\n\n", "# the poller's token goes here\n  # none yet\n"])
def test_a_tokens_file_without_tokens_is_refused_at_start_not_read_as_no_authentication(
    text: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "tokens").write_text(text, encoding="utf-8")
    file = write_config(tmp_path, f'tokens_file = "tokens"\n[queues.q]\n{FAKE}')
    with pytest.raises(config.ConfigError, match="holds no token"):
        config.load(file, environ={}, cwd=tmp_path)
    result = run_cli("serve", "--listen", "127.0.0.1:0", "--config", str(file), cwd=tmp_path)
    line = one_line_exit_2(result.stderr, result.returncode)
    assert "tokens_file" in line and "holds no token" in line


@pytest.mark.parametrize("value", ["", " ", ";;", "# none\n"])
def test_a_tokens_variable_set_without_tokens_is_refused_at_start(
    value: str, tmp_path: pathlib.Path
) -> None:
    file = write_config(tmp_path, f"[queues.q]\n{FAKE}")
    with pytest.raises(config.ConfigError, match="STOVEPIPE_TOKENS is set but holds no token"):
        config.load(file, environ={"STOVEPIPE_TOKENS": value}, cwd=tmp_path)
    assert config.load(file, environ={}, cwd=tmp_path).tokens == ()


def test_a_tls_option_on_a_plain_redis_url_is_refused_at_start(tmp_path: pathlib.Path) -> None:
    url = "redis://:pw-for-redis@127.0.0.1:6379/0?ssl_password=x"
    file = write_config(tmp_path, f'storage_url = "{url}"\n[queues.q]\n{FAKE}')
    result = run_cli("serve", "--listen", "127.0.0.1:0", "--config", str(file), cwd=tmp_path)
    line = one_line_exit_2(result.stderr, result.returncode)
    assert "ssl_password is a TLS option: use rediss://" in line
    assert "pw-for-redis" not in line
