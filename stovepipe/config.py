"""Server configuration: one TOML file, environment overrides and flags, in that order.

Precedence, highest first: command-line flags, ``STOVEPIPE_*`` environment variables, the TOML
file (``--config`` or ``STOVEPIPE_CONFIG``), built-in defaults. A complete file::

    listen = "127.0.0.1:50051"          # gRPC address; port 0 picks a free port
    metrics_listen = "127.0.0.1:9464"   # Prometheus /metrics; "" (the default) turns it off;
                                         # a port alone ("9464") binds 127.0.0.1
    storage_url = "sqlite:///var/lib/stovepipe/stovepipe.db"
    messaging_url = "redis://127.0.0.1:6379/0"  # messaging; default: follows storage_url
    grace_period = 5.0                   # seconds SIGTERM waits for in-flight calls (<= 3600)
    max_workers = 32                     # threads serving RPCs
    shutdown_delay = 2.0                 # seconds SIGTERM keeps serving, health NOT_SERVING
    bulkhead_size = 10                   # RPC threads storage, and messaging, may each hold
                                         # (default: a third of max_workers; 0: no limit)
    breaker_failures = 5                 # transient failures in a row that open a breaker
                                         # (0: no breaker)
    breaker_reset = 5.0                  # seconds a breaker fails calls before a probe
    ingest_cache_size = 4096             # heads whose (queue, commit) -> request mapping
                                         # Ingest keeps in memory (at least 1)
    republish_interval = 30.0            # seconds between two re-publishes of an unchanged
                                         # head's request still waiting to be processed
    log_level = "info"
    reflection = true                    # serve gRPC server reflection

    tls_cert = "/etc/stovepipe/tls.crt"  # PEM certificate chain: serve TLS ("" = plaintext)
    tls_key = "/etc/stovepipe/tls.key"   # its PEM private key (unencrypted)
    tls_client_ca = "/etc/stovepipe/ca.crt"  # mutual TLS: clients present a cert it signed
    tokens_file = "/etc/stovepipe/tokens"    # bearer tokens with scopes (see stovepipe.auth)

    builds_dir = "/var/lib/stovepipe/builds"  # build state; relative to this file
    build_command = ""                   # the default queue's build (no [queues] only)

    [queues."monorepo/main"]
    type = "git"
    path = "/srv/monorepo"               # relative paths are relative to this file
    ref = "main"
    remote = "origin"                    # optional; names the remote in URIs ("local")
    promote_ref = "green"                # optional; a branch moved to each new last green

    [queues."monorepo/main".build]       # optional; without it the queue is ingest-only
    type = "command"                     # run by /bin/sh in a clean checkout of the commit
    command = "make test"
    timeout = 1800                       # seconds (default 1800)
    max_concurrent = 1                   # the queue's builds at once (default 1)

    [queues."demo/main"]
    type = "fake"
    commits = ["c3", "c2", "c1"]         # newest first

    [queues."demo/main".build]
    type = "fake"
    outcome = "succeeded"                # or "failed"
    duration = 2.0                       # seconds each build runs (default 0)

With no configuration at all, storage is SQLite at ``.stovepipe/stovepipe.db`` under the current
directory, builds keep their state in ``.stovepipe/builds/``, and the git repository in the
current directory is served as the queue ``<directory name>/<current branch>``, built by
``build_command`` if one is given (else ingest-only).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from stovepipe import auth, redaction
from stovepipe.controller.ingest import DEFAULT_CACHE_SIZE, DEFAULT_REPUBLISH_INTERVAL
from stovepipe.controller.process import DEFAULT_MAX_CONCURRENT
from stovepipe.storage import LimitExceeded, limits

logger = logging.getLogger(__name__)

DEFAULT_PORT = 50051
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_GRACE_PERIOD = 5.0
MAX_GRACE_PERIOD = 3600.0
"""Seconds; a shutdown that needs longer is stuck, and the process should exit anyway."""
DEFAULT_MAX_WORKERS = 32
DATA_DIR_NAME = ".stovepipe"
DEFAULT_DB_NAME = "stovepipe.db"
BUILDS_DIR_NAME = "builds"
DEFAULT_BUILD_TIMEOUT = 1800.0
"""Seconds a ``command`` build may take, checkout included, before it is ended."""
FAKE_OUTCOMES = ("succeeded", "failed")
# Serving under faults (see stovepipe.resilience and the README's "Running in production").
DEFAULT_SHUTDOWN_DELAY = 2.0
"""Seconds SIGTERM keeps serving with health NOT_SERVING, so load balancers stop routing."""
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_RESET = 5.0


def default_bulkhead_size(max_workers: int) -> int:
    """A third of ``max_workers`` (at least 1) for each of storage and messaging, so at least
    a third of the threads always stays free for Ping, health and reflection; 0 (no limit)
    for a single thread, which nothing can keep free."""
    return max(1, max_workers // 3) if max_workers > 1 else 0


LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration is invalid or incomplete; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class CommandBuild:
    """Builds that run ``command`` with ``/bin/sh`` in a clean checkout of the commit; exit
    status 0 is green. ``timeout`` is in seconds; ``max_concurrent`` bounds the queue's
    builds at once."""

    command: str
    timeout: float = DEFAULT_BUILD_TIMEOUT
    max_concurrent: int = DEFAULT_MAX_CONCURRENT


@dataclasses.dataclass(frozen=True)
class FakeBuild:
    """Builds that run nothing and end ``outcome`` (``succeeded`` or ``failed``) after
    ``duration`` seconds (for tests and demos)."""

    outcome: str = "succeeded"
    duration: float = 0.0
    max_concurrent: int = DEFAULT_MAX_CONCURRENT


BuildSpec = CommandBuild | FakeBuild


@dataclasses.dataclass(frozen=True)
class GitQueue:
    """A queue served from a git repository on this machine; ``promote_ref`` is the branch
    moved to each new last green commit, ``build`` how the queue's heads are built (``None``:
    ingest-only)."""

    path: pathlib.Path
    ref: str
    remote: str | None = None
    promote_ref: str | None = None
    build: BuildSpec | None = None


@dataclasses.dataclass(frozen=True)
class FakeQueue:
    """A queue with a fixed list of commits, newest first (for tests and demos)."""

    commits: tuple[str, ...]
    build: BuildSpec | None = None


QueueSpec = GitQueue | FakeQueue


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything ``stovepipe serve`` needs, resolved and validated."""

    listen: str = DEFAULT_LISTEN
    metrics_listen: str = ""
    storage_url: str = ""
    messaging_url: str = ""
    grace_period: float = DEFAULT_GRACE_PERIOD
    max_workers: int = DEFAULT_MAX_WORKERS
    log_level: str = "info"
    builds_dir: pathlib.Path = pathlib.Path(DATA_DIR_NAME, BUILDS_DIR_NAME)
    queues: Mapping[str, QueueSpec] = dataclasses.field(default_factory=dict)
    reflection: bool = True
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    tls_client_ca: pathlib.Path | None = None
    tokens_file: pathlib.Path | None = None
    tokens: tuple[auth.Token, ...] = ()
    """From ``tokens_file`` and ``$STOVEPIPE_TOKENS``; empty: every call is allowed."""
    shutdown_delay: float = DEFAULT_SHUTDOWN_DELAY
    bulkhead_size: int = default_bulkhead_size(DEFAULT_MAX_WORKERS)
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_reset: float = DEFAULT_BREAKER_RESET
    ingest_cache_size: int = DEFAULT_CACHE_SIZE
    republish_interval: float = DEFAULT_REPUBLISH_INTERVAL


