"""The ``stovepipe`` command: client commands (status and green included), one-line failures,
the poller, migrate."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

import stovepipe
from stovepipe import cli
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.entity import BuildStatus
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.testing import Running, StartServer, run_cli, stovepipe_command
from stovepipe.v1 import stovepipe_pb2 as pb

CLOSED_PORT = "127.0.0.1:1"  # nothing listens on port 1 without privileges
FAKE_CONFIG = 'storage_url = "sqlite:///{db}"\n[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n'


def test_an_unreachable_server_is_a_one_line_error_and_exit_status_3() -> None:
    result = run_cli("ingest", "q", "--server", CLOSED_PORT, "--timeout", "5")
    assert result.returncode == cli.EXIT_UNREACHABLE
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"stovepipe: cannot reach server at {CLOSED_PORT}")


@pytest.mark.parametrize(
    "command",
    [["ping"], ["get", "request/q/1"], ["ingest", "q"], ["status", "q"], ["green", "q"]],
)
def test_every_client_command_reports_an_unreachable_server_without_a_traceback(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command, "--server", CLOSED_PORT]) == cli.EXIT_UNREACHABLE
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "--server", "no-port"], "--server must be HOST:PORT"),
        (["serve", "--listen", "nonsense"], "listen must be HOST:PORT"),
        (["serve", "--config", "/nonexistent/stovepipe.toml"], "cannot read config"),
        (["migrate", "nosuch://x"], "no storage backend serves"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_status_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository: explicit settings are checked first
    assert cli.main(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_server_errors_are_one_line_with_the_status_and_exit_status_1(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])})
    assert cli.main(["ingest", "unknown", "--server", running.address]) == cli.EXIT_SERVER_ERROR
    assert capsys.readouterr().err == "stovepipe: NOT_FOUND: unknown queue 'unknown'\n"
    assert cli.main(["ingest", "", "--server", running.address]) == cli.EXIT_SERVER_ERROR
    assert capsys.readouterr().err == "stovepipe: INVALID_ARGUMENT: queue is empty\n"


def test_ingest_prints_the_id_and_get_prints_the_request_as_json(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server({"q": FakeSourceControl(["c1"], name="q")})
    assert cli.main(["ingest", "q", "--server", running.address]) == 0
    assert capsys.readouterr().out == "request/q/1\n"
    assert cli.main(["get", "request/q/1", "--server", running.address]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "id": "request/q/1",
        "queue": "q",
        "uri": "fake://q/c1",
        "state": "accepted",
        "version": 1,
        "build_strategy": "",
        "base_uri": "",
    }


def test_ping_prints_the_server_version(
    start_server: StartServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server({})
    monkeypatch.setenv(cli.SERVER_ENV, running.address)  # the default --server
    assert cli.main(["ping"]) == 0
    assert capsys.readouterr().out.startswith(
        f"stovepipe {stovepipe.__version__} at {running.address} ("
    )


def test_migrate_says_so_when_a_backend_needs_no_migration(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    assert cli.main(["migrate", f"sqlite:///{tmp_path / 'x.db'}"]) == 0
    assert (
        capsys.readouterr().out
        == "sqlite:// needs no migration: it prepares its schema when opened\n"
    )


@pytest.mark.parametrize("url", ["memory://", "redis://127.0.0.1:1/0", "etcd://127.0.0.1:1"])
def test_migrate_of_a_backend_without_a_schema_says_only_that_it_needs_no_migration(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from stovepipe.storage import installed_schemes

    scheme = url.split(":", 1)[0]
    if scheme not in installed_schemes():
        pytest.skip(f"{scheme}:// backend not installed")
    assert cli.main(["migrate", url]) == 0
    assert capsys.readouterr().out == f"{scheme}:// needs no migration\n"


@pytest.mark.parametrize(
    ("command", "option", "text"),
    [
        ("ingest", "--timeout", "seconds per call (default 10)"),
        ("poll", "--timeout", "seconds per call (default 10)"),
        ("poll", "--every", "seconds between ingests"),
    ],
)
def test_help_says_what_each_option_counts_in_seconds(
    command: str, option: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{option} SECONDS {text}" in help_text


def wait_for(log: pathlib.Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never logged:\n{log.read_text()}")
        time.sleep(0.02)


def test_poll_logs_new_ids_keeps_going_through_unavailable_and_stops_on_sigint(
    start_server: StartServer, tmp_path: pathlib.Path
) -> None:
    source = FakeSourceControl(["c1"], name="q")
    storage_url = f"sqlite:///{tmp_path / 'poll.db'}"
    running = start_server({"q": source}, storage_url=storage_url)
    address = running.address
    log = tmp_path / "poll.log"
    with log.open("wb") as sink:
        poller = subprocess.Popen(
            [
                *stovepipe_command(),
                "poll",
                "q",
                "--every",
                "0.05",
                "--server",
                address,
                "--timeout",
                "2",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(log, "new request request/q/1 at fake://q/c1")
        source.push("c2")
        wait_for(log, "new request request/q/2")

        running.stop()
        wait_for(log, f"cannot reach server at {address}")
        assert poller.poll() is None  # still polling

        start_server({"q": source}, storage_url=storage_url, listen=address)
        source.push("c3")
        wait_for(log, "new request request/q/3")

        poller.send_signal(signal.SIGINT)
        assert poller.wait(timeout=10) == 0
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait()
    output = log.read_text()
    assert output.count("new request request/q/2") == 1  # an unchanged head is not re-logged
    assert "Traceback" not in output


def test_poll_stops_with_an_error_on_an_unknown_queue(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server({})
    status = cli.main(["poll", "nope", "--every", "0.05", "--server", running.address])
    assert status == cli.EXIT_SERVER_ERROR
    assert "NOT_FOUND" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_a_one_line_error_and_exit_status_2(
    start_server: StartServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = start_server({}).address
    config = tmp_path / "s.toml"
    config.write_text(FAKE_CONFIG.format(db=tmp_path / "s.db"), encoding="utf-8")
    assert cli.main(["serve", "--config", str(config), "--listen", taken]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"stovepipe: cannot listen on {taken}")
    metrics = ["serve", "--config", str(config), "--metrics-listen", taken]
    assert cli.main([*metrics, "--listen", "127.0.0.1:0"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"stovepipe: cannot serve metrics on {taken}")


def test_serve_on_a_port_in_use_prints_exactly_one_line_and_no_grpc_log(
    start_server: StartServer, tmp_path: pathlib.Path
) -> None:
    """gRPC's C core logs its own bind failure straight to stderr; the command must not."""
    taken = start_server({}).address
    config = tmp_path / "s.toml"
    config.write_text(FAKE_CONFIG.format(db=tmp_path / "s.db"), encoding="utf-8")
    result = run_cli("serve", "--config", str(config), "--listen", taken)
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.splitlines() == [
        f"stovepipe: cannot listen on {taken}: address already in use"
        " (is another stovepipe serve running?)"
    ]


