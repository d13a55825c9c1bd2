"""TLS, mutual TLS and bearer tokens on the gRPC listener, end to end (the command line
included), with certificates each test makes; reflection that can be turned off; the one
warning about a listener open to anyone."""

from __future__ import annotations

import hmac
import logging
import os
import pathlib
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from stovepipe import auth, cli
from stovepipe import config as configuration
from stovepipe.client import StovepipeClient, connect
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import open_storage
from stovepipe.testing import (
    Certificates,
    ServeProcesses,
    make_certificates,
    run_cli,
    stovepipe_command,
)
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10.0
INGEST_TOKEN = "ingest-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
BOTH_TOKEN = "both-token-0123456789abcdef"
TOKENS = [
    auth.Token(INGEST_TOKEN, frozenset({"ingest"})),
    auth.Token(READ_TOKEN, frozenset({"read"})),
    auth.Token(BOTH_TOKEN, frozenset({"ingest", "read"})),
]
FAKE_QUEUE = '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n'


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


StartSecure = Callable[..., StovepipeServer]


@pytest.fixture
def start_secure(tmp_path: pathlib.Path) -> Iterator[StartSecure]:
    """``start(tls=None, tokens=(), reflection=True, listen="127.0.0.1:0")``: a started
    server over the queue ``q`` on SQLite; stopped at teardown."""
    started: list[StovepipeServer] = []

    def start(
        *,
        tls: auth.ServerTLS | None = None,
        tokens: tuple[auth.Token, ...] = (),
        reflection: bool = True,
        listen: str = "127.0.0.1:0",
    ) -> StovepipeServer:
        server = StovepipeServer(
            open_storage(f"sqlite:///{tmp_path / f'secure-{len(started)}.db'}"),
            QueueMap({"q": FakeSourceControl(["c1"])}),
            listen=listen,
            max_workers=4,
            metrics=Metrics(process_metrics=False),
            tls=tls,
            tokens=tokens,
            reflection=reflection,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop(0)


def server_tls(certificates: Certificates, *, mutual: bool = False) -> auth.ServerTLS:
    return auth.ServerTLS(
        certificates.server_cert.read_bytes(),
        certificates.server_key.read_bytes(),
        certificates.ca.read_bytes() if mutual else None,
    )


def ingest(channel: grpc.Channel, *, metadata: Any = None) -> pb.IngestResponse:
    response: pb.IngestResponse = StovepipeClient(channel).Ingest(
        pb.IngestRequest(queue="q"), timeout=TIMEOUT, metadata=metadata
    )
    return response


def code_of(call: Callable[..., object], *args: Any) -> grpc.StatusCode:
    """The status code ``call(*args)`` fails with."""
    with pytest.raises(grpc.RpcError) as raised:
        call(*args)
    code: grpc.StatusCode = raised.value.code()
    return code


# --- TLS ---------------------------------------------------------------------------------


def test_a_tls_listener_serves_a_client_that_verifies_it_with_the_ca(
    start_secure: StartSecure, certificates: Certificates
) -> None:
    server = start_secure(tls=server_tls(certificates))
    with connect(server.address, root_certificates=certificates.ca.read_bytes()) as channel:
        assert ingest(channel).id == "request/q/1"


def test_a_tls_listener_refuses_plaintext_and_a_client_that_does_not_trust_it(
    start_secure: StartSecure, certificates: Certificates, tmp_path: pathlib.Path
) -> None:
    server = start_secure(tls=server_tls(certificates))
    with connect(server.address) as plaintext:
        assert code_of(lambda: ingest(plaintext)) == grpc.StatusCode.UNAVAILABLE
    other = make_certificates(tmp_path / "other")
    with connect(server.address, root_certificates=other.ca.read_bytes()) as untrusting:
        assert code_of(lambda: ingest(untrusting)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_serves_a_client_certificate_the_client_ca_signed_and_refuses_others(
    start_secure: StartSecure, certificates: Certificates
) -> None:
    server = start_secure(tls=server_tls(certificates, mutual=True))
    ca = certificates.ca.read_bytes()
    with connect(
        server.address,
        root_certificates=ca,
        certificate_chain=certificates.client_cert.read_bytes(),
        private_key=certificates.client_key.read_bytes(),
    ) as channel:
        assert ingest(channel).id == "request/q/1"
    with connect(server.address, root_certificates=ca) as without_certificate:
        assert code_of(lambda: ingest(without_certificate)) == grpc.StatusCode.UNAVAILABLE
    with connect(
        server.address,
        root_certificates=ca,
        certificate_chain=certificates.rogue_client_cert.read_bytes(),
        private_key=certificates.rogue_client_key.read_bytes(),
    ) as rogue:
        assert code_of(lambda: ingest(rogue)) == grpc.StatusCode.UNAVAILABLE


def tls_config(certificates: Certificates, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "stovepipe.toml"
    path.write_text(f'storage_url = "sqlite:///{tmp_path / "cli.db"}"\n{FAKE_QUEUE}')
    return path


def test_the_cli_talks_mutual_tls_with_ca_cert_and_key_from_flags_or_the_environment(
    processes: ServeProcesses, certificates: Certificates, tmp_path: pathlib.Path
) -> None:
    served = processes.serve(
        [
            "--config",
            str(tls_config(certificates, tmp_path)),
            "--tls-cert",
            str(certificates.server_cert),
            "--tls-key",
            str(certificates.server_key),
            "--tls-client-ca",
            str(certificates.ca),
        ],
        cwd=tmp_path,
    )
    flags = ["--ca", str(certificates.ca), "--cert", str(certificates.client_cert)]
    flags += ["--key", str(certificates.client_key)]
    result = run_cli("ingest", "q", "--server", served.address, *flags)
    assert (result.returncode, result.stdout) == (0, "request/q/1\n"), result.stderr
    environment = {
        cli.CA_ENV: str(certificates.ca),
        cli.CERT_ENV: str(certificates.client_cert),
        cli.KEY_ENV: str(certificates.client_key),
    }
    from_env = run_with_env(["get", "request/q/1", "--server", served.address], environment)
    assert from_env.returncode == 0, from_env.stderr
    assert '"id": "request/q/1"' in from_env.stdout

    without_certificate = run_cli("ping", "--server", served.address, "--ca", str(certificates.ca))
    assert without_certificate.returncode == cli.EXIT_UNREACHABLE
    plaintext = run_cli("ping", "--server", served.address, "--timeout", "3")
    assert plaintext.returncode == cli.EXIT_UNREACHABLE


def test_the_cli_refuses_a_certificate_without_its_key(certificates: Certificates) -> None:
    result = run_cli("ping", "--cert", str(certificates.client_cert))
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr == "stovepipe: --cert and --key go together\n"


def test_the_clis_own_tls_mistakes_are_usage_errors_not_an_unreachable_server(
    certificates: Certificates, tmp_path: pathlib.Path
) -> None:
    """A key that does not match ``--cert``, or a ``--ca`` that holds no certificate, is the
    caller's to fix: exit status 2 and one line naming the flag, before any connection."""
    (tmp_path / "not-a-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n")
    cases = (
        (["--cert", str(certificates.client_cert), "--key", str(certificates.server_key)], "--key"),
        (["--ca", str(tmp_path / "not-a-ca.pem")], "--ca"),
        (["--cert", str(certificates.client_key), "--key", str(certificates.client_key)], "--cert"),
    )
    for flags, named in cases:
        result = run_cli("ping", "--server", "127.0.0.1:1", "--timeout", "3", *flags)
        assert result.returncode == cli.EXIT_USAGE, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"stovepipe: {named} "), result.stderr


def run_with_env(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*stovepipe_command(), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **environment},
    )


def test_tls_settings_come_from_the_file_the_environment_and_flags_relative_to_their_source(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "etc").mkdir()
    config_file = tmp_path / "etc" / "stovepipe.toml"
    config_file.write_text(
        f'tls_cert = "tls.crt"\ntls_key = "tls.key"\ntls_client_ca = "ca.crt"\n{FAKE_QUEUE}'
    )
    loaded = configuration.load(config_file, environ={}, cwd=tmp_path)
    assert loaded.tls_cert == tmp_path / "etc" / "tls.crt"
    assert loaded.tls_client_ca == tmp_path / "etc" / "ca.crt"
    environ = {"STOVEPIPE_TLS_KEY": "/env/tls.key", "STOVEPIPE_TLS_CERT": "/env/tls.crt"}
    loaded = configuration.load(
        config_file, environ=environ, overrides={"tls_cert": "flag.crt"}, cwd=tmp_path
    )
    assert (loaded.tls_cert, loaded.tls_key) == (
        tmp_path / "flag.crt",
        pathlib.Path("/env/tls.key"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tls_cert = "a.crt"\n', "tls_cert and tls_key go together"),
        ('tls_key = "a.key"\n', "tls_cert and tls_key go together"),
        ('tls_client_ca = "ca.crt"\n', "tls_client_ca (mutual TLS) needs tls_cert and tls_key"),
        ("reflection = 3\n", "reflection must be true or false"),
    ],
)
def test_incomplete_tls_settings_are_configuration_errors(
    text: str, message: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "stovepipe.toml"
    path.write_text(text + FAKE_QUEUE)
    with pytest.raises(configuration.ConfigError, match=re.escape(message)):
        configuration.load(path, environ={}, cwd=tmp_path)


def test_an_unreadable_or_non_pem_tls_file_stops_start_up_with_one_line(
    tmp_path: pathlib.Path, certificates: Certificates
) -> None:
    (tmp_path / "not.pem").write_text("hello")
    for cert, expected in (("missing.crt", "cannot read tls_cert"), ("not.pem", "not a PEM")):
        result = run_cli(
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(tls_config(certificates, tmp_path)),
            "--tls-cert",
            cert,
            "--tls-key",
            str(certificates.server_key),
            cwd=tmp_path,
        )
        assert result.returncode == cli.EXIT_USAGE
        assert expected in result.stderr
        assert result.stderr.count("\n") == 1


def test_a_tls_key_or_certificate_that_cannot_serve_stops_start_up_with_one_line_naming_it(
    tmp_path: pathlib.Path, certificates: Certificates
) -> None:
    """Files that are PEM but cannot serve: a key that does not match the certificate, a key
    or certificate whose PEM body is not one, a client CA that holds no certificate."""
    broken = "-----BEGIN {0}-----\nbm90IGEga2V5\n-----END {0}-----\n"
    (tmp_path / "broken.key").write_text(broken.format("PRIVATE KEY"))
    (tmp_path / "broken.crt").write_text(broken.format("CERTIFICATE"))
    server_cert, server_key = str(certificates.server_cert), str(certificates.server_key)
    cases = (
        (server_cert, str(certificates.client_key), None, "tls_key", "does not match tls_cert"),
        (server_cert, "broken.key", None, "tls_key", "broken.key"),
        ("broken.crt", server_key, None, "tls_cert", "broken.crt"),
        (str(certificates.server_key), server_key, None, "tls_cert", "no certificate"),
        (server_cert, server_key, "broken.crt", "tls_client_ca", "broken.crt"),
    )
    for cert, key, client_ca, setting, detail in cases:
        result = run_cli(
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(tls_config(certificates, tmp_path)),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            *(("--tls-client-ca", client_ca) if client_ca else ()),
            cwd=tmp_path,
        )
        assert result.returncode == cli.EXIT_USAGE, (cert, key, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert setting in result.stderr and detail in result.stderr, result.stderr
        assert "cannot listen" not in result.stderr


# --- tokens ------------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_a_call_without_a_valid_token_is_unauthenticated(start_secure: StartSecure) -> None:
    server = start_secure(tokens=tuple(TOKENS))
    with connect(server.address) as channel:
        client = StovepipeClient(channel)

        def get_queue(metadata: Any) -> object:
            return client.GetQueue(
                pb.GetQueueRequest(queue="q"), timeout=TIMEOUT, metadata=metadata
            )

        def call_ingest(metadata: Any) -> object:
            return ingest(channel, metadata=metadata)

        invalid = (None, bearer("not-a-configured-token-000"), (("authorization", "x"),))
        for metadata in invalid:
            assert code_of(call_ingest, metadata) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(get_queue, metadata) == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_lacking_the_methods_scope_is_permission_denied(
    start_secure: StartSecure,
) -> None:
    server = start_secure(tokens=tuple(TOKENS))
    with connect(server.address) as channel:
        client = StovepipeClient(channel)
        denied = code_of(lambda: ingest(channel, metadata=bearer(READ_TOKEN)))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        assert ingest(channel, metadata=bearer(INGEST_TOKEN)).id == "request/q/1"
        reads: list[Callable[[Any], object]] = [
            lambda m: client.GetQueue(pb.GetQueueRequest(queue="q"), timeout=TIMEOUT, metadata=m),
            lambda m: client.GetRequest(
                pb.GetRequestRequest(id="request/q/1"), timeout=TIMEOUT, metadata=m
            ),
            lambda m: client.ListRequests(
                pb.ListRequestsRequest(queue="q"), timeout=TIMEOUT, metadata=m
            ),
        ]
        for read in reads:
            assert code_of(read, bearer(INGEST_TOKEN)) == grpc.StatusCode.PERMISSION_DENIED
            read(bearer(READ_TOKEN))
            read(bearer(BOTH_TOKEN))
        assert ingest(channel, metadata=bearer(BOTH_TOKEN)).id == "request/q/1"


def test_ping_and_health_stay_open_for_probes_and_reflection_needs_the_read_scope(
    start_secure: StartSecure,
) -> None:
    server = start_secure(tokens=tuple(TOKENS))
    with connect(server.address) as channel:
        StovepipeClient(channel).Ping(pb.PingRequest(), timeout=TIMEOUT)
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        def list_services(metadata: Any = None) -> list[Any]:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            return list(
                stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT, metadata=metadata)
            )

        assert code_of(list_services) == grpc.StatusCode.UNAUTHENTICATED
        (listed,) = list_services(bearer(READ_TOKEN))
        names = {s.name for s in listed.list_services_response.service}
        assert "stovepipe.v1.Stovepipe" in names


def test_tokens_are_compared_in_constant_time_against_every_configured_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    interceptor = auth.TokenAuthInterceptor(TOKENS)
    for presented in (INGEST_TOKEN, BOTH_TOKEN, "x", "y" * 200):
        compared.clear()
        interceptor.scopes_of(presented)
        # Every token, whatever matched; fixed-length digests, whatever was presented.
        assert len(compared) == len(TOKENS)
        assert {len(a) for a, _ in compared} | {len(b) for _, b in compared} == {32}
    assert interceptor.scopes_of(BOTH_TOKEN) == frozenset({"ingest", "read"})
    assert interceptor.scopes_of(INGEST_TOKEN[:-1]) is None


def test_the_cli_sends_the_token_from_a_file_or_the_environment(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# scopes  token\ningest {INGEST_TOKEN}\n")
    config_file = tmp_path / "stovepipe.toml"
    config_file.write_text(
        f'storage_url = "sqlite:///{tmp_path / "t.db"}"\ntokens_file = "tokens"\n{FAKE_QUEUE}'
    )
    served = processes.serve(
        ["--config", str(config_file)],
        cwd=tmp_path,
        env={auth.TOKENS_ENV: f"read {READ_TOKEN}"},
    )
    ingest_token_file = tmp_path / "ingest.token"
    ingest_token_file.write_text(INGEST_TOKEN + "\n")
    result = run_cli(
        "ingest", "q", "--server", served.address, "--token-file", str(ingest_token_file)
    )
    assert (result.returncode, result.stdout) == (0, "request/q/1\n"), result.stderr
    from_env = run_with_env(
        ["status", "q", "--server", served.address], {cli.TOKEN_ENV: READ_TOKEN}
    )
    assert from_env.returncode == 0, from_env.stderr
    assert "request/q/1" in from_env.stdout

    missing = run_cli("ingest", "q", "--server", served.address)
    assert missing.returncode == cli.EXIT_SERVER_ERROR
    assert missing.stderr.startswith("stovepipe: UNAUTHENTICATED: ")
    wrong_scope = run_with_env(
        ["ingest", "q", "--server", served.address], {cli.TOKEN_ENV: READ_TOKEN}
    )
    assert wrong_scope.returncode == cli.EXIT_SERVER_ERROR
    assert wrong_scope.stderr.startswith("stovepipe: PERMISSION_DENIED: ")
    assert run_cli("ping", "--server", served.address).returncode == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"write {INGEST_TOKEN}", "unknown scope(s) write"),
        ("ingest short", "at least 16 characters"),
        (f"{INGEST_TOKEN}", "expected SCOPE[,SCOPE...] TOKEN"),
        (f"ingest {INGEST_TOKEN}\nread {INGEST_TOKEN}", "entry 2: the token is given twice"),
    ],
)
def test_a_malformed_token_entry_is_a_configuration_error_that_never_shows_a_token(
    text: str, message: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "tokens").write_text(text)
    (tmp_path / "stovepipe.toml").write_text(f'tokens_file = "tokens"\n{FAKE_QUEUE}')
    with pytest.raises(configuration.ConfigError) as raised:
        configuration.load(tmp_path / "stovepipe.toml", environ={}, cwd=tmp_path)
    assert message in str(raised.value)
    assert INGEST_TOKEN not in str(raised.value)
    with pytest.raises(configuration.ConfigError) as raised:
        configuration.load(environ={auth.TOKENS_ENV: text.replace("\n", ";")}, cwd=tmp_path)
    assert INGEST_TOKEN not in str(raised.value)