# Setting name -> the environment variable overriding it. Queues come only from the file.
_SCALARS: dict[str, str] = {
    "listen": "STOVEPIPE_LISTEN",
    "metrics_listen": "STOVEPIPE_METRICS_LISTEN",
    "storage_url": "STOVEPIPE_STORAGE_URL",
    "messaging_url": "STOVEPIPE_MESSAGING_URL",
    "grace_period": "STOVEPIPE_GRACE_PERIOD",
    "max_workers": "STOVEPIPE_MAX_WORKERS",
    "log_level": "STOVEPIPE_LOG_LEVEL",
    "builds_dir": "STOVEPIPE_BUILDS_DIR",
    "build_command": "STOVEPIPE_BUILD_COMMAND",
    "reflection": "STOVEPIPE_REFLECTION",
    "tls_cert": "STOVEPIPE_TLS_CERT",
    "tls_key": "STOVEPIPE_TLS_KEY",
    "tls_client_ca": "STOVEPIPE_TLS_CLIENT_CA",
    "tokens_file": "STOVEPIPE_TOKENS_FILE",
    "shutdown_delay": "STOVEPIPE_SHUTDOWN_DELAY",
    "bulkhead_size": "STOVEPIPE_BULKHEAD_SIZE",
    "breaker_failures": "STOVEPIPE_BREAKER_FAILURES",
    "breaker_reset": "STOVEPIPE_BREAKER_RESET",
    "ingest_cache_size": "STOVEPIPE_INGEST_CACHE_SIZE",
    "republish_interval": "STOVEPIPE_REPUBLISH_INTERVAL",
}
_PATHS = ("tls_cert", "tls_key", "tls_client_ca", "tokens_file")
# Former names still read, each with a deprecation warning naming its successor.
DEPRECATED_SETTINGS = {"queue_url": "messaging_url"}
DEPRECATED_ENVIRONMENT = {"STOVEPIPE_QUEUE_URL": "STOVEPIPE_MESSAGING_URL"}
CONFIG_ENV = "STOVEPIPE_CONFIG"
ENVIRONMENT_VARIABLES = (
    CONFIG_ENV,
    *_SCALARS.values(),
    *DEPRECATED_ENVIRONMENT,
    auth.TOKENS_ENV,
)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Resolve the configuration from a file, the environment and flag ``overrides``.

    ``path`` defaults to ``$STOVEPIPE_CONFIG``; ``overrides`` maps setting names to flag values
    (``None`` means the flag was not given). Without queues, the git repository in ``cwd`` (the
    current directory by default) becomes the only queue, built by ``build_command`` if set;
    without a storage URL, SQLite under ``cwd/.stovepipe/``; without ``builds_dir``,
    ``cwd/.stovepipe/builds``. A relative ``builds_dir`` is relative to the file when the
    file sets it, else to ``cwd``. Raises :class:`ConfigError` with a one-line reason.
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

    raw = _renamed(raw, DEPRECATED_SETTINGS, f"in {path}")
    environ = _renamed(environ, DEPRECATED_ENVIRONMENT, "in the environment")
    unknown = sorted(set(raw) - set(_SCALARS) - {"queues"})
    if unknown:
        raise ConfigError(f"unknown setting(s) in config: {', '.join(unknown)}")
    settings: dict[str, object] = {name: raw[name] for name in _SCALARS if name in raw}
    # Where a relative path setting is relative to: the file that set it, else the cwd.
    relative_to = {name: base_dir for name in settings}
    for name, variable in _SCALARS.items():
        if variable in environ:
            settings[name] = environ[variable]
            relative_to[name] = workdir
    for name, value in (overrides or {}).items():
        if name not in _SCALARS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            settings[name] = value
            relative_to[name] = workdir

    log_level = _text(settings, "log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    listen = _address(settings, "listen", DEFAULT_LISTEN, allow_empty=False)
    metrics_listen = _text(settings, "metrics_listen", "").strip()
    if metrics_listen.removeprefix(":").isdigit():
        # A port alone is this machine only: exposing metrics further is a deliberate HOST.
        settings["metrics_listen"] = f"127.0.0.1:{metrics_listen.removeprefix(':')}"
    metrics_listen = _address(settings, "metrics_listen", "", allow_empty=True)
    grace_period = _number(settings, "grace_period", DEFAULT_GRACE_PERIOD, float)
    if grace_period > MAX_GRACE_PERIOD:
        raise ConfigError(
            f"grace_period must be at most {MAX_GRACE_PERIOD:g} seconds, not {grace_period:g}"
        )
    max_workers = int(_number(settings, "max_workers", DEFAULT_MAX_WORKERS, int))
    ingest_cache_size = int(_number(settings, "ingest_cache_size", DEFAULT_CACHE_SIZE, int))
    if ingest_cache_size < 1:
        raise ConfigError("ingest_cache_size must be at least 1, not 0")
    build_command = _text(settings, "build_command", "").strip()
    builds_dir_text = _text(settings, "builds_dir", "").strip()
    queues = _parse_queues(raw.get("queues", {}), base_dir)
    if queues and build_command:
        raise ConfigError(
            "build_command builds the default queue only, and queues are configured: "
            'give each queue that builds a [queues."NAME".build] table instead'
        )
    # The defaults that look at the working directory come last, after every explicit
    # setting has been checked.
    if not queues:
        build = CommandBuild(command=build_command) if build_command else None
        queues = default_queue(workdir, build=build)
    for name in queues:
        check_queue_name(name)
    storage_url = _text(settings, "storage_url", "") or default_storage_url(workdir)
    if builds_dir_text:
        builds_dir = (relative_to.get("builds_dir", workdir) / builds_dir_text).resolve()
    else:
        builds_dir = default_builds_dir(workdir)
    paths = {
        name: (relative_to.get(name, workdir) / text) if text else None
        for name in _PATHS
        for text in [_text(settings, name, "").strip()]
    }
    if (paths["tls_cert"] is None) != (paths["tls_key"] is None):
        raise ConfigError("tls_cert and tls_key go together: set both, or neither")
    if paths["tls_client_ca"] is not None and paths["tls_cert"] is None:
        raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    tokens = _tokens(paths["tokens_file"], environ)
    config = Config(
        listen=listen,
        metrics_listen=metrics_listen,
        storage_url=storage_url,
        messaging_url=_text(settings, "messaging_url", "").strip(),
        grace_period=grace_period,
        max_workers=max_workers,
        log_level=log_level,
        builds_dir=builds_dir,
        queues=queues,
        reflection=_boolean(settings, "reflection", True),
        tls_cert=paths["tls_cert"],
        tls_key=paths["tls_key"],
        tls_client_ca=paths["tls_client_ca"],
        tokens_file=paths["tokens_file"],
        tokens=tokens,
        ingest_cache_size=ingest_cache_size,
        republish_interval=_number(
            settings, "republish_interval", DEFAULT_REPUBLISH_INTERVAL, float
        ),
        **_serving_under_faults(settings, max_workers),
    )
    if config.max_workers < 1:
        raise ConfigError("max_workers must be at least 1")
    return config


def _renamed(settings: Mapping[str, Any], renames: Mapping[str, str], where: str) -> dict[str, Any]:
    """``settings`` with each former name in ``renames`` replaced by its new one, after a
    deprecation warning; :class:`ConfigError` if both names are given."""
    renamed = dict(settings)
    for old, new in renames.items():
        if old not in renamed:
            continue
        if new in renamed:
            raise ConfigError(f"{old} and {new} are both set {where}: keep {new} only")
        warn_deprecated(old, new)
        renamed[new] = renamed.pop(old)
    return renamed


def warn_deprecated(old: str, new: str) -> None:
    """Log that ``old`` (a setting, variable or flag) is deprecated in favour of ``new``."""
    logger.warning("%s is deprecated and will be removed: use %s instead", old, new)


def check_queue_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is within the storage limits of a queue
    name (:data:`stovepipe.storage.limits.MAX_QUEUE_BYTES`): a queue no ingest could store
    is refused at start rather than at its first ingest."""
    try:
        limits.check_text("the name", name, limits.MAX_QUEUE_BYTES)
    except (LimitExceeded, TypeError) as error:
        shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
        raise ConfigError(f"queue {shown}: {error}") from None


def _serving_under_faults(settings: Mapping[str, object], max_workers: int) -> dict[str, Any]:
    """``shutdown_delay``, ``bulkhead_size``, ``breaker_failures`` and ``breaker_reset``."""
    shutdown_delay = _number(settings, "shutdown_delay", DEFAULT_SHUTDOWN_DELAY, float)
    if shutdown_delay > MAX_GRACE_PERIOD:
        raise ConfigError(
            f"shutdown_delay must be at most {MAX_GRACE_PERIOD:g} seconds, not {shutdown_delay:g}"
        )
    default_size = default_bulkhead_size(max_workers)
    bulkhead_size = int(_number(settings, "bulkhead_size", default_size, int))
    if bulkhead_size and bulkhead_size >= max_workers:  # 0 turns the bulkheads off
        raise ConfigError(
            f"bulkhead_size must be below max_workers ({max_workers}), so Ping and health "
            f"keep a thread, not {bulkhead_size}"
        )
    breaker_reset = _number(settings, "breaker_reset", DEFAULT_BREAKER_RESET, float)
    if breaker_reset == 0:
        raise ConfigError("breaker_reset must be a number of seconds above 0, not 0")
    return {
        "shutdown_delay": shutdown_delay,
        "bulkhead_size": bulkhead_size,
        "breaker_failures": int(
            _number(settings, "breaker_failures", DEFAULT_BREAKER_FAILURES, int)
        ),
        "breaker_reset": breaker_reset,
    }


def _tokens(path: pathlib.Path | None, environ: Mapping[str, str]) -> tuple[auth.Token, ...]:
    """The tokens of ``tokens_file`` and ``$STOVEPIPE_TOKENS``; each registered as a secret,
    so no log line shows one. Either one given but holding no token is a :class:`ConfigError`:
    read as "no tokens", it would turn authentication off."""
    try:
        tokens = auth.read_tokens_file(path) if path is not None else []
        from_environment = auth.parse_tokens(environ.get(auth.TOKENS_ENV, ""), auth.TOKENS_ENV)
    except auth.TokenError as error:
        raise ConfigError(str(error)) from None
    if auth.TOKENS_ENV in environ and not from_environment:
        raise ConfigError(
            f"{auth.TOKENS_ENV} is set but holds no token; set SCOPE TOKEN entries, or unset it"
        )
    tokens += from_environment
    values = [token.value for token in tokens]
    if len(set(values)) != len(values):
        raise ConfigError(f"a token is given both in tokens_file and in {auth.TOKENS_ENV}")
    redaction.register_secret(*values)
    return tuple(tokens)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _boolean(settings: Mapping[str, object], name: str, default: bool) -> bool:
    value = settings.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def default_storage_url(workdir: pathlib.Path) -> str:
    """SQLite in ``.stovepipe/`` under ``workdir``; the directory ignores itself in git."""
    data_dir = workdir.resolve() / DATA_DIR_NAME
    return f"sqlite:///{data_dir / DEFAULT_DB_NAME}"


def default_builds_dir(workdir: pathlib.Path) -> pathlib.Path:
    """``builds/`` in the data directory ``.stovepipe/`` under ``workdir``."""
    return workdir.resolve() / DATA_DIR_NAME / BUILDS_DIR_NAME


def prepare_default_storage(url: str) -> None:
    """Create the default data directory of ``url`` if it is the default one, and keep it
    out of ``git status`` in the repository it sits in."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    prepare_data_dir(pathlib.Path(url[len(prefix) :]).parent)


def prepare_builds_dir(builds_dir: pathlib.Path) -> None:
    """Create ``builds_dir`` with a ``.gitignore`` that ignores all of it, so builds (which
    check commits out in there) never show in ``git status`` wherever it lies; if it lies in
    a data directory named ``.stovepipe``, that one is kept out too."""
    if builds_dir.parent.name == DATA_DIR_NAME:
        prepare_data_dir(builds_dir.parent)
    try:
        builds_dir.mkdir(parents=True, exist_ok=True)
        _ignore_all_of(builds_dir)
    except OSError as error:
        raise ConfigError(f"cannot create builds_dir {builds_dir}: {error.strerror}") from None


def prepare_data_dir(directory: pathlib.Path) -> None:
    """Create ``directory`` if it is a data directory (named ``.stovepipe``) with a
    ``.gitignore`` that ignores all of it."""
    if directory.name != DATA_DIR_NAME:
        return
    directory.mkdir(parents=True, exist_ok=True)
    _ignore_all_of(directory)


def _ignore_all_of(directory: pathlib.Path) -> None:
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Stovepipe's local data; never committed.\n*\n", encoding="utf-8")


def default_queue(workdir: pathlib.Path, *, build: BuildSpec | None = None) -> dict[str, QueueSpec]:
    """The git repository at ``workdir`` as the queue ``<directory name>/<current branch>``,
    built as ``build`` says (``None``: ingest-only)."""
    workdir = workdir.resolve()
    branch = current_branch(workdir)
    return {f"{workdir.name}/{branch}": GitQueue(path=workdir, ref=branch, build=build)}


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
        build = _parse_build(spec["build"], where) if "build" in spec else None
        if kind == "git":
            _only(spec, {"type", "path", "ref", "remote", "promote_ref", "build"}, where)
            path = _required_text(spec, "path", where)
            ref = _required_text(spec, "ref", where)
            remote = _optional_text(spec, "remote", where)
            promote_ref = _optional_text(spec, "promote_ref", where)
            queues[name] = GitQueue(
                path=(base_dir / path).resolve(),
                ref=ref,
                remote=remote,
                promote_ref=promote_ref,
                build=build,
            )
        elif kind == "fake":
            _only(spec, {"type", "commits", "build"}, where)
            commits = spec.get("commits", [])
            if not isinstance(commits, list) or not all(isinstance(c, str) and c for c in commits):
                raise ConfigError(f"{where}: commits must be a list of non-empty strings")
            queues[name] = FakeQueue(commits=tuple(commits), build=build)
        else:
            raise ConfigError(f'{where}: type must be "git" or "fake", not {kind!r}')
    return queues


def _parse_build(raw: object, queue_where: str) -> BuildSpec:
    where = f"{queue_where} build"
    if not isinstance(raw, dict):
        raise ConfigError(f'{where} must be a table with a type: [queues."NAME".build]')
    kind = raw.get("type")
    max_concurrent = int(
        _positive(raw, "max_concurrent", DEFAULT_MAX_CONCURRENT, int, where, minimum=1)
    )
    if kind == "command":
        _only(raw, {"type", "command", "timeout", "max_concurrent"}, where)
        command = _required_text(raw, "command", where)
        if not command.strip():
            raise ConfigError(f"{where}: command is required (a non-empty string)")
        timeout = _positive(raw, "timeout", DEFAULT_BUILD_TIMEOUT, float, where, minimum=0)
        if timeout == 0:
            raise ConfigError(f"{where}: timeout must be a finite number above 0, not 0")
        return CommandBuild(command=command, timeout=timeout, max_concurrent=max_concurrent)
    if kind == "fake":
        _only(raw, {"type", "outcome", "duration", "max_concurrent"}, where)
        outcome = raw.get("outcome", "succeeded")
        if outcome not in FAKE_OUTCOMES:
            raise ConfigError(
                f"{where}: outcome must be one of {', '.join(FAKE_OUTCOMES)}, not {outcome!r}"
            )
        duration = _positive(raw, "duration", 0.0, float, where, minimum=0)
        return FakeBuild(outcome=str(outcome), duration=duration, max_concurrent=max_concurrent)
    if kind is None:
        raise ConfigError(f'{where} needs a type: "command" or "fake"')
    raise ConfigError(f'{where}: type must be "command" or "fake", not {kind!r}')


def _positive(
    spec: Mapping[str, object],
    key: str,
    default: float,
    kind: type[int] | type[float],
    where: str,
    *,
    minimum: float,
) -> float:
    """The number at ``key`` (``default`` if absent): an integer for ``kind`` ``int``, else
    an integer or a finite float; at least ``minimum``."""
    value = spec.get(key, default)
    integer = isinstance(value, int) and not isinstance(value, bool)
    finite = kind is float and isinstance(value, float) and math.isfinite(value)
    number = value if integer or finite else None
    if not isinstance(number, int | float) or number < minimum:
        name = "an integer" if kind is int else "a finite number"
        raise ConfigError(f"{where}: {key} must be {name} of at least {minimum:g}, not {value!r}")
    return kind(number)


def _only(spec: Mapping[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _optional_text(spec: Mapping[str, object], key: str, where: str) -> str | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


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
    if kind is int and isinstance(value, float) and not value.is_integer():
        number = None  # int() would drop the fraction: 1.5 workers is a mistake, not 1
    if number is None or number < 0:
        raise ConfigError(f"{name} must be a non-negative {kind.__name__}, not {value!r}")
    return number


def describe(queues: Mapping[str, QueueSpec]) -> Sequence[str]:
    """One line per queue, for the startup log."""
    lines = []
    for name, spec in sorted(queues.items()):
        if isinstance(spec, GitQueue):
            line = f"{name}: git {spec.path} {spec.ref}"
            if spec.promote_ref:
                line += f", promoting {spec.promote_ref}"
        else:
            line = f"{name}: fake, {len(spec.commits)} commit(s)"
        build = spec.build
        if isinstance(build, CommandBuild):
            line += f"; builds with {build.command!r} (timeout {build.timeout:g} s"
            line += f", {build.max_concurrent} at once)"
        elif isinstance(build, FakeBuild):
            line += f"; fake builds {build.outcome} after {build.duration:g} s"
        else:
            line += "; ingest-only (no build)"
        lines.append(line)
    return lines
