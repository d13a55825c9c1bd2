"""A BuildRunner that runs a shell command in a clean checkout of the head commit.

Every build keeps its state in files under ``builds_dir/<build id>/``, so every process that
shares ``builds_dir`` (on one machine) sees the same builds, and a build outlives the
process that triggered it:

``build.json``
    What to build and when it was triggered, and which process triggered it. The directory
    appears with this file in it by one atomic rename, which decides, between racing
    triggers in any process, who starts the build.
``log``
    The build's standard output and error (the report's ``log``).
``checkout/``
    The clean checkout the command runs in; removed when the build ends.
``process.json``
    The pid of the build's wrapper shell, the leader of the build's own session and process
    group, and its identity (boot id and start time), so a recycled pid is never mistaken
    for the build.
``exit``
    The command's exit status, written by the wrapper shell (atomically, by rename) when the
    command ends, whether or not the triggering process still runs.
``outcome.json``
    The terminal status and its reason, written once (by hard link, so the first writer
    wins) by whoever first sees the build end: its exit status, its timeout passing, its
    cancellation, or its process gone without an exit status ("lost").

The triggering process checks a build out and starts it in a thread of its own, then
watches it (another thread), enforcing the timeout and tidying up as soon as the build
ends; :meth:`CommandBuildRunner.status` does the same lazily from any process, so builds
whose watcher died still end. A process that stops gracefully first starts the builds it
is checking out; one that dies before a build started leaves it to end "lost".
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

from stovepipe import sourcecontrol
from stovepipe.buildrunner.contract import BuildReport, NotFound, Unavailable
from stovepipe.entity import BuildStatus

logger = logging.getLogger(__name__)

_ID: Final = re.compile(r"[0-9a-f]{32}")
_META: Final = "build.json"
_LOG: Final = "log"
_CHECKOUT: Final = "checkout"
_PROCESS: Final = "process.json"
_EXIT: Final = "exit"
_OUTCOME: Final = "outcome.json"

# The wrapper runs the command as its child, in the session and process group it leads, and
# records the command's exit status by rename, so a reader sees all of it or none.
_WRAPPER: Final = """\
/bin/sh -c "$2"
status=$?
printf '%s\\n' "$status" > "$1/exit.tmp" && mv -f "$1/exit.tmp" "$1/exit"
"""

# How long an ended process group may take to vanish after SIGKILL before the checkout is
# removed anyway (a later status call removes what is left).
_KILL_SETTLE: Final = 2.0
_POLL: Final = 0.02


@dataclasses.dataclass(frozen=True, slots=True)
class _Meta:
    queue: str
    request_id: str
    base_uri: str
    head_uri: str
    base_sha: str
    head_sha: str
    created: float
    timeout: float
    owner_pid: int
    owner: str

    @property
    def deadline(self) -> float:
        return self.created + self.timeout


@dataclasses.dataclass(frozen=True, slots=True)
class _Process:
    pid: int
    identity: str


class CommandBuildRunner:
    """Runs ``/bin/sh -c command`` in a clean checkout of the head commit. Thread-safe.

    ``queue`` is the queue the runner is bound to, ``source`` that queue's SourceControl
    (it resolves and checks out commits), ``timeout`` the seconds a build may take from its
    trigger (checkout included) before it is ended, and ``builds_dir`` where builds keep
    their state (created if absent). ``kill_grace`` is how many seconds a build's process
    group has between SIGTERM and SIGKILL when it is cancelled or times out.

    The command runs in a new session (its own process group) in ``builds_dir/<id>/checkout``,
    a fresh clean checkout of the head commit, never in the repository's working tree, with
    stdin from ``/dev/null``, stdout and stderr appended to ``builds_dir/<id>/log``, and this
    process's environment less every ``STOVEPIPE_*`` variable, plus ``STOVEPIPE_QUEUE``,
    ``STOVEPIPE_REQUEST_ID``, ``STOVEPIPE_HEAD_URI``, ``STOVEPIPE_HEAD_SHA``,
    ``STOVEPIPE_BASE_URI`` and ``STOVEPIPE_BASE_SHA`` (the last two empty for a full build).
    Exit status 0 is ``succeeded``, anything else ``failed`` with ``"exit status N"``. When a
    build ends, whatever is left of its process group is ended too and the checkout is
    removed; the log is kept.
    """

    def __init__(
        self,
        queue: str,
        source: sourcecontrol.SourceControl,
        command: str,
        timeout: float,
        builds_dir: pathlib.Path,
        *,
        kill_grace: float = 5.0,
    ) -> None:
        if not isinstance(command, str) or not command.strip():
            raise ValueError("the build command is empty")
        if not timeout > 0:
            raise ValueError(f"timeout is {timeout}; it must be > 0 seconds")
        if not kill_grace >= 0:
            raise ValueError(f"kill_grace is {kill_grace}; it must be >= 0 seconds")
        self._queue = queue
        self._source = source
        self._command = command
        self._timeout = float(timeout)
        self._builds_dir = pathlib.Path(builds_dir)
        self._kill_grace = float(kill_grace)

    def __repr__(self) -> str:
        return f"CommandBuildRunner({self._queue!r}, builds_dir={os.fspath(self._builds_dir)!r})"

    # -- the contract ----------------------------------------------------------------------

    def trigger(self, request_id: str, base_uri: str | None, head_uri: str) -> str:
        """Start the build of ``head_uri`` in the background and return its id at once.

        The id is 32 hex digits derived from the queue, ``request_id`` and the commits, so a
        repeated trigger, from any process sharing ``builds_dir``, finds the build already
        there and starts nothing. ``base_uri`` ``None`` or empty means a full build. A
        commit the source does not know, or a checkout that fails, ends the build ``failed``
        with the reason (also written to the log). Raises ``Unavailable`` if the source or
        ``builds_dir`` fails transiently; nothing was started then.
        """
        build_id = _mint(self._queue, request_id, base_uri or "", head_uri)
        directory = self._builds_dir / build_id
        with _io_errors("trigger a build"):
            if (directory / _META).exists():
                return build_id
            head_sha = base_sha = failure = ""
            try:
                head_sha = self._source.revision(head_uri)
                base_sha = self._source.revision(base_uri) if base_uri else ""
            except sourcecontrol.Unavailable as error:
                raise Unavailable(f"cannot resolve the commits to build: {error}") from error
            except sourcecontrol.SourceControlError as error:
                failure = f"unknown commit: {error}"
            owner_pid = os.getpid()
            meta = _Meta(
                queue=self._queue,
                request_id=request_id,
                base_uri=base_uri or "",
                head_uri=head_uri,
                base_sha=base_sha,
                head_sha=head_sha,
                created=time.time(),
                timeout=self._timeout,
                owner_pid=owner_pid,
                owner=_identity(owner_pid) or "",
            )
            if self._claim(directory, meta, failure) and not failure:
                try:
                    threading.Thread(
                        target=self._run, args=(directory, meta), name=f"build-{build_id[:12]}"
                    ).start()
                except RuntimeError as error:  # no thread to be had: end it rather than lose it
                    reason = f"could not start the build: {error}"
                    _append_log(directory, reason)
                    self._record(directory, BuildStatus.FAILED, reason)
        return build_id

    def status(self, build_id: str) -> BuildReport:
        """The build's status, after ending it if its timeout passed or recording it lost
        if its process is gone without an exit status. ``NotFound`` for an id this runner
        (its queue, its ``builds_dir``) never minted."""
        with _io_errors("read a build's status"):
            directory, meta = self._load(build_id)
            return self._refresh(directory, meta)

    def cancel(self, build_id: str) -> None:
        """Record the build ``cancelled`` unless it already ended, then end its process group:
        SIGTERM, and SIGKILL for what is left after ``kill_grace`` seconds. Idempotent."""
        with _io_errors("cancel a build"):
            directory, meta = self._load(build_id)
            if self._refresh(directory, meta).status.terminal:
                return
            self._record(directory, BuildStatus.CANCELLED, "cancelled")
            self._tidy(directory, meta)

    # -- state files -----------------------------------------------------------------------

    def _claim(self, directory: pathlib.Path, meta: _Meta, failure: str) -> bool:
        """Create the build's directory, complete, by one rename; whether this call did."""
        self._builds_dir.mkdir(parents=True, exist_ok=True)
        staging = self._builds_dir / f".{directory.name}.{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            (staging / _META).write_text(json.dumps(dataclasses.asdict(meta)))
            with (staging / _LOG).open("w") as log:
                if failure:
                    log.write(f"stovepipe: {failure}\n")
            if failure:
                outcome = {"status": str(BuildStatus.FAILED), "reason": failure}
                (staging / _OUTCOME).write_text(json.dumps(outcome))
            try:
                staging.rename(directory)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # another trigger, maybe in another process, won
                raise
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _load(self, build_id: str) -> tuple[pathlib.Path, _Meta]:
        if not isinstance(build_id, str) or not _ID.fullmatch(build_id):
            raise NotFound(f"unknown build id {build_id!r}")
        directory = self._builds_dir / build_id
        raw = _read_json(directory / _META)
        if raw is None or raw.get("queue") != self._queue:
            raise NotFound(f"unknown build id {build_id!r}")
        with _parsing(directory / _META):
            return directory, _Meta(**raw)

    def _read_outcome(self, directory: pathlib.Path) -> tuple[BuildStatus, str] | None:
        raw = _read_json(directory / _OUTCOME)
        if raw is None:
            return None
        with _parsing(directory / _OUTCOME):
            return BuildStatus(raw["status"]), str(raw["reason"])

    def _read_process(self, directory: pathlib.Path) -> _Process | None:
        raw = _read_json(directory / _PROCESS)
        if raw is None:
            return None
        with _parsing(directory / _PROCESS):
            return _Process(int(raw["pid"]), str(raw["identity"]))

    def _record(
        self, directory: pathlib.Path, status: BuildStatus, reason: str
    ) -> tuple[BuildStatus, str]:
        """Write the terminal outcome unless one is there; return the one that is."""
        staging = directory / f".outcome.{uuid.uuid4().hex}"
        staging.write_text(json.dumps({"status": str(status), "reason": reason}))
        try:
            os.link(staging, directory / _OUTCOME)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
        outcome = self._read_outcome(directory)
        assert outcome is not None
        return outcome

    # -- the lifecycle ---------------------------------------------------------------------

    def _refresh(self, directory: pathlib.Path, meta: _Meta) -> BuildReport:
        """Report the build, first recording its outcome if it has just ended."""
        outcome = self._read_outcome(directory) or self._observe(directory, meta)
        status, reason = outcome
        if status.terminal and (directory / _CHECKOUT).exists():
            self._tidy(directory, meta)
        return BuildReport(status, os.fspath(directory / _LOG), reason)

    def _observe(self, directory: pathlib.Path, meta: _Meta) -> tuple[BuildStatus, str]:
        """Look at a build without an outcome; record one if it has ended."""
        # Liveness first, then the files the live process writes before it goes: a process
        # seen gone has written whatever it was going to.
        owner_alive = _alive(meta.owner_pid, meta.owner)
        process = self._read_process(directory)
        outcome = self._read_outcome(directory)
        if outcome is not None:
            return outcome
        timed_out = time.time() >= meta.deadline
        if process is None:
            if not owner_alive:
                return self._record(
                    directory,
                    BuildStatus.FAILED,
                    "lost: the process that triggered it ended before the build started",
                )
            if timed_out:
                return self._record(directory, BuildStatus.FAILED, _timed_out(meta))
            return BuildStatus.ACCEPTED, ""
        running = _alive(process.pid, process.identity)
        code = _read_exit(directory)
        if code == 0:
            return self._record(directory, BuildStatus.SUCCEEDED, "")
        if code is not None:
            return self._record(directory, BuildStatus.FAILED, f"exit status {code}")
        if not running:
            return self._record(
                directory,
                BuildStatus.FAILED,
                "lost: its process ended without recording an exit status",
            )
        if timed_out:
            return self._record(directory, BuildStatus.FAILED, _timed_out(meta))
        return BuildStatus.RUNNING, ""

    def _tidy(self, directory: pathlib.Path, meta: _Meta) -> None:
        """For an ended build: end what is left of its process group, remove its checkout."""
        process = self._read_process(directory)
        if process is not None:
            self._end_group(process)
        elif _alive(meta.owner_pid, meta.owner):
            return  # still checking out: the triggering process removes the checkout itself
        _remove_tree(directory / _CHECKOUT)

    def _end_group(self, process: _Process) -> None:
        """SIGTERM the build's process group, SIGKILL it after the grace; wait, bounded."""
        current = _identity(process.pid)
        if current is not None and current != process.identity:
            # The pid names another process now. It cannot while any process of the build's
            # group lives (a process group keeps its id reserved), so the group is gone.
            return
        if not _signal_group(process.pid, signal.SIGTERM):
            return
        if _wait_group_gone(process.pid, self._kill_grace):
            return
        logger.warning("build process group %d outlived SIGTERM; killing it", process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        _wait_group_gone(process.pid, _KILL_SETTLE)

    def _run(self, directory: pathlib.Path, meta: _Meta) -> None:
        """Check the build out and start it, then hand it to a watcher thread.

        This thread is not a daemon, so a process stopping gracefully first starts the
        builds it was checking out (they then run on without it); the watcher is one, so
        running builds never hold a stopping process up.
        """
        try:
            popen = self._launch(directory, meta)
        except BaseException as error:
            logger.exception("build %s could not be started", directory.name)
            with contextlib.suppress(Exception):
                reason = f"could not start the build: {error}"
                _append_log(directory, reason)
                self._record(directory, BuildStatus.FAILED, reason)
                _remove_tree(directory / _CHECKOUT)
            return
        if popen is None:
            return
        # Refused while the interpreter shuts down: the build runs on and status() ends it.
        with contextlib.suppress(RuntimeError):
            threading.Thread(
                target=self._watch,
                args=(directory, meta, popen),
                name=f"build-watch-{directory.name[:12]}",
                daemon=True,
            ).start()

    def _launch(self, directory: pathlib.Path, meta: _Meta) -> subprocess.Popen[bytes] | None:
        """Check out and start the build; its wrapper, or None if it ended before it ran."""
        checkout = directory / _CHECKOUT
        if self._read_outcome(directory) is not None:
            return None
        try:
            self._source.checkout(meta.head_uri, checkout)
        except (sourcecontrol.SourceControlError, ValueError, OSError) as error:
            reason = f"checkout failed: {error}"
            _append_log(directory, reason)
            self._record(directory, BuildStatus.FAILED, reason)
            _remove_tree(checkout)
            return None
        if self._read_outcome(directory) is not None:  # cancelled or timed out meanwhile
            _remove_tree(checkout)
            return None
        environment = {
            name: value for name, value in os.environ.items() if not name.startswith("STOVEPIPE_")
        }
        environment.update(
            STOVEPIPE_QUEUE=meta.queue,
            STOVEPIPE_REQUEST_ID=meta.request_id,
            STOVEPIPE_HEAD_URI=meta.head_uri,
            STOVEPIPE_HEAD_SHA=meta.head_sha,
            STOVEPIPE_BASE_URI=meta.base_uri,
            STOVEPIPE_BASE_SHA=meta.base_sha,
        )
        with (directory / _LOG).open("ab") as log:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "stovepipe-build", os.fspath(directory), self._command],
                cwd=checkout,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Our child cannot be reaped before we wait, so its identity is readable now.
        process = _Process(popen.pid, _identity(popen.pid, zombie=True) or "")
        try:
            _write_atomically(
                directory / _PROCESS, json.dumps({"pid": process.pid, "identity": process.identity})
            )
        except BaseException:
            _signal_group(popen.pid, signal.SIGKILL)  # a build nobody could find or end
            popen.wait()
            raise
        if self._read_outcome(directory) is not None:  # cancelled or timed out meanwhile
            self._tidy(directory, meta)
        return popen

    def _watch(self, directory: pathlib.Path, meta: _Meta, popen: subprocess.Popen[bytes]) -> None:
        """Reap the wrapper, end the build at its deadline, record and tidy when it ends."""
        try:
            while True:
                try:
                    popen.wait(timeout=max(meta.deadline - time.time(), 1.0))
                    break
                except subprocess.TimeoutExpired:
                    self._refresh(directory, meta)  # ends the build once its deadline passed
            self._refresh(directory, meta)
        except Exception:
            # status() finishes the job from any process; the wrapper must still be reaped.
            logger.exception("watching build %s failed", directory.name)
            popen.wait()


