"""Server configuration: one TOML file, environment overrides and flags, in that order.

Precedence, highest first: command-line flags, ``STOVEPIPE_*`` environment variables, the TOML
file (``--config`` or ``STOVEPIPE_CONFIG``), built-in defaults. A complete file::

    listen = "127.0.0.1:50051"          # gRPC address; port 0 picks a free port
    metrics_listen = "127.0.0.1:9464"   # Prometheus /metrics; "" (the default) turns it off
    storage_url = "sqlite:///var/lib/stovepipe/stovepipe.db"
    queue_url = "redis://127.0.0.1:6379/0"  # messaging queue; default: follows storage_url
    grace_period = 5.0                   # seconds SIGTERM waits for in-flight calls (<= 3600)
    max_workers = 32                     # threads serving RPCs
    log_level = "info"

    [queues."monorepo/main"]
    type = "git"
    path = "/srv/monorepo"               # relative paths are relative to this file
    ref = "main"
    remote = "origin"                    # optional; names the remote in URIs ("local")

    [queues."demo/main"]
    type = "fake"
    commits = ["c3", "c2", "c1"]         # newest first

With no configuration at all, storage is SQLite at ``.stovepipe/stovepipe.db`` under the current
directory and the git repository in the current directory is served as the queue
``<directory name>/<current branch>``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_PORT = 50051
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_GRACE_PERIOD = 5.0
MAX_GRACE_PERIOD = 3600.0
"""Seconds; a shutdown that needs longer is stuck, and the process should exit anyway."""
DEFAULT_MAX_WORKERS = 32
DATA_DIR_NAME = ".stovepipe"
DEFAULT_DB_NAME = "stovepipe.db"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration is invalid or incomplete; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class GitQueue:
    """A queue served from a git repository on this machine."""

    path: pathlib.Path
    ref: str
    remote: str | None = None


@dataclasses.dataclass(frozen=True)
class FakeQueue:
    """A queue with a fixed list of commits, newest first (for tests and demos)."""

    commits: tuple[str, ...]


QueueSpec = GitQueue | FakeQueue


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything ``stovepipe serve`` needs, resolved and validated."""

    listen: str = DEFAULT_LISTEN
    metrics_listen: str = ""
    storage_url: str = ""
    queue_url: str = ""
    grace_period: float = DEFAULT_GRACE_PERIOD
    max_workers: int = DEFAULT_MAX_WORKERS
    log_level: str = "info"
    queues: Mapping[str, QueueSpec] = dataclasses.field(default_factory=dict)


