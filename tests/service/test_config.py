"""Configuration: file, environment and flags in that precedence, queues, and the
no-configuration default (the git repository in the current directory)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from stovepipe import config
from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.config import CommandBuild, ConfigError, FakeBuild, FakeQueue, GitQueue
from stovepipe.server import build_runners, build_sourcecontrol, has_runner, max_concurrent_of
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
        ('[queues."q"]\ntype = "git"\npath = "."\nref = "main"\npromote_ref = ""\n', "promote_ref"),
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


BUILT_QUEUES = """
[queues."mono/main"]
type = "git"
path = "../mono"
ref = "main"
promote_ref = "green"

[queues."mono/main".build]
type = "command"
command = "make test"
timeout = 600
max_concurrent = 2

[queues."demo/main"]
type = "fake"
commits = ["c1"]

[queues."demo/main".build]
type = "fake"
outcome = "failed"
duration = 0.5

[queues."plain/main"]
type = "fake"
commits = ["c1"]
"""


def test_a_queues_build_table_configures_its_runner_and_a_queue_without_one_is_ingest_only(
    tmp_path: pathlib.Path, git_repository: Callable[..., GitRepository]
) -> None:
    repo = git_repository("mono")
    repo.commit()
    etc = tmp_path / "etc"
    etc.mkdir()
    loaded = config.load(write(etc / "s.toml", BUILT_QUEUES), environ={}, cwd=tmp_path)
    assert loaded.queues["mono/main"] == GitQueue(
        path=repo.path,
        ref="main",
        promote_ref="green",
        build=CommandBuild(command="make test", timeout=600, max_concurrent=2),
    )
    assert loaded.queues["demo/main"] == FakeQueue(
        commits=("c1",), build=FakeBuild(outcome="failed", duration=0.5)
    )
    assert loaded.queues["plain/main"] == FakeQueue(commits=("c1",))

    sources = build_sourcecontrol(loaded.queues)
    runners = build_runners(loaded, sources)
    assert runners.queues() == ["demo/main", "mono/main"]
    assert isinstance(runners.for_queue("mono/main"), CommandBuildRunner)
    assert isinstance(runners.for_queue("demo/main"), FakeBuildRunner)
    assert not has_runner(runners)("plain/main")
    limit = max_concurrent_of(loaded)
    assert (limit("mono/main"), limit("demo/main"), limit("plain/main")) == (2, 1, 1)


def test_a_command_build_defaults_to_a_1800_second_timeout_and_one_build_at_once(
    tmp_path: pathlib.Path,
) -> None:
    file = write(
        tmp_path / "s.toml",
        FAKE_QUEUE + '[queues."q".build]\ntype = "command"\ncommand = "true"\n',
    )
    assert config.load(file, environ={}, cwd=tmp_path).queues["q"].build == CommandBuild(
        command="true", timeout=1800.0, max_concurrent=1
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ('type = "make"\n', 'build: type must be "command" or "fake"'),
        ('command = "true"\n', 'build needs a type: "command" or "fake"'),
        ('type = "command"\n', "build: command is required"),
        ('type = "command"\ncommand = "  "\n', "build: command is required"),
        ('type = "command"\ncommand = "true"\ntimeout = 0\n', "timeout must be a finite number"),
        ('type = "command"\ncommand = "true"\ntimeout = -1\n', "timeout must be a finite number"),
        ('type = "command"\ncommand = "true"\ntimeout = inf\n', "timeout must be a finite number"),
        ('type = "command"\ncommand = "true"\ntimeout = "1"\n', "timeout must be a finite number"),
        ('type = "command"\ncommand = "true"\nmax_concurrent = 0\n', "max_concurrent must be"),
        ('type = "command"\ncommand = "true"\nmax_concurrent = 1.5\n', "max_concurrent must be"),
        ('type = "command"\ncommand = "true"\nmax_concurrent = true\n', "max_concurrent must be"),
        ('type = "command"\ncommand = "true"\nretries = 2\n', "build: unknown key(s) retries"),
        ('type = "fake"\noutcome = "green"\n', "outcome must be one of succeeded, failed"),
        ('type = "fake"\nduration = -0.5\n', "duration must be a finite number"),
        ('type = "fake"\ncommand = "true"\n', "build: unknown key(s) command"),
    ],
)
def test_an_invalid_build_table_is_a_one_line_error_naming_the_queue_and_key(
    tmp_path: pathlib.Path, build: str, message: str
) -> None:
    file = write(tmp_path / "s.toml", FAKE_QUEUE + '[queues."q".build]\n' + build)
    with pytest.raises(ConfigError) as caught:
        config.load(file, environ={}, cwd=tmp_path)
    assert message in str(caught.value)
    assert str(caught.value).startswith("queue 'q' build")
    assert "\n" not in str(caught.value)


def test_a_build_that_is_not_a_table_is_a_configuration_error(tmp_path: pathlib.Path) -> None:
    file = write(tmp_path / "s.toml", '[queues."q"]\ntype = "fake"\nbuild = "make test"\n')
    with pytest.raises(ConfigError, match="build must be a table"):
        config.load(file, environ={}, cwd=tmp_path)


@pytest.mark.parametrize("promote_ref", ["main", "refs/heads/main", "refs/tags/green", "bad..ref"])
def test_a_promotion_ref_that_is_the_queues_own_ref_or_not_a_branch_is_a_configuration_error(
    tmp_path: pathlib.Path, git_repository: Callable[..., GitRepository], promote_ref: str
) -> None:
    git_repository("mono").commit()
    file = write(
        tmp_path / "s.toml",
        f'[queues."q"]\ntype = "git"\npath = "mono"\nref = "main"\npromote_ref = "{promote_ref}"\n',
    )
    with pytest.raises(ConfigError, match="queue 'q'"):
        build_sourcecontrol(config.load(file, environ={}, cwd=tmp_path).queues)


def test_build_command_gives_the_default_queue_a_command_build_from_flag_or_environment(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository("webapp")
    from_env = config.load(environ={"STOVEPIPE_BUILD_COMMAND": "make test"}, cwd=repo.path)
    assert from_env.queues == {
        "webapp/main": GitQueue(path=repo.path, ref="main", build=CommandBuild("make test"))
    }
    from_flag = config.load(
        environ={"STOVEPIPE_BUILD_COMMAND": "make test"},
        overrides={"build_command": "make check"},
        cwd=repo.path,
    )
    assert from_flag.queues["webapp/main"].build == CommandBuild("make check")
    without = config.load(environ={}, cwd=repo.path)
    assert without.queues["webapp/main"].build is None  # ingest-only


def test_build_command_with_configured_queues_is_a_configuration_error(
    tmp_path: pathlib.Path,
) -> None:
    file = write(tmp_path / "s.toml", FAKE_QUEUE)
    with pytest.raises(ConfigError, match=r"build_command builds the default queue only"):
        config.load(file, environ={"STOVEPIPE_BUILD_COMMAND": "make test"}, cwd=tmp_path)


def test_builds_dir_defaults_to_the_data_directory_and_a_relative_one_follows_its_setter(
    tmp_path: pathlib.Path,
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    plain = write(etc / "plain.toml", FAKE_QUEUE)
    assert config.load(plain, environ={}, cwd=tmp_path).builds_dir == (
        tmp_path.resolve() / ".stovepipe" / "builds"
    )
    file = write(etc / "s.toml", 'builds_dir = "var/builds"\n' + FAKE_QUEUE)
    # Set in the file: relative to the file, like a git queue's path.
    assert config.load(file, environ={}, cwd=tmp_path).builds_dir == etc / "var" / "builds"
    # Set by the environment or a flag: relative to the directory the server starts in.
    from_env = config.load(file, environ={"STOVEPIPE_BUILDS_DIR": "b"}, cwd=tmp_path)
    assert from_env.builds_dir == tmp_path / "b"
    from_flag = config.load(file, environ={}, overrides={"builds_dir": "/srv/b"}, cwd=tmp_path)
    assert from_flag.builds_dir == pathlib.Path("/srv/b")


def test_the_default_builds_dir_is_kept_out_of_git_status_whatever_the_storage(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository("webapp")
    repo.commit()
    loaded = config.load(
        environ={"STOVEPIPE_BUILD_COMMAND": "true", "STOVEPIPE_STORAGE_URL": "memory://"},
        cwd=repo.path,
    )
    build_runners(loaded, build_sourcecontrol(loaded.queues))
    assert (repo.path / ".stovepipe" / "builds").is_dir()
    (repo.path / ".stovepipe" / "builds" / "x").write_text("state", encoding="utf-8")
    assert repo.git("status", "--porcelain") == ""


def test_a_builds_dir_inside_the_repository_is_kept_out_of_git_status_wherever_it_is(
    git_repository: Callable[..., GitRepository],
) -> None:
    repo = git_repository("webapp")
    repo.commit()
    loaded = config.load(
        environ={"STOVEPIPE_BUILD_COMMAND": "true", "STOVEPIPE_STORAGE_URL": "memory://"},
        overrides={"builds_dir": "ci/builds"},
        cwd=repo.path,
    )
    build_runners(loaded, build_sourcecontrol(loaded.queues))
    (repo.path / "ci" / "builds" / "x").write_text("state", encoding="utf-8")
    assert repo.git("status", "--porcelain") == ""


def test_messaging_url_comes_from_the_file_the_environment_or_the_flag(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = write(tmp_path / "s.toml", 'messaging_url = "sqlite:///f.db"\n' + FAKE_QUEUE)
    environ = {"STOVEPIPE_MESSAGING_URL": "sqlite:///e.db"}
    assert config.load(file, environ={}, cwd=tmp_path).messaging_url == "sqlite:///f.db"
    assert config.load(file, environ=environ, cwd=tmp_path).messaging_url == "sqlite:///e.db"
    flag = {"messaging_url": "sqlite:///g.db"}
    loaded = config.load(file, environ=environ, overrides=flag, cwd=tmp_path)
    assert loaded.messaging_url == "sqlite:///g.db"
    assert "deprecated" not in caplog.text


def test_the_former_queue_url_setting_and_variable_still_work_with_one_deprecation_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = write(tmp_path / "s.toml", 'queue_url = "sqlite:///f.db"\n' + FAKE_QUEUE)
    with caplog.at_level("WARNING", logger="stovepipe"):
        assert config.load(file, environ={}, cwd=tmp_path).messaging_url == "sqlite:///f.db"
    assert [r.getMessage() for r in caplog.records] == [
        "queue_url is deprecated and will be removed: use messaging_url instead"
    ]
    caplog.clear()
    environ = {"STOVEPIPE_QUEUE_URL": "sqlite:///e.db"}
    with caplog.at_level("WARNING", logger="stovepipe"):
        loaded = config.load(write(tmp_path / "t.toml", FAKE_QUEUE), environ=environ, cwd=tmp_path)
    assert loaded.messaging_url == "sqlite:///e.db"
    assert [r.getMessage() for r in caplog.records] == [
        "STOVEPIPE_QUEUE_URL is deprecated and will be removed: use STOVEPIPE_MESSAGING_URL instead"
    ]
    both = write(tmp_path / "u.toml", 'queue_url = "a"\nmessaging_url = "b"\n' + FAKE_QUEUE)
    with pytest.raises(ConfigError, match="queue_url and messaging_url are both set"):
        config.load(both, environ={}, cwd=tmp_path)
