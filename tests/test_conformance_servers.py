"""Test servers for a run: the environment's URL, else a throwaway server, else one line saying
what to install (a failed run under ``CI``).

Each test runs pytest in a child process on a small test file that asks the conformance
plugin for servers, so the plugin's session start and end are the real ones.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from stovepipe.conformance.plugin import unreachable, url_variable
from stovepipe.conformance.servers import find_binary, free_port, new_executor

ASKS_FOR = """
import pathlib
from stovepipe.conformance.plugin import server_url

def test_one(request):
    url = server_url(request.config, {engine!r})
    with pathlib.Path({record!r}).open("a") as record:
        record.write(url + "\\n")

def test_two(request):
    url = server_url(request.config, {engine!r})
    with pathlib.Path({record!r}).open("a") as record:
        record.write(url + "\\n")
"""


def _hooks(site: pathlib.Path) -> None:
    """Register, in ``site``, a test-server hook for the engine ``nodb`` that always fails."""
    package = site / "nodb_hook.py"
    site.mkdir(parents=True)
    package.write_text(
        "import contextlib\n"
        "from stovepipe.conformance.servers import ServerUnavailable\n"
        "@contextlib.contextmanager\n"
        "def start():\n"
        "    raise ServerUnavailable('install nodb-server (apt-get install nodb-server)')\n"
        "    yield ''\n"
    )
    dist_info = site / "nodb_hook-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: nodb-hook\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(
        "[stovepipe.storage.test_servers]\nnodb = nodb_hook:start\n"
    )


def _run(
    tmp_path: pathlib.Path, engine: str, *, ci: bool, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the two-test file asking for ``engine``'s server; the result and the URLs it got."""
    record = tmp_path / "urls.txt"
    test_file = tmp_path / "test_asks.py"
    test_file.write_text(ASKS_FOR.format(engine=engine, record=str(record)))
    site = tmp_path / "site"
    _hooks(site)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("STOVEPIPE_TEST_") and name != "CI"
    }
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(test_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    urls = record.read_text().split() if record.exists() else []
    return result, urls


def _summary_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("stovepipe: ")]


def test_an_engine_without_a_test_server_is_one_summary_line_naming_what_to_install(
    tmp_path: pathlib.Path,
) -> None:
    result, urls = _run(tmp_path, "nodb", ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert urls == []
    assert "2 skipped" in result.stdout
    (line,) = _summary_lines(result.stdout)
    assert "nodb" in line and "apt-get install nodb-server" in line
    assert url_variable("nodb") in line


def test_under_ci_an_engine_without_a_test_server_fails_the_run(tmp_path: pathlib.Path) -> None:
    result, urls = _run(tmp_path, "nodb", ci=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert urls == []
    assert "2 failed" in result.stdout
    (line,) = _summary_lines(result.stdout)
    assert "failed (CI is set)" in line and "apt-get install nodb-server" in line


def test_an_engine_no_backend_starts_says_to_set_its_url(tmp_path: pathlib.Path) -> None:
    result, _ = _run(tmp_path, "unheardof", ci=False)
    (line,) = _summary_lines(result.stdout)
    assert url_variable("unheardof") in line


def test_the_environment_url_wins_over_a_throwaway_server(tmp_path: pathlib.Path) -> None:
    given = "nodb://example.invalid:1/given"
    result, urls = _run(tmp_path, "nodb", ci=True, extra_env={url_variable("nodb"): given})
    assert result.returncode == 0, result.stdout + result.stderr
    assert urls == [given, given]
    assert _summary_lines(result.stdout) == []


def test_a_throwaway_server_starts_once_per_session_and_stops_when_the_run_ends(
    tmp_path: pathlib.Path,
) -> None:
    if find_binary("redis-server") is None:
        unreachable("redis-server is not installed: this test starts one")
    result, urls = _run(tmp_path, "redis", ci=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(urls) == 2 and urls[0] == urls[1], urls
    host, port = urls[0].split("//")[1].split("/")[0].split(":")
    assert host == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()


def test_throwaway_servers_start_without_python_code_between_fork_and_exec() -> None:
    for health_path in (None, "/health"):
        executor = new_executor(["true"], port=free_port(), timeout=1, health_path=health_path)
        kwargs = executor._popen_kwargs
        assert "preexec_fn" not in kwargs, type(executor).__mro__
        assert kwargs["start_new_session"] is True, "the server leads a session of its own"


def test_throwaway_servers_start_while_the_test_process_runs_grpc() -> None:
    # A child forked with Python code to run before exec runs gRPC's fork handlers too, and
    # while the parent has a gRPC server and channel those crash the child (SIGABRT) before
    # exec now and then: 13-22 children of 400, measured. Started as the executor starts
    # them, all 400 exit 0.
    kwargs = new_executor(["true"], port=free_port(), timeout=1)._popen_kwargs
    kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    server = grpc.server(futures.ThreadPoolExecutor(1))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            crashed = []
            for _ in range(400):
                child = subprocess.run(["true"], check=False, timeout=30, **kwargs)
                if child.returncode != 0:
                    crashed.append((child.returncode, child.stdout[-200:]))
    finally:
        server.stop(grace=None)
    assert not crashed, crashed
