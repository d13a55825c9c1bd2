"""A typed client of ``stovepipe.v1.Stovepipe`` (the generated stub carries no types).

>>> import grpc
>>> with grpc.insecure_channel("127.0.0.1:50051") as channel:  # doctest: +SKIP
...     client = StovepipeClient(channel)
...     print(client.Ingest(pb.IngestRequest(queue="monorepo/main"), timeout=5).id)
request/monorepo/main/1

:func:`connect` opens a channel with TLS (mutual TLS with a client certificate) and a bearer
token, as a server configured with ``tls_cert`` and tokens needs.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc

from stovepipe.v1 import stovepipe_pb2 as pb

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Stovepipe"].full_name


class StovepipeClient:
    """The service's methods as callables over ``channel``, like the generated stub."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Ping: grpc.UnaryUnaryMultiCallable[pb.PingRequest, pb.PingResponse] = (
            channel.unary_unary(
                f"/{SERVICE_NAME}/Ping",
                request_serializer=pb.PingRequest.SerializeToString,
                response_deserializer=pb.PingResponse.FromString,
            )
        )
        self.Ingest: grpc.UnaryUnaryMultiCallable[pb.IngestRequest, pb.IngestResponse] = (
            channel.unary_unary(
                f"/{SERVICE_NAME}/Ingest",
                request_serializer=pb.IngestRequest.SerializeToString,
                response_deserializer=pb.IngestResponse.FromString,
            )
        )
        self.GetRequest: grpc.UnaryUnaryMultiCallable[
            pb.GetRequestRequest, pb.GetRequestResponse
        ] = channel.unary_unary(
            f"/{SERVICE_NAME}/GetRequest",
            request_serializer=pb.GetRequestRequest.SerializeToString,
            response_deserializer=pb.GetRequestResponse.FromString,
        )
        self.GetQueue: grpc.UnaryUnaryMultiCallable[pb.GetQueueRequest, pb.GetQueueResponse] = (
            channel.unary_unary(
                f"/{SERVICE_NAME}/GetQueue",
                request_serializer=pb.GetQueueRequest.SerializeToString,
                response_deserializer=pb.GetQueueResponse.FromString,
            )
        )
        self.ListRequests: grpc.UnaryUnaryMultiCallable[
            pb.ListRequestsRequest, pb.ListRequestsResponse
        ] = channel.unary_unary(
            f"/{SERVICE_NAME}/ListRequests",
            request_serializer=pb.ListRequestsRequest.SerializeToString,
            response_deserializer=pb.ListRequestsResponse.FromString,
        )


def connect(
    address: str,
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A channel to ``HOST:PORT``: TLS when ``tls`` or any PEM is given (the server verified
    against ``root_certificates``, else the system's roots; the client's own certificate
    and key for mutual TLS), plaintext otherwise; every call carries
    ``authorization: Bearer TOKEN`` when ``token`` is given."""
    if tls or root_certificates or certificate_chain or private_key:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to every unary call; the token never shows in a
    ``repr``."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(***)"

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = _CallDetails(
            client_call_details.method,
            client_call_details.timeout,
            (*(client_call_details.metadata or ()), self._header),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
            client_call_details.compression,
        )
        return continuation(details, request)