def test_tokens_come_from_the_file_and_the_environment_and_no_repr_shows_them(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "tokens").write_text(f"ingest,read {BOTH_TOKEN}  # the poller\n\n")
    (tmp_path / "stovepipe.toml").write_text(f'tokens_file = "tokens"\n{FAKE_QUEUE}')
    loaded = configuration.load(
        tmp_path / "stovepipe.toml",
        environ={auth.TOKENS_ENV: f"read {READ_TOKEN}; ingest {INGEST_TOKEN}"},
        cwd=tmp_path,
    )
    assert [(t.value, t.scopes) for t in loaded.tokens] == [
        (BOTH_TOKEN, frozenset({"ingest", "read"})),
        (READ_TOKEN, frozenset({"read"})),
        (INGEST_TOKEN, frozenset({"ingest"})),
    ]
    for token in (BOTH_TOKEN, READ_TOKEN, INGEST_TOKEN):
        assert token not in repr(loaded)


def test_the_tokens_variable_never_reaches_a_build() -> None:
    assert auth.TOKENS_ENV in configuration.ENVIRONMENT_VARIABLES
    assert auth.TOKENS_ENV.startswith("STOVEPIPE_")  # builds get no STOVEPIPE_* variable


# --- reflection, the exposure warning ----------------------------------------------------


