"""The ``stovepipe`` command: run the server, and talk to one.

    stovepipe serve [--listen HOST:PORT] [--config FILE] [--storage-url URL]
                    [--messaging-url URL] [--metrics-listen HOST:PORT]
                    [--build-command COMMAND] [--builds-dir DIR]
    stovepipe worker [--config FILE] [--storage-url URL] [--messaging-url URL]
                     [--metrics-listen HOST:PORT] [--build-command COMMAND] [--builds-dir DIR]
                                      runs the pipeline (builds included), serves no RPC
    stovepipe ingest QUEUE            prints the request id of the queue's head
    stovepipe get ID                  prints the request as JSON
    stovepipe status QUEUE [--json] [--limit N]
                                      prints the last green commit, the builds in flight
                                      and the newest requests with their states
    stovepipe green QUEUE             prints the last green commit's URI
    stovepipe ping                    prints the server's version and the round trip
    stovepipe poll QUEUE --every S    ingests every S seconds, logging each new id
    stovepipe migrate URL             prepares a storage backend's schema, if it needs one
    stovepipe conformance storage|messaging URL [PYTEST ARGUMENTS...]
                                      runs a conformance suite against a backend's URL; exit
                                      0 only when every test that applies passed (needs
                                      ``stovepipe[testing]``)

Client commands take ``--server HOST:PORT`` (default ``127.0.0.1:50051``, or
``$STOVEPIPE_SERVER``) and ``--timeout SECONDS``. ``--ca FILE`` (the CA that signed the
server's certificate), ``--cert FILE`` and ``--key FILE`` (the client's own, for mutual TLS),
or a server given as ``https://HOST:PORT`` (verified against the system's roots without
``--ca``), connect with TLS; ``$STOVEPIPE_CA``, ``$STOVEPIPE_CERT`` and ``$STOVEPIPE_KEY``
are their defaults. A bearer token is read from ``--token-file FILE`` (default
``$STOVEPIPE_TOKEN_FILE``) or ``$STOVEPIPE_TOKEN``, never from the command line. Failures
are one line on stderr and a non-zero exit: 1 for an error the server reported, 2 for bad
usage or configuration (TLS files that cannot be used included), 3 when the server cannot be
reached. Flags are never abbreviated.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import grpc

import stovepipe
from stovepipe import auth
from stovepipe import config as configuration
from stovepipe.client import StovepipeClient, connect
from stovepipe.redaction import install_log_filter, redact, redact_text, register_secret
from stovepipe.v1 import stovepipe_pb2 as pb

MIGRATIONS_GROUP = "stovepipe.storage.migrations"
SERVER_ENV = "STOVEPIPE_SERVER"
CA_ENV = "STOVEPIPE_CA"
CERT_ENV = "STOVEPIPE_CERT"
KEY_ENV = "STOVEPIPE_KEY"
TOKEN_FILE_ENV = "STOVEPIPE_TOKEN_FILE"
TOKEN_ENV = "STOVEPIPE_TOKEN"
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_STATUS_LIMIT = 10
MAX_STATUS_LIMIT = 100

# A poller keeps going through these; anything else means the call can never succeed.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)

# The server words every UNAVAILABLE answer of its own with a retry hint ("storage is
# unavailable; retry later", "...; retry in 250 ms", "the server is shutting down; retry":
# see stovepipe.service and stovepipe.server); gRPC's own, for a server never reached, not.
_SERVER_UNAVAILABLE_MARK = "; retry"

logger = logging.getLogger("stovepipe")


class CommandError(Exception):
    """A failure reported as one line on stderr with an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stovepipe`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as error:
        print(f"stovepipe: {redact_text(str(error))}", file=sys.stderr)
        return error.status
    except configuration.ConfigError as error:
        print(f"stovepipe: {redact_text(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception:
        # Not one of ours: the traceback helps, but may quote a URL or an option.
        print(redact_text(traceback.format_exc()), end="", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    # No abbreviated flags: argparse would read "--token X" as "--token-file X".
    parser = argparse.ArgumentParser(
        prog="stovepipe", description="Tells at which commit a branch is green.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=stovepipe.__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server until SIGTERM or SIGINT")
    serve.add_argument("--config", help="TOML configuration file (default $STOVEPIPE_CONFIG)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="gRPC address")
    serve.add_argument("--storage-url", metavar="URL", help="storage backend URL")
    _messaging_option(serve)
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help='Prometheus address ("" turns it off)'
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA certificates: require clients to present a certificate one signed",
    )
    serve.add_argument(
        "--tokens-file", metavar="FILE", help="bearer tokens with scopes, one per line"
    )
    serve.add_argument(
        "--shutdown-delay",
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING and keep serving this long before draining",
    )
    _build_options(serve)
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser(
        "worker", help="run the pipeline (builds included) until SIGTERM or SIGINT"
    )
    worker.add_argument("--config", help="TOML configuration file (default $STOVEPIPE_CONFIG)")
    worker.add_argument("--storage-url", metavar="URL", help="storage backend URL")
    _messaging_option(worker)
    worker.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help='Prometheus address ("" turns it off)'
    )
    _build_options(worker)
    worker.set_defaults(handler=_worker)

    def client(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument(
            "--server",
            metavar="HOST:PORT",
            default=None,
            help=f"server address (default ${SERVER_ENV} or {configuration.DEFAULT_LISTEN}); "
            "https://HOST:PORT connects with TLS",
        )
        command.add_argument(
            "--ca", metavar="FILE", help=f"PEM CA that signed the server's certificate (${CA_ENV})"
        )
        command.add_argument(
            "--cert", metavar="FILE", help=f"PEM client certificate, mutual TLS (${CERT_ENV})"
        )
        command.add_argument("--key", metavar="FILE", help=f"PEM key of --cert (${KEY_ENV})")
        command.add_argument(
            "--token-file",
            metavar="FILE",
            help=f"file holding the bearer token (${TOKEN_FILE_ENV}; or the token in ${TOKEN_ENV})",
        )
        command.add_argument(
            "--timeout",
            type=_positive,
            default=10.0,
            metavar="SECONDS",
            help="seconds per call (default 10)",
        )
        return command

    ingest = client("ingest", "admit a queue's head; print its request id")
    ingest.add_argument("queue")
    ingest.set_defaults(handler=_ingest)

    get = client("get", "print a request as JSON")
    get.add_argument("id")
    get.set_defaults(handler=_get)

    status = client("status", "print a queue's last green commit and newest requests")
    status.add_argument("queue")
    status.add_argument(
        "--limit",
        type=_page_size,
        default=DEFAULT_STATUS_LIMIT,
        metavar="N",
        help=f"requests to show, newest first (default {DEFAULT_STATUS_LIMIT}, at most "
        f"{MAX_STATUS_LIMIT})",
    )
    status.add_argument("--json", action="store_true", help="print one line of JSON instead")
    status.set_defaults(handler=_status)

    green = client("green", "print the URI of a queue's last green commit")
    green.add_argument("queue")
    green.set_defaults(handler=_green)

    ping = client("ping", "check that the server answers")
    ping.set_defaults(handler=_ping)

    poll = client("poll", "ingest a queue on a timer, logging new request ids")
    poll.add_argument("queue")
    poll.add_argument(
        "--every", type=_positive, required=True, metavar="SECONDS", help="seconds between ingests"
    )
    poll.set_defaults(handler=_poll)

    migrate = commands.add_parser("migrate", help="prepare a storage backend's schema")
    migrate.add_argument("url")
    migrate.set_defaults(handler=_migrate)

    conformance = commands.add_parser(
        "conformance",
        help="run a conformance suite against a backend (arguments after URL go to pytest)",
    )
    conformance.add_argument("suite", choices=["storage", "messaging"])
    conformance.add_argument("url")
    conformance.add_argument("pytest_arguments", nargs=argparse.REMAINDER)
    conformance.set_defaults(handler=_conformance)
    for command in commands.choices.values():
        command.allow_abbrev = False
    return parser


def _messaging_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--messaging-url", metavar="URL", help="messaging URL (default: follows the storage)"
    )
    # The former name, still accepted with a deprecation warning.
    command.add_argument("--queue-url", dest="deprecated_queue_url", help=argparse.SUPPRESS)


def _messaging_url(args: argparse.Namespace) -> str | None:
    """``--messaging-url``, or the deprecated ``--queue-url`` with a warning."""
    if args.deprecated_queue_url is None:
        messaging_url: str | None = args.messaging_url
        return messaging_url
    if args.messaging_url is not None:
        raise CommandError(
            "--queue-url and --messaging-url are both given: keep --messaging-url", EXIT_USAGE
        )
    configuration.warn_deprecated("--queue-url", "--messaging-url")
    deprecated: str = args.deprecated_queue_url
    return deprecated


def _build_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--build-command",
        metavar="COMMAND",
        help="shell command that builds the default queue's commits; exit status 0 is green "
        "(default $STOVEPIPE_BUILD_COMMAND; without it the queue is ingest-only)",
    )
    command.add_argument(
        "--builds-dir",
        metavar="DIR",
        help="where builds keep their state and checkouts (default .stovepipe/builds)",
    )


def _conformance(args: argparse.Namespace) -> int:
    from stovepipe import conformance

    try:
        return conformance.run(args.suite, args.url, args.pytest_arguments)
    except ImportError as error:
        raise CommandError(
            f"the conformance suites need pytest and hypothesis: "
            f"pip install 'stovepipe[testing]' ({error})",
            EXIT_USAGE,
        ) from None


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_STATUS_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in 1..{MAX_STATUS_LIMIT}: {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_filter()
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """Report an exception that ended a thread through logging, so it is redacted too."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logger.error("uncaught exception in %s", name, exc_info=exc_info)


def _serve(args: argparse.Namespace) -> int:
    from stovepipe import server  # the client commands do not pay for the server's imports

    config = configuration.load(
        args.config,
        overrides={
            "listen": args.listen,
            "storage_url": args.storage_url,
            "messaging_url": _messaging_url(args),
            "metrics_listen": args.metrics_listen,
            "build_command": args.build_command,
            "builds_dir": args.builds_dir,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "tokens_file": args.tokens_file,
            "shutdown_delay": args.shutdown_delay,
        },
    )
    _configure_logging(config.log_level)
    try:
        drained = server.run(config)
    except OSError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if not drained:
        # Threads stuck past the grace period would hold the interpreter's exit forever.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from stovepipe import server

    config = configuration.load(
        args.config,
        overrides={
            "storage_url": args.storage_url,
            "messaging_url": _messaging_url(args),
            "metrics_listen": args.metrics_listen,
            "build_command": args.build_command,
            "builds_dir": args.builds_dir,
        },
    )
    _configure_logging(config.log_level)
    try:
        return server.run_worker(config)
    except OSError as error:
        raise CommandError(str(error), EXIT_USAGE) from None


def _utf8(value: str, name: str) -> str:
    """``value``, if it encodes as UTF-8; protobuf strings must.

    Python passes an argument that is not valid UTF-8 on with surrogate escapes, which no
    request can carry.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{name} is not valid UTF-8: {value!r}", EXIT_USAGE) from None
    return value


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, StovepipeClient, str]:
    address: str = args.server or os.environ.get(SERVER_ENV) or configuration.DEFAULT_LISTEN
    https = address.startswith("https://")
    address = address.removeprefix("https://")
    configuration.parse_address(_utf8(address, "--server"), setting="--server")
    pem = {
        name: _read_client_file(flag, path)
        for name, flag, path in (
            ("root_certificates", "--ca", args.ca or os.environ.get(CA_ENV)),
            ("certificate_chain", "--cert", args.cert or os.environ.get(CERT_ENV)),
            ("private_key", "--key", args.key or os.environ.get(KEY_ENV)),
        )
        if path
    }
    if ("certificate_chain" in pem) != ("private_key" in pem):
        raise CommandError("--cert and --key go together", EXIT_USAGE)
    try:  # gRPC would report a bad file only as a server it cannot reach
        auth.check_tls_files(
            args.cert or os.environ.get(CERT_ENV),
            args.key or os.environ.get(KEY_ENV),
            args.ca or os.environ.get(CA_ENV),
            names=("--cert", "--key", "--ca"),
        )
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    channel = connect(address, tls=https, token=_token(args), **pem)
    return channel, StovepipeClient(channel), address


def _read_client_file(flag: str, path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {flag} {path}: {error.strerror}", EXIT_USAGE) from None


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token of ``--token-file`` (or ``$STOVEPIPE_TOKEN_FILE``), else of
    ``$STOVEPIPE_TOKEN``; registered as a secret so no message shows it."""
    path = args.token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = pathlib.Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise CommandError(f"cannot read --token-file {path}: {reason}", EXIT_USAGE) from None
        if not token:
            raise CommandError(f"--token-file {path} is empty", EXIT_USAGE)
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if any(character.isspace() for character in token) or not token.isprintable():
        raise CommandError("the bearer token must be one line without spaces", EXIT_USAGE)
    register_secret(token)
    return token


def _failure(error: grpc.RpcError, address: str) -> CommandError:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and _SERVER_UNAVAILABLE_MARK not in details:
        # The channel never reached a server (the server words its own UNAVAILABLE so).
        return CommandError(
            f"cannot reach server at {address}: {_first_line(details)}", EXIT_UNREACHABLE
        )
    return CommandError(f"{code.name}: {_first_line(details)}", EXIT_SERVER_ERROR)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _ingest(args: argparse.Namespace) -> int:
    _utf8(args.queue, "QUEUE")
    channel, stub, address = _stub(args)
    with channel:
        try:
            response: pb.IngestResponse = stub.Ingest(
                pb.IngestRequest(queue=args.queue), timeout=args.timeout
            )
        except grpc.RpcError as error:
            raise _failure(error, address) from None
    print(response.id)
    return 0


def _get(args: argparse.Namespace) -> int:
    _utf8(args.id, "ID")
    channel, stub, address = _stub(args)
    with channel:
        try:
            response: pb.GetRequestResponse = stub.GetRequest(
                pb.GetRequestRequest(id=args.id), timeout=args.timeout
            )
        except grpc.RpcError as error:
            raise _failure(error, address) from None
    print(json.dumps(_request_json(response.request), ensure_ascii=False))
    return 0


def _state_name(state: pb.RequestState) -> str:
    """``processing`` for ``REQUEST_STATE_PROCESSING``, and so on."""
    return pb.RequestState.Name(state).removeprefix("REQUEST_STATE_").lower()


def _strategy_name(strategy: pb.BuildStrategy) -> str:
    """``full`` or ``incremental``; empty while unspecified."""
    if strategy == pb.BUILD_STRATEGY_UNSPECIFIED:
        return ""
    return pb.BuildStrategy.Name(strategy).removeprefix("BUILD_STRATEGY_").lower()


def _request_json(request: pb.Request) -> dict[str, Any]:
    return {
        "id": request.id,
        "queue": request.queue,
        "uri": request.uri,
        "state": _state_name(request.state),
        "version": request.version,
        "build_strategy": _strategy_name(request.build_strategy),
        "base_uri": request.base_uri,
    }


def _get_queue(stub: StovepipeClient, args: argparse.Namespace, address: str) -> pb.Queue:
    try:
        response: pb.GetQueueResponse = stub.GetQueue(
            pb.GetQueueRequest(queue=args.queue), timeout=args.timeout
        )
    except grpc.RpcError as error:
        raise _failure(error, address) from None
    return response.queue


def _status(args: argparse.Namespace) -> int:
    """Print the queue's state and its ``--limit`` newest requests: a table, or JSON."""
    _utf8(args.queue, "QUEUE")
    channel, stub, address = _stub(args)
    with channel:
        queue = _get_queue(stub, args, address)
        requests: list[pb.Request] = []
        token = ""
        while len(requests) < args.limit:
            # A page may come back short (it reads a bounded number of ids); only an empty
            # token ends the list.
            try:
                page: pb.ListRequestsResponse = stub.ListRequests(
                    pb.ListRequestsRequest(
                        queue=args.queue, page_size=args.limit - len(requests), page_token=token
                    ),
                    timeout=args.timeout,
                )
            except grpc.RpcError as error:
                raise _failure(error, address) from None
            requests.extend(page.requests)
            token = page.next_page_token
            if not token:
                break
    if args.json:
        document = {
            "queue": queue.name,
            "latest_request_id": queue.latest_request_id,
            "last_green_uri": queue.last_green_uri,
            "last_green_request_id": queue.last_green_request_id,
            "in_flight": queue.in_flight,
            "requests": [_request_json(request) for request in requests],
        }
        print(json.dumps(document, ensure_ascii=False))
        return 0
    green = (
        f"{queue.last_green_uri} ({queue.last_green_request_id})"
        if queue.last_green_uri
        else "none yet"
    )
    print(f"queue       {queue.name}")
    print(f"last green  {green}")
    print(f"in flight   {queue.in_flight}")
    print()
    if not requests:
        print("no requests yet")
        return 0
    rows = [("REQUEST", "STATE", "BUILD", "COMMIT")]
    rows.extend(
        (r.id, _state_name(r.state), _strategy_name(r.build_strategy) or "-", r.uri)
        for r in requests
    )
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))
    return 0


def _green(args: argparse.Namespace) -> int:
    """Print the last green commit's URI; exit status 1 if the queue has none yet."""
    _utf8(args.queue, "QUEUE")
    channel, stub, address = _stub(args)
    with channel:
        queue = _get_queue(stub, args, address)
    if not queue.last_green_uri:
        raise CommandError(f"queue {args.queue!r} has no green commit yet", EXIT_SERVER_ERROR)
    print(queue.last_green_uri)
    return 0


def _ping(args: argparse.Namespace) -> int:
    channel, stub, address = _stub(args)
    with channel:
        start = time.perf_counter()
        try:
            response: pb.PingResponse = stub.Ping(
                pb.PingRequest(), timeout=args.timeout, wait_for_ready=False
            )
        except grpc.RpcError as error:
            raise _failure(error, address) from None
        elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"stovepipe {response.version} at {address} ({elapsed_ms:.1f} ms)")
    return 0


def _poll(args: argparse.Namespace) -> int:
    """Ingest every ``--every`` seconds until SIGINT or SIGTERM; log each new request id.

    Transient failures (the server or its backend unavailable, a timeout) are logged and the
    next tick tries again; a permanent one (unknown queue, invalid name) ends the poller.
    """
    _utf8(args.queue, "QUEUE")
    _configure_logging()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    channel, stub, address = _stub(args)
    last_id: str | None = None
    try:
        with channel:
            while not stop.is_set():
                try:
                    response: pb.IngestResponse = stub.Ingest(
                        pb.IngestRequest(queue=args.queue), timeout=args.timeout
                    )
                except grpc.RpcError as error:
                    failure = _failure(error, address)
                    if error.code() not in _TRANSIENT:
                        raise failure from None
                    logger.warning("%s; retrying in %gs", failure, args.every)
                else:
                    if response.id != last_id:
                        logger.info("new request %s at %s", response.id, response.uri)
                        last_id = response.id
                stop.wait(args.every)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """Run the migration a backend registers under ``stovepipe.storage.migrations``."""
    from stovepipe.storage import installed_schemes

    try:
        scheme = urllib.parse.urlsplit(args.url).scheme
    except ValueError as error:  # an unclosed [ of an IPv6 host, say
        raise CommandError(f"{redact(args.url)}: {error}", EXIT_USAGE) from None
    if not scheme or scheme not in installed_schemes():
        installed = ", ".join(s + "://" for s in installed_schemes()) or "none"
        raise CommandError(
            f"no storage backend serves {redact(args.url)!r}; installed: {installed}", EXIT_USAGE
        )
    migrations = importlib.metadata.entry_points(group=MIGRATIONS_GROUP, name=scheme)
    if not migrations:
        # SQLite creates its tables when opened; memory, Redis and etcd have no schema at all.
        detail = ": it prepares its schema when opened" if scheme == "sqlite" else ""
        print(f"{scheme}:// needs no migration{detail}")
        return 0
    migrate: Callable[[str], object] = next(iter(migrations)).load()
    try:
        migrate(args.url)
    except Exception as error:
        reason = redact_text(str(error), [args.url])
        message = f"migration of {scheme}:// failed: {reason}"
        # A ValueError is the URL's fault (malformed, a bad option): bad usage, not the server.
        status = EXIT_USAGE if isinstance(error, ValueError) else EXIT_SERVER_ERROR
        raise CommandError(message, status) from None
    print(f"{scheme}:// migrated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
