"""Throwaway servers from installed binaries, for the backends' test-server hooks.

A backend's hook in the ``stovepipe.storage.test_servers`` entry-point group yields the URL of
a server that lives for one test session. Where the server's binary is installed, the hook
starts it with :func:`local_server`: on a free loopback port, with its data in a temporary
directory removed afterwards, and with a bounded startup. Process management is mirakuru's
(a dependency of the ``testing`` extra), imported only when a server is started.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirakuru.base import Executor

STARTUP_TIMEOUT = 60.0
"""Seconds a throwaway server has to start answering before its hook gives up."""


class ServerUnavailable(RuntimeError):
    """No throwaway server could be had; the message says what to install or set."""


def find_binary(*names: str) -> str | None:
    """The path of the first of ``names`` found on ``PATH`` or in the sbin directories.

    Server daemons such as ``mariadbd`` live in ``/usr/sbin``, which an unprivileged user's
    ``PATH`` often lacks.
    """
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def _log_tail(log: pathlib.Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def new_executor(
    command: Sequence[str],
    *,
    port: int,
    timeout: float,
    health_path: str | None = None,
    stdout: int | IO[bytes] = subprocess.DEVNULL,
) -> Executor:
    """A mirakuru executor (not started) of ``command``, ready once 127.0.0.1:``port`` accepts
    connections (and ``health_path``, when given, answers 2xx over HTTP), with its output to
    ``stdout`` and ``timeout`` seconds to get there.

    Its process leads a session of its own, as mirakuru's would, but is started without Python
    code between fork and exec: mirakuru's ``preexec_fn`` makes CPython fork the whole process
    and run gRPC's fork handlers in the child, which, once the test process has a gRPC server
    or channel, crash the child (SIGABRT) before it runs the server in a few starts of a
    hundred.

    Raises :class:`ServerUnavailable` if mirakuru is not installed.
    """
    try:
        from mirakuru import HTTPExecutor, TCPExecutor
    except ImportError as error:
        raise ServerUnavailable(
            f"starting a throwaway {pathlib.Path(command[0]).name} needs mirakuru: "
            "pip install 'stovepipe[testing]'"
        ) from error

    def session_leader(kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.pop("preexec_fn", None) is not None:
            kwargs["start_new_session"] = True
        return kwargs

    class SpawnedTCP(TCPExecutor):
        @property
        def _popen_kwargs(self) -> dict[str, Any]:
            return session_leader(super()._popen_kwargs)

    class SpawnedHTTP(HTTPExecutor):
        @property
        def _popen_kwargs(self) -> dict[str, Any]:
            return session_leader(super()._popen_kwargs)

    stdin, stderr = subprocess.DEVNULL, subprocess.STDOUT
    if health_path is None:
        return SpawnedTCP(
            list(command), host="127.0.0.1", port=port, timeout=timeout,
            stdin=stdin, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    return SpawnedHTTP(
        list(command), url=f"http://127.0.0.1:{port}{health_path}", method="GET",
        timeout=timeout, stdin=stdin, stdout=stdout, stderr=stderr,
    )  # fmt: skip


@contextlib.contextmanager
def local_server(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    directory: pathlib.Path,
    health_path: str | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> Iterator[None]:
    """Run ``command`` until the block ends, once it accepts connections on 127.0.0.1:``port``.

    ``health_path``, when given, is an HTTP path that must answer 2xx as well. The server's
    output goes to ``directory/<name>.log``. Raises :class:`ServerUnavailable`, with the log's
    last lines, when the process exits or does not answer within ``timeout`` seconds; the
    process is stopped (SIGTERM, then SIGKILL after ``timeout``) when the block ends.
    """
    log = directory / f"{name}.log"
    with log.open("wb") as output:
        executor = new_executor(
            command, port=port, timeout=timeout, health_path=health_path, stdout=output
        )
        try:
            executor.start()
        except Exception as error:
            with contextlib.suppress(Exception):
                executor.stop()
            raise ServerUnavailable(
                f"{name} ({command[0]}) did not answer on 127.0.0.1:{port} within {timeout:g} s: "
                f"{error}; its log ends:\n{_log_tail(log)}"
            ) from error
        try:
            yield
        finally:
            executor.stop()