def test_reflection_false_turns_reflection_off(start_secure: StartSecure) -> None:
    server = start_secure(reflection=False)
    with connect(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        code = code_of(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert ingest(channel).id == "request/q/1"


def test_reflection_setting_reads_from_file_and_environment(tmp_path: pathlib.Path) -> None:
    (tmp_path / "stovepipe.toml").write_text(f"reflection = false\n{FAKE_QUEUE}")
    assert not configuration.load(tmp_path / "stovepipe.toml", environ={}, cwd=tmp_path).reflection
    on = configuration.load(
        tmp_path / "stovepipe.toml", environ={"STOVEPIPE_REFLECTION": "true"}, cwd=tmp_path
    )
    assert on.reflection


def test_listening_beyond_loopback_without_tls_or_tokens_is_warned_about_once(
    start_secure: StartSecure, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stovepipe.server")
    start_secure(listen="0.0.0.0:0")
    warnings = [r for r in caplog.records if "neither TLS nor tokens" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    start_secure(listen="127.0.0.1:0")
    start_secure(listen="localhost:0")
    start_secure(listen="0.0.0.0:0", tokens=tuple(TOKENS))
    start_secure(listen="0.0.0.0:0", tls=server_tls(certificates))
    assert not [r for r in caplog.records if "neither TLS nor tokens" in r.getMessage()]


@pytest.mark.parametrize("port_only", ["9464", ":9464"])
def test_a_metrics_port_alone_binds_loopback_only(port_only: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / "stovepipe.toml").write_text(f'metrics_listen = "{port_only}"\n{FAKE_QUEUE}')
    loaded = configuration.load(tmp_path / "stovepipe.toml", environ={}, cwd=tmp_path)
    assert loaded.metrics_listen == "127.0.0.1:9464"
    from_env = configuration.load(
        tmp_path / "stovepipe.toml", environ={"STOVEPIPE_METRICS_LISTEN": "0.0.0.0:1"}, cwd=tmp_path
    )
    assert from_env.metrics_listen == "0.0.0.0:1"  # a host is what exposes it further


def test_the_cli_connects_with_tls_to_an_https_server_verified_by_the_ca_or_the_system(
    start_secure: StartSecure, certificates: Certificates
) -> None:
    server = start_secure(tls=server_tls(certificates))
    https = ["--server", f"https://{server.address}", "--timeout", "5"]
    verified = run_cli("ping", *https, "--ca", str(certificates.ca))
    assert verified.returncode == 0, verified.stderr
    assert f"at {server.address}" in verified.stdout
    # The system's trusted CAs do not know this test's CA.
    assert run_cli("ping", *https).returncode == cli.EXIT_UNREACHABLE
