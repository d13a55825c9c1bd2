"""No secret in any log line or error: a scenario with a secret in every URL and option.

The server runs on a private Redis over mutual TLS (a password in the URL, an encrypted
client key whose passphrase is ``ssl_password``, the messaging queue following it), with
bearer tokens, at log level ``debug``; the command line ingests, reads, is refused, polls.
Then every way start-up, ``worker`` and ``migrate`` fail with secrets in their URLs. Every
line any of them writes (the server's log, each command's stdout and stderr) is searched for
every secret, as written and percent-decoded.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from stovepipe import auth, cli
from stovepipe.conformance.plugin import in_ci
from stovepipe.testing import ServeProcesses, make_certificates, stovepipe_command

REDIS_PASSWORD = "Redis!pw-2f8c1e"
KEY_PASSPHRASE = "Key phrase/7d3a9b"
MYSQL_PASSWORD = "My@SQL-pw-4b6e0a"
ETCD_PASSWORD = "Etcd:pw-9a1c5f"
INGEST_TOKEN = "ingest-secret-token-5e2d7c9a"
READ_TOKEN = "read-secret-token-8f4b2a6d"
WRONG_TOKEN = "wrong-secret-token-1a2b3c4d"
SECRETS = (
    REDIS_PASSWORD,
    KEY_PASSPHRASE,
    MYSQL_PASSWORD,
    ETCD_PASSWORD,
    INGEST_TOKEN,
    READ_TOKEN,
    WRONG_TOKEN,
)
FAKE_QUEUE = '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n[queues."q".build]\ntype = "fake"\n'
q = urllib.parse.quote


def forms(secret: str) -> set[str]:
    """A secret as it may appear: as is, and percent-encoded both ways."""
    return {secret, q(secret, safe=""), urllib.parse.quote_plus(secret)}


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            leaks = [line for line in text.splitlines() if form in line]
            assert not leaks, f"{where} shows a secret ({secret[:3]}...) in:\n" + "\n".join(leaks)


def free_port() -> int:
    """A free port in the range these tests' own servers use."""
    for port in range(53000 + os.getpid() % 500, 54000):
        with contextlib.suppress(OSError), socket.create_server(("127.0.0.1", port)):
            return port
    raise RuntimeError("no free port in 53000-53999")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``redis-server``: TLS only, client certificates required, a password.
    Yields its ``rediss://`` URL with every secret in it."""
    pytest.importorskip("stovepipe_redis")
    if shutil.which("redis-server") is None:
        reason = "the secrets scenario needs redis-server on PATH"
        pytest.fail(reason) if in_ci() else pytest.skip(reason)
    directory = tmp_path_factory.mktemp("secrets-redis")
    certificates = make_certificates(directory, key_passphrase=KEY_PASSPHRASE)
    port = free_port()
    server = subprocess.Popen(
        [
            *("redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port)),
            *("--dir", str(directory), "--save", "", "--appendonly", "no"),
            *("--tls-cert-file", str(certificates.server_cert)),
            *("--tls-key-file", str(certificates.server_key)),
            *("--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", "yes"),
            *("--requirepass", REDIS_PASSWORD),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the private redis-server did not start ({server.poll()})")
                time.sleep(0.05)
        options = {
            "ssl_ca_certs": certificates.ca,
            "ssl_certfile": certificates.client_cert,
            "ssl_keyfile": certificates.client_key,
            "ssl_password": KEY_PASSPHRASE,
            "prefix": f"secrets-{uuid.uuid4().hex[:8]}:",
        }
        query = urllib.parse.urlencode({name: str(value) for name, value in options.items()})
        yield f"rediss://:{q(REDIS_PASSWORD, safe='')}@127.0.0.1:{port}/0?{query}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(
    args: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STOVEPIPE_")}
    return subprocess.run(
        [*stovepipe_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_no_secret_reaches_a_log_line_or_an_error_in_a_scenario_with_secrets_everywhere(
    tls_redis: str, processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    outputs: dict[str, str] = {}
    (tmp_path / "tokens").write_text(f"ingest {INGEST_TOKEN}\n")
    (tmp_path / "stovepipe.toml").write_text(
        f'log_level = "debug"\ntokens_file = "tokens"\n{FAKE_QUEUE}'
    )
    config = ["--config", str(tmp_path / "stovepipe.toml")]
    served = processes.serve(
        [*config, "--storage-url", tls_redis],
        cwd=tmp_path,
        env={auth.TOKENS_ENV: f"read {READ_TOKEN}"},
    )
    server = ["--server", served.address]
    token_file = tmp_path / "ingest.token"
    token_file.write_text(INGEST_TOKEN)
    ingested = run(["ingest", "q", *server, "--token-file", str(token_file)], tmp_path)
    assert ingested.stdout == "request/q/1\n", ingested.stderr
    read_env = {cli.TOKEN_ENV: READ_TOKEN}
    green_deadline = time.monotonic() + 30
    while run(["green", "q", *server], tmp_path, read_env).returncode != 0:
        assert time.monotonic() < green_deadline, served.output()
        time.sleep(0.2)
    calls = {
        "status": (["status", "q", *server, "--json"], read_env),
        "wrong token": (["ingest", "q", *server], {cli.TOKEN_ENV: WRONG_TOKEN}),
        "wrong scope": (["ingest", "q", *server], read_env),
        "no token": (["get", "request/q/1", *server], None),
        "bad token file": (["ping", *server, "--token-file", str(tmp_path / "none")], None),
        "spaced token": (["ping", *server], {cli.TOKEN_ENV: f"{READ_TOKEN} {INGEST_TOKEN}"}),
    }
    for name, (args, env) in calls.items():
        result = run(args, tmp_path, env)
        outputs[f"{name}: stdout"], outputs[f"{name}: stderr"] = result.stdout, result.stderr
    assert "UNAUTHENTICATED" in outputs["wrong token: stderr"]
    assert "PERMISSION_DENIED" in outputs["wrong scope: stderr"]

    poll_log = tmp_path / "poll.stderr"
    with poll_log.open("w", encoding="utf-8") as poll_stderr:
        poller = subprocess.Popen(
            [*stovepipe_command(), "poll", "q", "--every", "0.2", "--server", "127.0.0.1:1"],
            env={**os.environ, cli.TOKEN_ENV: INGEST_TOKEN},
            stdout=subprocess.PIPE,
            stderr=poll_stderr,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        # Stopped once it has said it retries: how long the CLI takes to start is the
        # machine's, and a poller stopped before its first attempt says nothing.
        poll_deadline = time.monotonic() + 30
        while "retrying" not in poll_log.read_text(encoding="utf-8"):
            if poller.poll() is not None or time.monotonic() > poll_deadline:
                poller.kill()
                break
            time.sleep(0.05)
        poller.send_signal(signal.SIGTERM)
        outputs["poll: stdout"], _ = poller.communicate(timeout=20)
    outputs["poll: stderr"] = poll_log.read_text(encoding="utf-8")
    assert "retrying" in outputs["poll: stderr"]

    assert served.stop() == 0
    outputs["server log"] = served.output()
    assert "is green at" in outputs["server log"]
    assert "ssl_password=***" in outputs["server log"]
    for where, text in outputs.items():
        assert_no_secret(where, text)


def failing_urls(tls_redis: str) -> dict[str, str]:
    """Storage URLs that fail to open, each holding secrets."""
    mysql = os.environ.get("STOVEPIPE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/stovepipe_test")
    mysql_parts = urllib.parse.urlsplit(mysql)
    mysql_wrong = mysql_parts._replace(
        netloc=f"{mysql_parts.username or 'root'}:{q(MYSQL_PASSWORD, safe='')}@"
        f"{mysql_parts.hostname}:{mysql_parts.port or 3306}"
    ).geturl()
    wrong_password = tls_redis.replace(q(REDIS_PASSWORD, safe=""), q(ETCD_PASSWORD, safe=""))
    wrong_passphrase = tls_redis.replace(
        urllib.parse.quote_plus(KEY_PASSPHRASE), urllib.parse.quote_plus(ETCD_PASSWORD)
    )
    assert wrong_password != tls_redis and wrong_passphrase != tls_redis
    return {
        "redis wrong password": wrong_password,
        "redis wrong passphrase": wrong_passphrase,
        "redis unknown option": tls_redis + "&bogus=1",
        "redis closed port": f"redis://:{q(REDIS_PASSWORD, safe='')}@127.0.0.1:1/0?timeout=1",
        "mysql wrong password": mysql_wrong,
        "mysql bad timeout": mysql_wrong + "?timeout=soon",
        "mysql unknown option": f"{mysql_wrong}?ssl_password={q(KEY_PASSPHRASE)}",
        "etcd closed port": f"etcd://root:{q(ETCD_PASSWORD, safe='')}@127.0.0.1:1?timeout=1",
        "etcd unknown option": f"etcd://root:{q(ETCD_PASSWORD)}@h?token={INGEST_TOKEN}",
        "unknown scheme": f"nosuch://u:{q(MYSQL_PASSWORD, safe='')}@h/?secret={READ_TOKEN}",
        "no scheme": f"//u:{q(MYSQL_PASSWORD, safe='')}@h/",
    }


def test_no_secret_reaches_the_error_of_a_failed_start_worker_or_migration(
    tls_redis: str, processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "stovepipe.toml").write_text(FAKE_QUEUE)
    config = ["--config", str(tmp_path / "stovepipe.toml")]
    sqlite = f"sqlite:///{tmp_path / 'ok.db'}"
    failures: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, url in failing_urls(tls_redis).items():
        listen = ["--listen", "127.0.0.1:0"]
        failures[f"serve, storage {name}"] = run(
            ["serve", *config, *listen, "--storage-url", url], tmp_path
        )
    for name, url in {
        "memory with a password": f"memory://u:{q(REDIS_PASSWORD, safe='')}@h/",
        "sqlite with a host": f"sqlite://u:{q(REDIS_PASSWORD, safe='')}@h/x.db",
    }.items():
        failures[f"serve, queue {name}"] = run(
            [
                "serve",
                *config,
                "--listen",
                "127.0.0.1:0",
                "--storage-url",
                sqlite,
                "--messaging-url",
                url,
            ],
            tmp_path,
        )
    failures["worker, storage mysql wrong password"] = run(
        ["worker", *config, "--storage-url", failing_urls(tls_redis)["mysql wrong password"]],
        tmp_path,
    )
    failures["migrate mysql wrong password"] = run(
        ["migrate", failing_urls(tls_redis)["mysql wrong password"]], tmp_path
    )
    failures["migrate unknown scheme"] = run(
        ["migrate", failing_urls(tls_redis)["unknown scheme"]], tmp_path
    )
    failures["tokens file with a bad entry"] = run(
        ["serve", *config, "--listen", "127.0.0.1:0", "--storage-url", sqlite],
        tmp_path,
        {auth.TOKENS_ENV: f"write {INGEST_TOKEN}; read {READ_TOKEN} {WRONG_TOKEN}"},
    )
    # Start-up checks the messaging queue: the wrong password stops it with one line.
    wrong_queue = failing_urls(tls_redis)["redis wrong password"]
    listen = ["--listen", "127.0.0.1:0", "--storage-url", sqlite, "--messaging-url", wrong_queue]
    failures["serve, queue redis wrong password"] = run(["serve", *config, *listen], tmp_path)
    assert "access denied" in failures["serve, queue redis wrong password"].stderr
    for name, result in failures.items():
        assert result.returncode != 0, f"{name} did not fail:\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr}"
        assert_no_secret(f"{name}: stderr", result.stderr)
        assert_no_secret(f"{name}: stdout", result.stdout)