def _mint(queue: str, request_id: str, base_uri: str, head_uri: str) -> str:
    """The build id of a request of a queue: deterministic, so triggers agree on it. The
    commits are part of it: a request id drawn again after the storage was reset (while
    ``builds_dir`` was kept) names another build, never the old one's outcome."""
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a str, not {type(request_id).__name__}")
    key = json.dumps([queue, request_id, base_uri, head_uri], ensure_ascii=True)
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:32]


def _timed_out(meta: _Meta) -> str:
    return f"timed out after {meta.timeout:g} s"


@contextlib.contextmanager
def _io_errors(action: str) -> Iterator[None]:
    """Map a failure of the state directory to ``Unavailable``: the one place it happens."""
    try:
        yield
    except OSError as error:
        raise Unavailable(f"cannot {action}: {error}") from error


class _CorruptState(Unavailable):
    """A state file that does not hold what this module writes (edited by hand?)."""


@contextlib.contextmanager
def _parsing(path: pathlib.Path) -> Iterator[None]:
    try:
        yield
    except (ValueError, KeyError, TypeError) as error:
        raise _CorruptState(f"corrupt build state in {os.fspath(path)!r}: {error!r}") from None


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    with _parsing(path):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise TypeError(f"a JSON object was expected, not {type(loaded).__name__}")
        return loaded


