"""GetQueue and ListRequests over a real channel: what they answer, their status codes, and
how ListRequests pages through a queue's requests, newest first, over gaps in the numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
import pytest

from stovepipe.controller import queries
from stovepipe.entity import BuildStrategy, Queue, Request, RequestState
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import limits, open_storage
from stovepipe.testing import StartServer
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10
QUEUE = "mono/main"


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def store_requests(storage_url: str, numbers: Iterable[int], queue: str = QUEUE) -> None:
    """Write requests ``numbers`` of ``queue`` and stamp the highest as its newest, as ingest
    would (numbers not written are the gaps racing ingests leave)."""
    numbers = sorted(numbers)
    with open_storage(storage_url) as storage:
        for n in numbers:
            storage.requests.create(
                Request(
                    f"request/{queue}/{n}", queue, f"fake://mono/c{n}", RequestState.ACCEPTED, 1
                )
            )
        storage.queues.create(Queue(queue, latest_request_id=f"request/{queue}/{numbers[-1]}"))


def page(
    client_call: Callable[..., pb.ListRequestsResponse], size: int = 0, token: str = ""
) -> tuple[list[str], str]:
    response = client_call(
        pb.ListRequestsRequest(queue=QUEUE, page_size=size, page_token=token), timeout=TIMEOUT
    )
    return [request.id for request in response.requests], response.next_page_token


def ids(*numbers: int) -> list[str]:
    return [f"request/{QUEUE}/{n}" for n in numbers]


def test_get_queue_of_a_configured_queue_never_ingested_is_empty_not_an_error(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"], name="mono")})
    response = running.client.GetQueue(pb.GetQueueRequest(queue=QUEUE), timeout=TIMEOUT)
    assert response.queue == pb.Queue(name=QUEUE)


def test_get_queue_returns_the_newest_request_after_ingest(start_server: StartServer) -> None:
    source = FakeSourceControl(["c1"], name="mono")
    running = start_server({QUEUE: source})
    running.client.Ingest(pb.IngestRequest(queue=QUEUE), timeout=TIMEOUT)
    source.push("c2")
    newest = running.client.Ingest(pb.IngestRequest(queue=QUEUE), timeout=TIMEOUT).id
    queue = running.client.GetQueue(pb.GetQueueRequest(queue=QUEUE), timeout=TIMEOUT).queue
    assert queue == pb.Queue(name=QUEUE, latest_request_id=newest)


def test_get_queue_of_an_unknown_queue_is_not_found(start_server: StartServer) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    error = status_of(
        lambda: running.client.GetQueue(pb.GetQueueRequest(queue="other/main"), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "other/main" in (error.details() or "")


@pytest.mark.parametrize("queue", ["", "é" * (limits.MAX_QUEUE_BYTES // 2 + 1)])
def test_get_queue_with_an_empty_or_oversized_name_is_invalid_argument(
    start_server: StartServer, queue: str
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    error = status_of(
        lambda: running.client.GetQueue(pb.GetQueueRequest(queue=queue), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["GetQueue", "ListRequests"])
def test_new_methods_answer_malformed_bytes_with_invalid_argument(
    start_server: StartServer, method: str
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = running.channel.unary_unary(
        f"/stovepipe.v1.Stovepipe/{method}"
    )
    error = status_of(lambda: raw(b"\x0a\x02\xff\xfe", timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_requests_of_an_unknown_queue_is_not_found(start_server: StartServer) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    error = status_of(
        lambda: running.client.ListRequests(
            pb.ListRequestsRequest(queue="other/main"), timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_list_requests_with_an_empty_queue_name_is_invalid_argument(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    error = status_of(
        lambda: running.client.ListRequests(pb.ListRequestsRequest(queue=""), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "token", ["abc", "0", "-3", "+3", "03", "3.0", " 3", "٣", "9" * 20, "1" * 5000]
)
def test_list_requests_with_a_page_token_it_did_not_issue_is_invalid_argument(
    start_server: StartServer, token: str
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, [1, 2, 3])
    error = status_of(lambda: page(running.client.ListRequests, token=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (error.details() or "")


def test_list_requests_with_a_negative_page_size_is_invalid_argument(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    error = status_of(lambda: page(running.client.ListRequests, size=-1))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in (error.details() or "")


def test_list_requests_of_a_queue_never_ingested_is_one_empty_last_page(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    assert page(running.client.ListRequests) == ([], "")


def test_list_requests_pages_newest_first_with_the_default_page_size_of_20(
    start_server: StartServer,
) -> None:
    source = FakeSourceControl(["c1"], name="mono")
    running = start_server({QUEUE: source})
    for n in range(1, 26):
        if n > 1:
            source.push(f"c{n}")
        running.client.Ingest(pb.IngestRequest(queue=QUEUE), timeout=TIMEOUT)
    first, token = page(running.client.ListRequests)
    assert first == ids(*range(25, 5, -1))
    assert token == "5"
    second, token = page(running.client.ListRequests, token=token)
    assert second == ids(5, 4, 3, 2, 1)
    assert token == ""


def test_list_requests_walks_every_request_once_in_pages_of_the_size_asked(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, range(1, 26))
    pages: list[list[str]] = []
    token = ""
    while True:
        found, token = page(running.client.ListRequests, size=7, token=token)
        pages.append(found)
        if not token:
            break
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [i for p in pages for i in p] == ids(*range(25, 0, -1))


def test_list_requests_skips_the_numbers_without_a_request(start_server: StartServer) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, [1, 2, 4, 7, 8, 10])
    assert page(running.client.ListRequests, size=4) == (ids(10, 8, 7, 4), "3")
    assert page(running.client.ListRequests, size=4, token="3") == (ids(2, 1), "")


def test_list_requests_bounds_the_ids_one_page_reads_and_a_long_gap_costs_more_pages(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, [1, 500])
    budget = queries.LOOKUPS_PER_REQUEST * 1 + queries.EXTRA_LOOKUPS
    assert page(running.client.ListRequests, size=1) == (ids(500), "499")
    # The next page reads its budget of missing numbers, finds nothing, and says where to go on.
    assert page(running.client.ListRequests, size=1, token="499") == ([], str(499 - budget))
    found: list[str] = []
    token = "499"
    pages = 0
    while token:
        more, token = page(running.client.ListRequests, size=1, token=token)
        found.extend(more)
        pages += 1
    assert found == ids(1)
    assert pages == -(-499 // budget)  # ceil: every page did its full budget but the last


def test_list_requests_above_the_maximum_page_size_returns_a_maximum_page(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, range(1, queries.MAX_PAGE_SIZE + 6))
    found, token = page(running.client.ListRequests, size=1000)
    assert len(found) == queries.MAX_PAGE_SIZE
    assert token == "5"


def test_list_requests_carries_each_requests_state_strategy_and_base(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, [1])
    with open_storage(running.storage_url) as storage:
        stored = storage.requests.get(f"request/{QUEUE}/1")
        storage.requests.create(
            Request(
                f"request/{QUEUE}/2",
                QUEUE,
                "fake://mono/c2",
                RequestState.PROCESSING,
                2,
                BuildStrategy.INCREMENTAL,
                stored.uri,
            )
        )
        queue = storage.queues.get(QUEUE)
        storage.queues.update(
            Queue(QUEUE, latest_request_id=f"request/{QUEUE}/2", in_flight=1),
            old_version=queue.version,
            new_version=queue.version + 1,
        )
    response = running.client.ListRequests(pb.ListRequestsRequest(queue=QUEUE), timeout=TIMEOUT)
    assert list(response.requests) == [
        pb.Request(
            id=f"request/{QUEUE}/2",
            queue=QUEUE,
            uri="fake://mono/c2",
            state=pb.REQUEST_STATE_PROCESSING,
            version=2,
            build_strategy=pb.BUILD_STRATEGY_INCREMENTAL,
            base_uri="fake://mono/c1",
        ),
        pb.Request(
            id=f"request/{QUEUE}/1",
            queue=QUEUE,
            uri="fake://mono/c1",
            state=pb.REQUEST_STATE_ACCEPTED,
            version=1,
        ),
    ]
    got = running.client.GetQueue(pb.GetQueueRequest(queue=QUEUE), timeout=TIMEOUT).queue
    assert got.in_flight == 1


def test_list_requests_reads_a_stored_queue_that_is_no_longer_configured(
    start_server: StartServer,
) -> None:
    running = start_server({QUEUE: FakeSourceControl(["c1"])})
    store_requests(running.storage_url, [1, 2], queue="retired/main")
    response = running.client.ListRequests(
        pb.ListRequestsRequest(queue="retired/main"), timeout=TIMEOUT
    )
    assert [r.id for r in response.requests] == ["request/retired/main/2", "request/retired/main/1"]
