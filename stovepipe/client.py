"""A typed client of ``stovepipe.v1.Stovepipe`` (the generated stub carries no types).

>>> import grpc
>>> with grpc.insecure_channel("127.0.0.1:50051") as channel:  # doctest: +SKIP
...     client = StovepipeClient(channel)
...     print(client.Ingest(pb.IngestRequest(queue="monorepo/main"), timeout=5).id)
request/monorepo/main/1
"""

from __future__ import annotations

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
