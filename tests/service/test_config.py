"""Configuration: file, environment and flags in that precedence, queues, and the
no-configuration default (the git repository in the current directory)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from stovepipe import config
from stovepipe.config import ConfigError, FakeQueue, GitQueue
from stovepipe.server import build_sourcecontrol
from stovepipe.testing import GitRepository

FAKE_QUEUE = '[queues."q"]\ntype = "fake"\ncommits = ["c2", "c1"]\n'


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_override_environment_which_overrides_the_file_which_overrides_defaults(
    tmp_path: pathlib.Path,
) -> None:
    file = write(
        tmp_path / "s.toml",
        'listen = "127.0.0.1:1111"\nstorage_url = "memory://"\ngrace_period = 2.5\n'
        'metrics_listen = "127.0.0.1:3333"\n' + FAKE_QUEUE,
    )
    environ = {"STOVEPIPE_LISTEN": "127.0.0.1:2222", "STOVEPIPE_METRICS_LISTEN": "127.0.0.1:4444"}

    only_file = config.load(file, environ={}, cwd=tmp_path)
    assert (only_file.listen, only_file.metrics_listen) == ("127.0.0.1:1111", "127.0.0.1:3333")
    with_env = config.load(file, environ=environ, cwd=tmp_path)
    assert (with_env.listen, with_env.metrics_listen) == ("127.0.0.1:2222", "127.0.0.1:4444")
    with_flag = config.load(
        file,
        environ=environ,
        overrides={"listen": "127.0.0.1:5555", "metrics_listen": None},
        cwd=tmp_path,
    )
    assert (with_flag.listen, with_flag.metrics_listen) == ("127.0.0.1:5555", "127.0.0.1:4444")
    assert with_flag.grace_period == 2.5
    assert with_flag.max_workers == config.DEFAULT_MAX_WORKERS  # the default


def test_environment_names_the_config_file_and_overrides_numbers(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "s.toml", 'storage_url = "memory://"\n' + FAKE_QUEUE)
    loaded = config.load(
        environ={
            "STOVEPIPE_CONFIG": "s.toml",
            "STOVEPIPE_GRACE_PERIOD": "0.5",
            "STOVEPIPE_MAX_WORKERS": "4",
            "STOVEPIPE_STORAGE_URL": "sqlite:///x.db",
        },
        cwd=tmp_path,
    )
    assert (loaded.grace_period, loaded.max_workers) == (0.5, 4)
    assert loaded.storage_url == "sqlite:///x.db"
    assert loaded.queues == {"q": FakeQueue(commits=("c2", "c1"))}


def test_queues_map_names_to_git_and_fake_sources_with_paths_relative_to_the_file(
    tmp_path: pathlib.Path, git_repository: Callable[..., GitRepository]
) -> None:
    repo = git_repository("mono")
    sha = repo.commit()
    etc = tmp_path / "etc"
    etc.mkdir()
    file = write(
        etc / "s.toml",
        '[queues."mono/main"]\ntype = "git"\npath = "../mono"\nref = "main"\nremote = "origin"\n'
        + FAKE_QUEUE,
    )
    loaded = config.load(file, environ={}, cwd=tmp_path)
    assert loaded.queues["mono/main"] == GitQueue(path=repo.path, ref="main", remote="origin")
    sources = build_sourcecontrol(loaded.queues)
    assert sources.queues() == ["mono/main", "q"]
    assert sources.for_queue("mono/main").latest() == f"git://origin/mono/main/{sha}"
    assert sources.for_queue("q").latest() == "fake://q/c2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lisen = '127.0.0.1:1'\n", "unknown setting(s) in config: lisen"),
        ("listen = 'nonsense'\n", "listen must be HOST:PORT"),
        ("max_workers = 'many'\n", "max_workers must be a non-negative int"),
        ("log_level = 'loud'\n", "log_level must be one of"),
        ("listen = [\n", "is not valid TOML"),
        ('[queues."q"]\ntype = "svn"\n', 'type must be "git" or "fake"'),
        ('[queues."q"]\ntype = "git"\nref = "main"\n', "path is required"),
        ('[queues."q"]\ntype = "fake"\ncommits = "c1"\n', "commits must be a list"),
        ('[queues."q"]\ntype = "fake"\nbranch = "x"\n', "unknown key(s) branch"),
    ],
)
def test_invalid_configuration_is_a_one_line_error_naming_the_setting(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    file = write(tmp_path / "s.toml", text + ("" if "queues" in text else FAKE_QUEUE))
    with pytest.raises(ConfigError) as caught:
        config.load(file, environ={}, cwd=tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grace_period = inf\n", "grace_period must be a finite number"),
        ("grace_period = -inf\n", "grace_period must be a finite number"),
        ("grace_period = nan\n", "grace_period must be a finite number"),
        ("grace_period = 1e308\n", "grace_period must be at most 3600 seconds"),
        ("max_workers = inf\n", "max_workers must be a finite number"),
        ("max_workers = nan\n", "max_workers must be a finite number"),
    ],
)
def test_a_number_that_is_not_finite_or_a_grace_period_over_the_maximum_is_a_configuration_error(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    file = write(tmp_path / "s.toml", text + FAKE_QUEUE)
    with pytest.raises(ConfigError, match=message):
        config.load(file, environ={}, cwd=tmp_path)


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "3600.5"])
def test_a_grace_period_from_the_environment_is_checked_alike(
    tmp_path: pathlib.Path, value: str
) -> None:
    file = write(tmp_path / "s.toml", FAKE_QUEUE)
    with pytest.raises(ConfigError, match="grace_period must be"):
        config.load(file, environ={"STOVEPIPE_GRACE_PERIOD": value}, cwd=tmp_path)


def test_the_maximum_grace_period_is_accepted(tmp_path: pathlib.Path) -> None:
    file = write(tmp_path / "s.toml", f"grace_period = {config.MAX_GRACE_PERIOD}\n" + FAKE_QUEUE)
    assert config.load(file, environ={}, cwd=tmp_path).grace_period == 3600


def test_a_git_queue_whose_repository_is_missing_is_a_configuration_error(
    tmp_path: pathlib.Path,
) -> None:
    file = write(
        tmp_path / "s.toml", '[queues."q"]\ntype = "git"\npath = "nowhere"\nref = "main"\n'
    )
    with pytest.raises(ConfigError, match="queue 'q'"):
        build_sourcecontrol(config.load(file, environ={}, cwd=tmp_path).queues)


def test_no_configuration_serves_the_current_git_repository_and_branch_on_local_sqlite(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository("webapp", branch="release/2.0")
    loaded = config.load(environ={}, cwd=repo.path)
    assert loaded.queues == {"webapp/release/2.0": GitQueue(path=repo.path, ref="release/2.0")}
    assert loaded.storage_url == f"sqlite:///{repo.path / '.stovepipe' / 'stovepipe.db'}"
    assert loaded.listen == config.DEFAULT_LISTEN
    assert loaded.metrics_listen == ""  # metrics are off unless asked for


def test_no_configuration_outside_a_git_repository_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="no queue configured and no git repository"):
        config.load(environ={}, cwd=tmp_path)


def test_no_configuration_with_a_detached_head_is_a_clear_error(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository()
    sha = repo.commit()
    repo.git("checkout", "--quiet", sha)
    with pytest.raises(ConfigError, match="detached"):
        config.load(environ={}, cwd=repo.path)


def test_no_configuration_in_a_linked_work_tree_reads_its_own_branch(
    git_repository: Callable[..., GitRepository], tmp_path: pathlib.Path
) -> None:
    repo = git_repository()
    repo.commit()
    repo.git("worktree", "add", "--quiet", "-b", "feature", str(tmp_path / "feature-tree"))
    loaded = config.load(environ={}, cwd=tmp_path / "feature-tree")
    assert list(loaded.queues) == ["feature-tree/feature"]


def test_default_data_directory_keeps_itself_out_of_git_status(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository()
    url = config.load(environ={}, cwd=repo.path).storage_url
    config.prepare_default_storage(url)
    (repo.path / ".stovepipe" / "stovepipe.db").write_bytes(b"")
    assert repo.git("status", "--porcelain") == ""