def _read_exit(directory: pathlib.Path) -> int | None:
    try:
        text = (directory / _EXIT).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return -1


def _write_atomically(path: pathlib.Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_text(text)
    os.replace(staging, path)


def _remove_tree(path: pathlib.Path) -> None:
    """Remove a checkout, also one holding read-only directories (as some build tools
    leave); what cannot be removed now is retried by a later status call."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        for directory, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(directory, 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _append_log(directory: pathlib.Path, line: str) -> None:
    with (directory / _LOG).open("a") as log:
        log.write(f"stovepipe: {line}\n")


# -- processes ---------------------------------------------------------------------------

_PROC: Final = pathlib.Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT_ID: Final = _boot_id()
_HAVE_PROC: Final = (_PROC / "self/stat").exists()


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()


def _identity(pid: int, *, zombie: bool = False) -> str | None:
    """Who ``pid`` is: boot id and start time, stable for the process's life and never
    shared with a later process that reuses the pid. None if no such process runs (a
    zombie counts as gone unless ``zombie``). Without ``/proc``, "" for any live pid."""
    if not _HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    fields = _stat(pid)
    if fields is None or (not zombie and fields[0] in (b"Z", b"X")):
        return None
    return f"{_BOOT_ID}:{fields[19].decode()}"  # field 22, starttime, in clock ticks


def _alive(pid: int, identity: str) -> bool:
    """Whether the process ``pid`` that had ``identity`` still runs."""
    return _identity(pid) == identity


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; whether the group exists."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` runs (zombies, which only wait to be reaped,
    do not count)."""
    if not _HAVE_PROC:
        return _signal_group(pgid, 0)
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            # After the state come ppid and pgrp.
            if fields is not None and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True