# Setting name -> the environment variable overriding it. Queues come only from the file.
_SCALARS: dict[str, str] = {
    "listen": "STOVEPIPE_LISTEN",
    "metrics_listen": "STOVEPIPE_METRICS_LISTEN",
    "storage_url": "STOVEPIPE_STORAGE_URL",
    "queue_url": "STOVEPIPE_QUEUE_URL",
    "grace_period": "STOVEPIPE_GRACE_PERIOD",
    "max_workers": "STOVEPIPE_MAX_WORKERS",
    "log_level": "STOVEPIPE_LOG_LEVEL",
}
CONFIG_ENV = "STOVEPIPE_CONFIG"
ENVIRONMENT_VARIABLES = (CONFIG_ENV, *_SCALARS.values())


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    queues_required: bool = True,
) -> Config:
    """Resolve the configuration from a file, the environment and flag ``overrides``.

    ``path`` defaults to ``$STOVEPIPE_CONFIG``; ``overrides`` maps setting names to flag values
    (``None`` means the flag was not given). Without queues, the git repository in ``cwd`` (the
    current directory by default) becomes the only queue; without a storage URL, SQLite under
    ``cwd/.stovepipe/``. With ``queues_required=False`` (``stovepipe worker``, which serves no
    queue) no queue is fine. Raises :class:`ConfigError` with a one-line reason.
    """
    environ = os.environ if environ is None else environ
    workdir = pathlib.Path.cwd() if cwd is None else pathlib.Path(cwd)
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    base_dir = workdir
    if path is not None:
        config_path = workdir / path
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config {path} is not valid TOML: {error}") from None
        base_dir = config_path.parent

    unknown = sorted(set(raw) - set(_SCALARS) - {"queues"})
    if unknown:
        raise ConfigError(f"unknown setting(s) in config: {', '.join(unknown)}")
    settings: dict[str, object] = {name: raw[name] for name in _SCALARS if name in raw}
    for name, variable in _SCALARS.items():
        if variable in environ:
            settings[name] = environ[variable]
    for name, value in (overrides or {}).items():
        if name not in _SCALARS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            settings[name] = value

    log_level = _text(settings, "log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    listen = _address(settings, "listen", DEFAULT_LISTEN, allow_empty=False)
    metrics_listen = _address(settings, "metrics_listen", "", allow_empty=True)
    grace_period = _number(settings, "grace_period", DEFAULT_GRACE_PERIOD, float)
    if grace_period > MAX_GRACE_PERIOD:
        raise ConfigError(
            f"grace_period must be at most {MAX_GRACE_PERIOD:g} seconds, not {grace_period:g}"
        )
    max_workers = int(_number(settings, "max_workers", DEFAULT_MAX_WORKERS, int))
    # The defaults that look at the working directory come last, after every explicit
    # setting has been checked.
    queues = _parse_queues(raw.get("queues", {}), base_dir)
    if not queues and queues_required:
        queues = default_queue(workdir)
    storage_url = _text(settings, "storage_url", "") or default_storage_url(workdir)
    config = Config(
        listen=listen,
        metrics_listen=metrics_listen,
        storage_url=storage_url,
        queue_url=_text(settings, "queue_url", "").strip(),
        grace_period=grace_period,
        max_workers=max_workers,
        log_level=log_level,
        queues=queues,
    )
    if config.max_workers < 1:
        raise ConfigError("max_workers must be at least 1")
    return config


def default_storage_url(workdir: pathlib.Path) -> str:
    """SQLite in ``.stovepipe/`` under ``workdir``; the directory ignores itself in git."""
    data_dir = workdir.resolve() / DATA_DIR_NAME
    return f"sqlite:///{data_dir / DEFAULT_DB_NAME}"


def prepare_default_storage(url: str) -> None:
    """Create the default data directory of ``url`` if it is the default one, and keep it
    out of ``git status`` in the repository it sits in."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    db_path = pathlib.Path(url[len(prefix) :])
    if db_path.parent.name != DATA_DIR_NAME:
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    ignore = db_path.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Stovepipe's local data; never committed.\n*\n", encoding="utf-8")


def default_queue(workdir: pathlib.Path) -> dict[str, QueueSpec]:
    """The git repository at ``workdir`` as the queue ``<directory name>/<current branch>``."""
    workdir = workdir.resolve()
    branch = current_branch(workdir)
    return {f"{workdir.name}/{branch}": GitQueue(path=workdir, ref=branch)}


def current_branch(repository: pathlib.Path) -> str:
    """The branch checked out in the git work tree at ``repository``, read from ``HEAD``.

    Reads files instead of running git, so it works where git is not installed.
    """
    dot_git = repository / ".git"
    if dot_git.is_file():  # a linked work tree or submodule: "gitdir: <path>"
        text = dot_git.read_text(encoding="utf-8").strip()
        if not text.startswith("gitdir:"):
            raise ConfigError(f"{dot_git} is not a git link file")
        dot_git = (repository / text.removeprefix("gitdir:").strip()).resolve()
    head = dot_git / "HEAD"
    if not dot_git.is_dir() or not head.is_file():
        raise ConfigError(
            f"no queue configured and no git repository in {repository}: run in a "
            "repository's top directory, or configure queues (stovepipe serve --config FILE)"
        )
    content = head.read_text(encoding="utf-8").strip()
    if not content.startswith("ref: refs/heads/"):
        raise ConfigError(
            f"no queue configured and HEAD of {repository} is detached: check out a branch, "
            "or configure queues (stovepipe serve --config FILE)"
        )
    return content.removeprefix("ref: refs/heads/")


def _parse_queues(raw: object, base_dir: pathlib.Path) -> dict[str, QueueSpec]:
    if not isinstance(raw, dict):
        raise ConfigError('queues must be a table: [queues."name"]')
    queues: dict[str, QueueSpec] = {}
    for name, spec in raw.items():
        where = f"queue {name!r}"
        if not name:
            raise ConfigError("queue names must not be empty")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table with a type")
        kind = spec.get("type")
        if kind == "git":
            _only(spec, {"type", "path", "ref", "remote"}, where)
            path = _required_text(spec, "path", where)
            ref = _required_text(spec, "ref", where)
            remote = spec.get("remote")
            if remote is not None and (not isinstance(remote, str) or not remote):
                raise ConfigError(f"{where}: remote must be a non-empty string")
            queues[name] = GitQueue(path=(base_dir / path).resolve(), ref=ref, remote=remote)
        elif kind == "fake":
            _only(spec, {"type", "commits"}, where)
            commits = spec.get("commits", [])
            if not isinstance(commits, list) or not all(isinstance(c, str) and c for c in commits):
                raise ConfigError(f"{where}: commits must be a list of non-empty strings")
            queues[name] = FakeQueue(commits=tuple(commits))
        else:
            raise ConfigError(f'{where}: type must be "git" or "fake", not {kind!r}')
    return queues


def _only(spec: Mapping[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _required_text(spec: Mapping[str, object], key: str, where: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} is required (a non-empty string)")
    return value


def _text(settings: Mapping[str, object], name: str, default: str) -> str:
    value = settings.get(name, default)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {value!r}")
    return value


def _address(settings: Mapping[str, object], name: str, default: str, *, allow_empty: bool) -> str:
    value = _text(settings, name, default).strip()
    if not value and allow_empty:
        return ""
    parse_address(value, setting=name)
    return value


def parse_address(value: str, *, setting: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raise :class:`ConfigError` if malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{setting} must be HOST:PORT, not {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _number(
    settings: Mapping[str, object], name: str, default: float, kind: type[int] | type[float]
) -> float:
    value = settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{name} must be a non-negative {kind.__name__}, not {value!r}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        finite = False
    except ValueError:
        finite = True  # not a number at all: reported below
    if not finite:
        # TOML and float() accept inf and nan; no setting means either.
        raise ConfigError(f"{name} must be a finite number, not {value!r}")
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < 0:
        raise ConfigError(f"{name} must be a non-negative {kind.__name__}, not {value!r}")
    return number


def describe(queues: Mapping[str, QueueSpec]) -> Sequence[str]:
    """One line per queue, for the startup log."""
    lines = []
    for name, spec in sorted(queues.items()):
        if isinstance(spec, GitQueue):
            lines.append(f"{name}: git {spec.path} {spec.ref}")
        else:
            lines.append(f"{name}: fake, {len(spec.commits)} commit(s)")
    return lines
