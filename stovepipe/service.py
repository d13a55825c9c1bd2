"""The gRPC servicer of ``stovepipe.v1.Stovepipe``: protobuf <-> entities, errors -> status.

It holds no business logic. Status codes:

======================================================  ============================
error                                                   status
======================================================  ============================
``InvalidQueue``, ``LimitExceeded``, ``InvalidPage``,   ``INVALID_ARGUMENT``
empty id, a request that does not parse
SourceControl ``NotFound`` (queue, ref), storage        ``NOT_FOUND``
``NotFound`` (request)
a transient error of :mod:`stovepipe.errors` (storage,  ``UNAVAILABLE``, naming the
messaging, SourceControl or BuildRunner ``Unavailable``) dependency that is down
a bulkhead full, a breaker open (``Rejected``)         ``UNAVAILABLE``, retry hint,
                                                        "busy" or "unavailable"
a deadline that expired before the call (or one of its  ``DEADLINE_EXCEEDED``
backend calls) started
anything else (``InconsistentState`` included)          ``INTERNAL``, detail logged only
======================================================  ============================

The caller's deadline is handed on to the backend calls (:func:`stovepipe.resilience.deadline`).
A rejected call carries its retry hint as the trailing metadata ``grpc-retry-pushback-ms``
(milliseconds; gRPC clients with a retry policy honour it) and in its message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError

import stovepipe
from stovepipe import resilience, sourcecontrol, storage
from stovepipe.controller import queries
from stovepipe.controller.ingest import IngestController, InvalidQueue
from stovepipe.entity import BuildStrategy, Queue, Request, RequestState
from stovepipe.errors import StovepipeError
from stovepipe.v1 import stovepipe_pb2 as pb
from stovepipe.v1 import stovepipe_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Stovepipe"].full_name
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata of a rejected call: milliseconds to wait before a retry (gRPC's name)."""

T = TypeVar("T")
M = TypeVar("M")


