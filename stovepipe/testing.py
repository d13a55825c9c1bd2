"""Helpers for testing against a real Stovepipe: servers in-process or as processes, git
repositories made with the git CLI. Everything talks over real gRPC channels and sockets."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import grpc

from stovepipe.client import StovepipeClient
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import QueueMap, SourceControl
from stovepipe.storage import open_storage
from stovepipe.storage.sqlite import SQLiteBackend

_SERVING = re.compile(r"stovepipe serving on (\S+)")


@dataclasses.dataclass
class Running:
    """An in-process server on 127.0.0.1 and a client connected to it."""

    server: StovepipeServer
    channel: grpc.Channel
    client: StovepipeClient
    storage_url: str

    @property
    def address(self) -> str:
        """``HOST:PORT`` the server listens on."""
        return self.server.address

    def stop(self, grace: float = 0) -> None:
        """Close the channel and stop the server."""
        self.channel.close()
        self.server.stop(grace)


StartServer = Callable[..., Running]
"""The type of a fixture that starts in-process servers (see :func:`start_in_process`)."""


def start_in_process(
    sources: Mapping[str, SourceControl],
    storage_url: str,
    *,
    listen: str = "127.0.0.1:0",
    max_workers: int = 8,
    metrics_listen: str = "",
) -> Running:
    """Start a server over ``sources`` and ``storage_url`` (on a free port by default)."""
    server = StovepipeServer(
        open_storage(storage_url),
        QueueMap(sources),
        listen=listen,
        max_workers=max_workers,
        metrics=Metrics(process_metrics=False),
        metrics_listen=metrics_listen,
    )
    server.start()
    channel = grpc.insecure_channel(server.address)
    return Running(server, channel, StovepipeClient(channel), storage_url)


def _clean_environment() -> dict[str, str]:
    """This process's environment without the server's own settings, so a test's server is
    configured by the test alone."""
    return {name: value for name, value in os.environ.items() if not name.startswith("STOVEPIPE_")}


def stovepipe_command() -> list[str]:
    """The ``stovepipe`` script installed next to this interpreter, else ``python -m``."""
    script = pathlib.Path(sys.executable).parent / "stovepipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stovepipe.cli"]


def run_cli(
    *args: str, cwd: pathlib.Path | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run the ``stovepipe`` command to completion and capture its output."""
    return subprocess.run(
        [*stovepipe_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@dataclasses.dataclass
class ServeProcess:
    """A ``stovepipe serve`` process; its combined output goes to ``log``."""

    popen: subprocess.Popen[bytes]
    log: pathlib.Path
    address: str = ""

    def output(self) -> str:
        """Everything the process has logged so far."""
        return self.log.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` if the process still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the exit, return the exit status."""
        self.signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)


class ServeProcesses:
    """Starts ``stovepipe serve`` processes and kills whatever is left in :meth:`kill_all`."""

    def __init__(self, log_dir: pathlib.Path) -> None:
        self._log_dir = log_dir
        self._started: list[ServeProcess] = []

    def serve(
        self,
        args: Sequence[str] = (),
        *,
        cwd: pathlib.Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 20.0,
    ) -> ServeProcess:
        """Run ``stovepipe serve --listen 127.0.0.1:0 ARGS`` in ``cwd``; return once it serves."""
        (process,) = self.serve_many(1, args, cwd=cwd, env=env, timeout=timeout)
        return process

    def serve_many(
        self,
        count: int,
        args: Sequence[str] = (),
        *,
        cwd: pathlib.Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 20.0,
    ) -> list[ServeProcess]:
        """Start ``count`` servers at once (each on its own port); return once all serve."""
        spawned = [self._spawn(args, cwd=cwd, env=env) for _ in range(count)]
        deadline = time.monotonic() + timeout
        for process in spawned:
            while not process.address:
                match = _SERVING.search(process.output())
                if match:
                    process.address = match.group(1)
                elif process.popen.poll() is not None:
                    raise RuntimeError(f"stovepipe serve exited early:\n{process.output()}")
                elif time.monotonic() > deadline:
                    raise RuntimeError(
                        f"stovepipe serve did not start in {timeout}s:\n{process.output()}"
                    )
                else:
                    time.sleep(0.02)
        return spawned

    def _spawn(
        self, args: Sequence[str], *, cwd: pathlib.Path, env: Mapping[str, str] | None
    ) -> ServeProcess:
        log = self._log_dir / f"serve-{len(self._started)}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [*stovepipe_command(), "serve", "--listen", "127.0.0.1:0", *args],
                cwd=cwd,
                env={**_clean_environment(), **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = ServeProcess(popen, log)
        self._started.append(process)
        return process

    def kill_all(self) -> None:
        """Kill every process still running and reap them all."""
        for process in self._started:
            if process.popen.poll() is None:
                process.popen.kill()
            process.popen.wait(timeout=10)


# Commits need an author; tests must not depend on (or touch) the machine's git configuration.
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Stovepipe Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Stovepipe Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def run_git(repo: pathlib.Path, *args: str) -> str:
    """Run git in ``repo`` with no global configuration; return its stripped stdout."""
    completed = subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return completed.stdout.strip()


class GitRepository:
    """A repository made with the git CLI; needs no global git configuration."""

    def __init__(self, path: pathlib.Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", f"--initial-branch={branch}")

    def git(self, *args: str) -> str:
        """Run git in the repository; return its stripped stdout."""
        return run_git(self.path, *args)

    def commit(self, message: str = "change") -> str:
        """Add an empty commit to the current branch; return its sha."""
        self.git("commit", "--quiet", "--allow-empty", f"--message={message}")
        return self.git("rev-parse", "HEAD")


def open_sqlite_files(paths: Sequence[str], barrier: Barrier, results: Queue[str]) -> None:
    """Child-process body: for each path, wait on ``barrier``, then open a SQLite storage at
    it; report each outcome on ``results`` ("opened" or the error)."""
    for path in paths:
        barrier.wait(timeout=60)
        try:
            SQLiteBackend(path, timeout=30).close()
        except Exception as error:
            results.put(f"{path}: {error!r}")
        else:
            results.put("opened")


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files made for one test: a CA, a server certificate it signed for ``127.0.0.1``
    and ``localhost``, a client certificate it signed, and a client certificate signed by
    another CA (which a mutual-TLS server must refuse)."""

    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    rogue_client_cert: pathlib.Path
    rogue_client_key: pathlib.Path


def make_certificates(
    directory: pathlib.Path, *, key_passphrase: str | None = None
) -> Certificates:
    """Write a fresh :class:`Certificates` set into ``directory`` (valid for a day), made with
    the ``cryptography`` library. ``key_passphrase`` encrypts the client key (only), as a
    Redis ``ssl_password`` expects."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        *,
        ca: bool = False,
        server: bool = False,
    ) -> x509.Certificate:
        issuer_name, issuer_key = issuer if issuer is not None else (name(subject), key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def write(
        stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey, secret: bool
    ) -> tuple[pathlib.Path, pathlib.Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        if secret and key_passphrase is not None:
            encryption = serialization.BestAvailableEncryption(key_passphrase.encode())
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, rogue_key = new_key(), new_key()
    ca_cert = issue("Stovepipe Test CA", ca_key, None, ca=True)
    rogue_cert = issue("Rogue Test CA", rogue_key, None, ca=True)
    ca_path, _ = write("ca", ca_cert, ca_key, False)
    server_key, client_key, rogue_client_key = new_key(), new_key(), new_key()
    signer = (ca_cert.subject, ca_key)
    server = write("server", issue("127.0.0.1", server_key, signer, server=True), server_key, False)
    client = write("client", issue("client", client_key, signer), client_key, True)
    rogue = write(
        "rogue-client",
        issue("client", rogue_client_key, (rogue_cert.subject, rogue_key)),
        rogue_client_key,
        True,
    )
    return Certificates(ca_path, *server, *client, *rogue)