def test_a_start_up_failure_fails_before_the_listener_and_skips_the_shutdown_delay(
    start_server: StartServer, tmp_path: pathlib.Path
) -> None:
    """The metrics port is taken: start-up fails at once, without ``shutdown_delay``'s wait
    for load balancers (none was ever told the server is serving)."""
    taken = start_server({}).address
    delay = 30.0
    config = tmp_path / "s.toml"
    config.write_text(
        f"shutdown_delay = {delay}\n" + FAKE_CONFIG.format(db=tmp_path / "s.db"), encoding="utf-8"
    )
    started = time.monotonic()
    result = run_cli(
        "serve",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        taken,
        timeout=2 * delay,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.splitlines() == [
        f"stovepipe: cannot serve metrics on {taken}: Address already in use"
    ], result.stderr
    assert elapsed < delay / 2, elapsed


def test_an_unavailable_answer_from_the_server_is_not_an_unreachable_server(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server answered, UNAVAILABLE with its own retry hint (here: it is shutting down):
    exit status 1 with the server's words, not 3 "cannot reach server"."""
    running = start_server({})
    running.server._gate.close()  # refuses every call from now on, as in a shutdown
    status = cli.main(["ping", "--server", running.address, "--timeout", "5"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_SERVER_ERROR, err
    assert err == "stovepipe: UNAVAILABLE: the server is shutting down; retry\n"


@pytest.mark.parametrize(
    ("command", "flag"),
    [("ping", "--token"), ("ingest", "--token"), ("worker", "--mes"), ("serve", "--met")],
)
def test_an_abbreviated_flag_is_refused_not_read_as_a_longer_one(command: str, flag: str) -> None:
    """``--token X`` is no ``--token-file X`` (argparse would read a unique prefix so)."""
    result = run_cli(*command.split(), flag, "x")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert f"unrecognized arguments: {flag}" in result.stderr


def test_migrate_runs_the_migration_a_backend_registers_for_its_scheme(
    tmp_path: pathlib.Path,
) -> None:
    """A distribution on the path registers a backend and its migration under the entry-point
    groups; ``stovepipe migrate`` finds it by the URL's scheme and calls it with the URL."""
    (tmp_path / "kvmigrate.py").write_text(
        "def open_backend(url):\n    raise NotImplementedError\n\n"
        "def migrate(url):\n    print('migrating', url)\n",
        encoding="utf-8",
    )
    dist_info = tmp_path / "kvmigrate-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: kvmigrate\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[stovepipe.storage]\nkv = kvmigrate:open_backend\n\n"
        "[stovepipe.storage.migrations]\nkv = kvmigrate:migrate\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [*stovepipe_command(), "migrate", "kv://db.internal/stovepipe"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "migrating kv://db.internal/stovepipe\nkv:// migrated\n"


# Python hands an argument that is not valid UTF-8 over with surrogate escapes ("\xff" -> "\udcff").
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "command",
    [
        ["ingest", NOT_UTF8],
        ["get", NOT_UTF8],
        ["poll", NOT_UTF8, "--every", "1"],
        ["status", NOT_UTF8],
        ["green", NOT_UTF8],
    ],
)
def test_an_argument_that_is_not_valid_utf8_is_a_one_line_error_and_exit_status_2(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command, "--server", CLOSED_PORT]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err
    assert err.count("\n") == 1


def test_a_raw_byte_argument_from_the_shell_is_a_one_line_error_and_exit_status_2() -> None:
    result = run_cli("ingest", NOT_UTF8, "--server", CLOSED_PORT)  # passed as the byte 0xff
    assert result.returncode == cli.EXIT_USAGE
    (line,) = result.stderr.strip().splitlines()
    assert "not valid UTF-8" in line


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


@pytest.fixture
def green_then_red(start_pipeline: Callable[..., Running]) -> Running:
    """A server whose queue ``q`` has a green first commit and a red second one, recorded."""
    source = FakeSourceControl(["c1"], name="q")
    runner = FakeBuildRunner(outcomes={"fake://q/c2": BuildStatus.FAILED})
    running = start_pipeline({"q": source, "idle": FakeSourceControl(["c1"])}, {"q": runner})
    client = running.client

    def state(request_id: str) -> int:
        response = client.GetRequest(pb.GetRequestRequest(id=request_id), timeout=10)
        return int(response.request.state)

    def queue() -> pb.Queue:
        return client.GetQueue(pb.GetQueueRequest(queue="q"), timeout=10).queue

    client.Ingest(pb.IngestRequest(queue="q"), timeout=10)
    wait_until(lambda: queue().last_green_uri == "fake://q/c1", "c1 is green")
    source.push("c2")
    client.Ingest(pb.IngestRequest(queue="q"), timeout=10)
    wait_until(lambda: state("request/q/2") == pb.REQUEST_STATE_FAILED, "c2 is red")
    return running


def test_status_prints_the_last_green_commit_the_slots_in_flight_and_the_newest_requests(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "q", "--server", green_then_red.address]) == 0
    assert capsys.readouterr().out == (
        "queue       q\n"
        "last green  fake://q/c1 (request/q/1)\n"
        "in flight   0\n"
        "\n"
        "REQUEST      STATE      BUILD        COMMIT\n"
        "request/q/2  failed     incremental  fake://q/c2\n"
        "request/q/1  succeeded  full         fake://q/c1\n"
    )


def test_status_limit_shows_only_the_newest_requests(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "q", "--limit", "1", "--server", green_then_red.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("REQUEST")
    assert lines[-1].startswith("request/q/2 ")


def test_status_json_is_one_line_for_scripts(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "q", "--json", "--server", green_then_red.address]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    document = json.loads(out)
    assert {key: value for key, value in document.items() if key != "requests"} == {
        "queue": "q",
        "latest_request_id": "request/q/2",
        "last_green_uri": "fake://q/c1",
        "last_green_request_id": "request/q/1",
        "in_flight": 0,
    }
    assert [
        (r["id"], r["state"], r["build_strategy"], r["base_uri"]) for r in document["requests"]
    ] == [
        ("request/q/2", "failed", "incremental", "fake://q/c1"),
        ("request/q/1", "succeeded", "full", ""),
    ]


def test_status_of_a_queue_never_ingested_says_so(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "idle", "--server", green_then_red.address]) == 0
    assert capsys.readouterr().out == (
        "queue       idle\nlast green  none yet\nin flight   0\n\nno requests yet\n"
    )


def test_green_prints_the_last_green_uri(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["green", "q", "--server", green_then_red.address]) == 0
    assert capsys.readouterr().out == "fake://q/c1\n"


def test_green_without_a_green_commit_yet_is_a_one_line_error_and_exit_status_1(
    green_then_red: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["green", "idle", "--server", green_then_red.address]) == cli.EXIT_SERVER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "stovepipe: queue 'idle' has no green commit yet\n"


@pytest.mark.parametrize("command", ["status", "green"])
def test_status_and_green_of_an_unknown_queue_are_not_found_and_exit_status_1(
    start_server: StartServer, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])})
    assert cli.main([command, "nope", "--server", running.address]) == cli.EXIT_SERVER_ERROR
    assert capsys.readouterr().err == "stovepipe: NOT_FOUND: unknown queue 'nope'\n"


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_status_limit_outside_1_to_100_is_a_usage_error_and_exit_status_2(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["status", "q", "--limit", limit, "--server", CLOSED_PORT])
    assert caught.value.code == cli.EXIT_USAGE
    assert "--limit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new", "how"),
    [
        ("--queue-url", "--messaging-url", "flag"),
        ("STOVEPIPE_QUEUE_URL", "STOVEPIPE_MESSAGING_URL", "env"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_former_queue_url_flag_and_variable_still_work_with_a_deprecation_warning(
    old: str, new: str, how: str, command: str, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "s.toml"
    config.write_text(FAKE_CONFIG.format(db=tmp_path / "s.db"), encoding="utf-8")
    # A URL the messaging parser refuses: the old name's value is seen to be the one used.
    url = "sqlite:///q.db?workers=0"
    args = [*stovepipe_command(), command, "--config", str(config)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STOVEPIPE_")}
    if how == "flag":
        args += [old, url]
    else:
        environ[old] = url
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=30, env=environ, cwd=tmp_path
    )
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert result.stderr.splitlines() == [
        f"{old} is deprecated and will be removed: use {new} instead",
        "stovepipe: messaging queue: sqlite messaging URL sqlite:///q.db?workers=0: "
        "option workers must be an integer of at least 1, not '0'",
    ]


def test_the_former_queue_url_flag_beside_the_new_one_is_a_usage_error(
    tmp_path: pathlib.Path,
) -> None:
    both = ["--queue-url", "memory://", "--messaging-url", "memory://"]
    result = run_cli("serve", *both, cwd=tmp_path)
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.splitlines() == [
        "stovepipe: --queue-url and --messaging-url are both given: keep --messaging-url"
    ]