class Malformed:
    """Stands in for a request message whose bytes did not parse, so the servicer can answer
    ``INVALID_ARGUMENT`` (gRPC itself would answer ``INTERNAL``)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], M]) -> Callable[[bytes], M | Malformed]:
    def deserialize(data: bytes) -> M | Malformed:
        try:
            return parse(data)
        except DecodeError as error:
            return Malformed(str(error) or "request does not parse")

    return deserialize


def _state_to_proto(state: RequestState) -> pb.RequestState:
    value = pb.RequestState.DESCRIPTOR.values_by_name.get(f"REQUEST_STATE_{state.name}")
    return pb.REQUEST_STATE_UNSPECIFIED if value is None else cast(pb.RequestState, value.number)


def _strategy_to_proto(strategy: BuildStrategy) -> pb.BuildStrategy:
    value = pb.BuildStrategy.DESCRIPTOR.values_by_name.get(f"BUILD_STRATEGY_{strategy.name}")
    return pb.BUILD_STRATEGY_UNSPECIFIED if value is None else cast(pb.BuildStrategy, value.number)


def request_to_proto(request: Request) -> pb.Request:
    """The wire form of a :class:`~stovepipe.entity.Request`."""
    return pb.Request(
        id=request.id,
        queue=request.queue,
        uri=request.uri,
        state=_state_to_proto(request.state),
        version=request.version,
        build_strategy=_strategy_to_proto(request.build_strategy),
        base_uri=request.base_uri,
    )


def queue_to_proto(queue: Queue) -> pb.Queue:
    """The wire form of a :class:`~stovepipe.entity.Queue` (its version stays inside)."""
    return pb.Queue(
        name=queue.name,
        latest_request_id=queue.latest_request_id,
        last_green_uri=queue.last_green_uri,
        last_green_request_id=queue.last_green_request_id,
        in_flight=queue.in_flight,
    )


class StovepipeServicer(pb_grpc.StovepipeServicer):
    """Serves ``Ping``, ``Ingest``, ``GetRequest``, ``GetQueue`` and ``ListRequests``;
    thread-safe."""

    def __init__(
        self,
        ingest: IngestController,
        store: storage.Storage,
        sources: sourcecontrol.SourceControlFactory,
    ) -> None:
        self._ingest = ingest
        self._storage = store
        self._sources = sources

    def Ping(
        self, request: pb.PingRequest | Malformed, context: grpc.ServicerContext
    ) -> pb.PingResponse:
        """Answers at once; touches no backend."""
        self._parsed(request, context)
        return pb.PingResponse(version=stovepipe.__version__)

    def Ingest(
        self, request: pb.IngestRequest | Malformed, context: grpc.ServicerContext
    ) -> pb.IngestResponse:
        """Admits the queue's head; the same head always yields the same id."""
        message = self._parsed(request, context)
        admitted = self._run(context, lambda: self._ingest.ingest(message.queue))
        return pb.IngestResponse(id=admitted.id, uri=admitted.uri)

    def GetRequest(
        self, request: pb.GetRequestRequest | Malformed, context: grpc.ServicerContext
    ) -> pb.GetRequestResponse:
        """Reads a request by id."""
        message = self._parsed(request, context)
        if not message.id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id is empty")
        stored = self._run(context, lambda: self._storage.requests.get(message.id))
        return pb.GetRequestResponse(request=request_to_proto(stored))

    def GetQueue(
        self, request: pb.GetQueueRequest | Malformed, context: grpc.ServicerContext
    ) -> pb.GetQueueResponse:
        """Reads a queue's state; empty fields for a configured queue never ingested."""
        message = self._parsed(request, context)
        queue = self._run(
            context, lambda: queries.get_queue(self._storage, self._sources, message.queue)
        )
        return pb.GetQueueResponse(queue=queue_to_proto(queue))

    def ListRequests(
        self, request: pb.ListRequestsRequest | Malformed, context: grpc.ServicerContext
    ) -> pb.ListRequestsResponse:
        """Lists a queue's requests, newest first, a page at a time."""
        message = self._parsed(request, context)
        page = self._run(
            context,
            lambda: queries.list_requests(
                self._storage,
                self._sources,
                message.queue,
                page_size=message.page_size,
                page_token=message.page_token,
            ),
        )
        return pb.ListRequestsResponse(
            requests=[request_to_proto(r) for r in page.requests],
            next_page_token=page.next_page_token,
        )

    @staticmethod
    def _parsed(request: T | Malformed, context: grpc.ServicerContext) -> T:
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.reason}")
        return request

    @staticmethod
    def _run(context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        """Run ``work`` unless the call's deadline has passed; map its errors to a status."""
        # gRPC drops a call cancelled before dispatch; this catches a deadline that ran out
        # between dispatch and here (e.g. while the call waited for a worker thread).
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before the call started"
            )
        try:
            with resilience.deadline(remaining):
                return work()
        except (InvalidQueue, storage.LimitExceeded, queries.InvalidPage) as error:
            code, detail = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except (sourcecontrol.NotFound, storage.NotFound) as error:
            code, detail = grpc.StatusCode.NOT_FOUND, str(error)
        except resilience.DeadlineExceeded as error:
            code, detail = grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
        except resilience.Rejected as error:
            # Expected in numbers while a backend is down: no log line per call.
            milliseconds = max(1, round(error.retry_after * 1000))
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(milliseconds)),))
            code = grpc.StatusCode.UNAVAILABLE
            # Busy (its bulkhead full and nothing finishing) is not down (its breaker open):
            # an operator raises bulkhead_size for one and looks at the backend for the other.
            state = "busy" if isinstance(error, resilience.Overloaded) else "unavailable"
            detail = f"{error.dependency_name} is {state}; retry in {milliseconds} ms"
        except StovepipeError as error:
            if not error.transient:
                code, detail = _internal(error)
            else:
                # Which dependency: "storage", "messaging", "source control", "build runner".
                kind = error.dependency
                logger.warning("%s unavailable: %s", kind, error)
                code, detail = grpc.StatusCode.UNAVAILABLE, f"{kind} is unavailable; retry later"
        except Exception as error:
            code, detail = _internal(error)
        _abort(context, code, detail)


def _internal(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """``INTERNAL`` with an incident number; the detail goes to the log only."""
    incident = uuid.uuid4().hex[:12]
    logger.error("internal error (incident %s)", incident, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident})"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, detail: str) -> NoReturn:
    context.abort(code, detail)
    raise AssertionError("ServicerContext.abort returned")  # pragma: no cover


def add_to_server(servicer: StovepipeServicer, server: grpc.Server) -> None:
    """Register ``servicer`` on ``server``; requests that do not parse reach it as
    :class:`Malformed`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Ping": grpc.unary_unary_rpc_method_handler(
            servicer.Ping,
            request_deserializer=_tolerant(pb.PingRequest.FromString),
            response_serializer=pb.PingResponse.SerializeToString,
        ),
        "Ingest": grpc.unary_unary_rpc_method_handler(
            servicer.Ingest,
            request_deserializer=_tolerant(pb.IngestRequest.FromString),
            response_serializer=pb.IngestResponse.SerializeToString,
        ),
        "GetRequest": grpc.unary_unary_rpc_method_handler(
            servicer.GetRequest,
            request_deserializer=_tolerant(pb.GetRequestRequest.FromString),
            response_serializer=pb.GetRequestResponse.SerializeToString,
        ),
        "GetQueue": grpc.unary_unary_rpc_method_handler(
            servicer.GetQueue,
            request_deserializer=_tolerant(pb.GetQueueRequest.FromString),
            response_serializer=pb.GetQueueResponse.SerializeToString,
        ),
        "ListRequests": grpc.unary_unary_rpc_method_handler(
            servicer.ListRequests,
            request_deserializer=_tolerant(pb.ListRequestsRequest.FromString),
            response_serializer=pb.ListRequestsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
