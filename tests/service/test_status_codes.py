"""Every error the servicer maps, provoked over a real channel, with the status it must get."""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator

import grpc
import pytest

from stovepipe import sourcecontrol
from stovepipe.buildrunner import RunnerMap
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.client import StovepipeClient
from stovepipe.entity import Request, RequestState
from stovepipe.messaging.registry import open_messaging
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import Page, QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import limits, open_storage
from stovepipe.testing import StartServer
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10


class FailingSource:
    """A source control whose every call raises ``error`` (the status mapping is the subject)."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def latest(self) -> str:
        raise self._error

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        raise self._error

    def history(self, cursor: str | None = None, limit: int = 100) -> Page:
        raise self._error


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_ping_answers_with_the_server_version(start_server: StartServer) -> None:
    running = start_server({})
    assert running.client.Ping(pb.PingRequest(), timeout=TIMEOUT).version


def test_empty_queue_is_invalid_argument(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])})
    error = status_of(lambda: running.client.Ingest(pb.IngestRequest(queue=""), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in (error.details() or "")


def test_oversized_queue_is_invalid_argument(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])})
    queue = "é" * (limits.MAX_QUEUE_BYTES // 2 + 1)  # within the limit in characters, not bytes
    error = status_of(lambda: running.client.Ingest(pb.IngestRequest(queue=queue), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_malformed_request_bytes_are_invalid_argument(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])})
    # Field 1 (queue), length 2, bytes that are not UTF-8: protobuf refuses to parse them.
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = running.channel.unary_unary(
        "/stovepipe.v1.Stovepipe/Ingest"
    )
    error = status_of(lambda: raw(b"\x0a\x02\xff\xfe", timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (error.details() or "")


def test_empty_request_id_is_invalid_argument(start_server: StartServer) -> None:
    running = start_server({})
    error = status_of(
        lambda: running.client.GetRequest(pb.GetRequestRequest(id=""), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_request_id_is_invalid_argument(start_server: StartServer) -> None:
    running = start_server({})
    request_id = "r" * (limits.MAX_REQUEST_ID_BYTES + 1)
    error = status_of(
        lambda: running.client.GetRequest(pb.GetRequestRequest(id=request_id), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_queue_is_not_found(start_server: StartServer) -> None:
    running = start_server({"known/main": FakeSourceControl(["c1"])})
    error = status_of(
        lambda: running.client.Ingest(pb.IngestRequest(queue="unknown/main"), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown/main" in (error.details() or "")


def test_queue_without_commits_is_not_found(start_server: StartServer) -> None:
    running = start_server({"empty/main": FakeSourceControl([])})
    error = status_of(
        lambda: running.client.Ingest(pb.IngestRequest(queue="empty/main"), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_request_is_not_found(start_server: StartServer) -> None:
    running = start_server({})
    error = status_of(
        lambda: running.client.GetRequest(pb.GetRequestRequest(id="request/q/404"), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_get_request_returns_what_ingest_stored(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"], name="q")})
    admitted = running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    got = running.client.GetRequest(pb.GetRequestRequest(id=admitted.id), timeout=TIMEOUT)
    assert got.request == pb.Request(
        id="request/q/1",
        queue="q",
        uri="fake://q/c1",
        state=pb.REQUEST_STATE_ACCEPTED,
        version=1,
    )
    assert admitted.uri == "fake://q/c1"


@pytest.fixture
def write_locked_sqlite(tmp_path: pathlib.Path) -> Iterator[str]:
    """A SQLite storage URL (statement timeout 0.2 s) whose file another connection holds the
    write lock of: reads pass, writes time out with the engine's own "database is locked"."""
    path = f"{tmp_path}/locked.db"
    open_storage(f"sqlite:///{path}").close()  # create the schema
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield f"sqlite:///{path}?{urllib.parse.urlencode({'timeout': 0.2})}"
    holder.execute("ROLLBACK")
    holder.close()


def test_storage_unavailable_is_unavailable(
    start_server: StartServer, write_locked_sqlite: str
) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])}, storage_url=write_locked_sqlite)
    error = status_of(lambda: running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "storage is unavailable; retry later"


def test_messaging_outage_on_ingest_says_messaging(tmp_path: pathlib.Path) -> None:
    # Storage answers; the messaging queue (another SQLite file, write-locked) does not.
    queue_path = tmp_path / "queue.db"
    queue_url = f"sqlite:///{queue_path}?timeout=0.2"
    open_messaging(queue_url).stop()  # create the tables
    server = StovepipeServer(
        open_storage(f"sqlite:///{tmp_path / 'storage.db'}"),
        QueueMap({"q": FakeSourceControl(["c1"])}),
        runners=RunnerMap({"q": FakeBuildRunner()}),
        listen="127.0.0.1:0",
        messaging=open_messaging(queue_url),
        metrics=Metrics(process_metrics=False),
    )
    server.start()
    holder = sqlite3.connect(queue_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with grpc.insecure_channel(server.address) as channel:
            client = StovepipeClient(channel)
            error = status_of(lambda: client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "messaging is unavailable; retry later"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        server.stop(grace=1)


def test_source_control_unavailable_is_unavailable(start_server: StartServer) -> None:
    source = FailingSource(sourcecontrol.Unavailable("remote /srv/secret/repo is down"))
    running = start_server({"q": source})
    error = status_of(lambda: running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "secret" not in (error.details() or "")


def test_unexpected_error_is_internal_and_its_detail_is_logged_not_leaked(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server({"q": FailingSource(RuntimeError("secret-detail-4711"))})
    with caplog.at_level(logging.ERROR, logger="stovepipe.service"):
        error = status_of(
            lambda: running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
        )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret-detail-4711" not in (error.details() or "")
    assert "secret-detail-4711" in caplog.text
    # The incident number the caller sees is the one logged next to the detail.
    incident = (error.details() or "").rsplit(" ", 1)[-1].rstrip(")")
    assert incident in caplog.text


def test_inconsistent_state_is_internal_and_not_leaked(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = FakeSourceControl(["c1"], name="q")
    running = start_server({"q": source})
    # The new head's request id is taken by a row stored with another URI, so once ingest
    # has claimed the head, the row it reads contradicts the mapping.
    with open_storage(running.storage_url) as storage:
        storage.requests.create(
            Request("request/q/1", "q", "fake://q/other", RequestState.ACCEPTED, 1)
        )
    with caplog.at_level(logging.ERROR):
        error = status_of(
            lambda: running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
        )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "fake://q/other" not in (error.details() or "")
    assert "InconsistentState" in caplog.text
