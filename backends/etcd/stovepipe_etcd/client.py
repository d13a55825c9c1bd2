"""A minimal etcd v3 client: Range and Txn over a few gRPC channels, every call under a deadline.

It speaks etcd's gRPC API directly (messages compiled from ``etcdrpc/rpc.proto``), so each
store operation is exactly the request it appears to be: no hidden reads, retries or
connection checks. gRPC errors become the storage contract's errors here and nowhere else.

Every call of a gRPC channel goes through that channel's one connection and its completion
queue, and threads calling at once contend there; so the client opens a small pool of
channels, each on a connection of its own, and each thread keeps to one of them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from stovepipe import resilience
from stovepipe.storage.errors import StorageError, Unavailable
from stovepipe_etcd.etcdrpc.rpc_pb2 import (
    AuthenticateRequest,
    AuthenticateResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)

# Faults that go away by themselves: the member is down or unreachable, the cluster has no
# leader or is electing one, the call ran out of time, or the server sheds load.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    # Reconnect soon after a member comes back instead of backing off for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""Channel options of every connection; the benchmark's raw client uses the same."""

DEFAULT_CHANNELS = 4
"""Channels (connections) one client opens; threads are spread over them."""


class _Channel:
    """One channel and the methods the client calls on it."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.range = self._method("/etcdserverpb.KV/Range", RangeRequest, RangeResponse)
        self.txn = self._method("/etcdserverpb.KV/Txn", TxnRequest, TxnResponse)
        self.authenticate = self._method(
            "/etcdserverpb.Auth/Authenticate", AuthenticateRequest, AuthenticateResponse
        )

    def _method(
        self, path: str, request: type[_Request], response: type[_Response]
    ) -> grpc.UnaryUnaryMultiCallable[_Request, _Response]:
        return self.channel.unary_unary(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )


def mapped_error(
    error: grpc.RpcError, target: str, *, callers_deadline: bool = False
) -> StorageError:
    """The storage error for a failed call: transient faults are ``Unavailable``; a call that
    ran out of time when its time was the caller's deadline (``callers_deadline``) is
    :class:`~stovepipe.resilience.DeadlineExceeded`, which says nothing of etcd's health.

    etcd answers ``UNKNOWN: context deadline exceeded`` when the deadline it was sent ran out
    on its side: a deadline like gRPC's own ``DEADLINE_EXCEEDED``, not an unknown failure.
    """
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    message = f"etcd at {target}: {code.name}: {details}"
    if code == grpc.StatusCode.UNKNOWN and "context deadline exceeded" in (details or ""):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and callers_deadline:
        return resilience.DeadlineExceeded(f"{message} (the caller's deadline)")
    if code in _TRANSIENT:
        return Unavailable(message)
    return StorageError(message)


class EtcdClient:
    """``channels`` channels to an etcd endpoint (at least 1), each thread keeping to one.

    With ``user`` set, the client authenticates on first use and again whenever the server
    rejects its token as expired or invalid (the server checks the token before it applies a
    request, so repeating the request is safe).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        credentials: grpc.ChannelCredentials | None = None,
        user: str | None = None,
        password: str = "",
        channels: int = DEFAULT_CHANNELS,
    ) -> None:
        if channels < 1:
            raise ValueError(f"an etcd client needs at least one channel, not {channels}")
        self.target = target
        self.timeout = timeout
        self._user = user
        self._password = password
        self._token_lock = threading.Lock()
        self._metadata: tuple[tuple[str, str], ...] | None = None if user else ()
        # Channels with equal options would share one connection (gRPC's global subchannel
        # pool); a local pool gives each channel its own.
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            _Channel(
                grpc.insecure_channel(target, options=options)
                if credentials is None
                else grpc.secure_channel(target, credentials, options=options)
            )
            for _ in range(channels)
        ]
        self._assigned = itertools.count()
        self._local = threading.local()

    def _mine(self) -> _Channel:
        """The calling thread's channel, assigned round robin on its first call."""
        channel: _Channel | None = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._channels[next(self._assigned) % len(self._channels)]
            self._local.channel = channel
        return channel

    def range(self, key: bytes, timeout: float | None = None) -> RangeResponse:
        """A linearizable read of one key."""
        return self._call(lambda channel: channel.range, RangeRequest(key=key), timeout)

    def txn(self, request: TxnRequest, timeout: float | None = None) -> TxnResponse:
        """One transaction: compares, then the success or the failure operations."""
        return self._call(lambda channel: channel.txn, request, timeout)

    def _call(
        self,
        method_of: Callable[[_Channel], grpc.UnaryUnaryMultiCallable[_Request, _Response]],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        method = method_of(self._mine())
        # The caller's deadline, if sooner, bounds the call too (DeadlineExceeded if passed).
        own = self.timeout if timeout is None else timeout
        timeout = resilience.bounded(own)
        callers = timeout < own  # running out of time then is the caller's, not etcd's
        metadata = self._metadata
        if metadata is None:
            metadata = self._authenticated(stale=None, timeout=timeout)
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            if self._user is None or not _token_rejected(error):
                raise mapped_error(error, self.target, callers_deadline=callers) from None
        except ValueError:  # gRPC's answer to a call on a closed channel
            raise StorageError(f"etcd at {self.target}: the storage is closed") from None
        metadata = self._authenticated(stale=metadata, timeout=timeout)
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise mapped_error(error, self.target, callers_deadline=callers) from None
        except ValueError:
            raise StorageError(f"etcd at {self.target}: the storage is closed") from None

    def _authenticated(
        self, stale: tuple[tuple[str, str], ...] | None, timeout: float
    ) -> tuple[tuple[str, str], ...]:
        """Call metadata with a valid token; fetch a new one unless another thread just did."""
        with self._token_lock:
            if self._metadata is not None and self._metadata is not stale:
                return self._metadata
            try:
                response = self._mine().authenticate(
                    AuthenticateRequest(name=self._user, password=self._password),
                    timeout=timeout,
                )
            except grpc.RpcError as error:
                raise mapped_error(error, self.target) from None
            self._metadata = (("token", response.token),)
            return self._metadata

    def authenticate(self) -> None:
        """Fetch a token now if the client has a user, so wrong credentials fail early."""
        if self._user is not None:
            self._authenticated(stale=None, timeout=self.timeout)

    def close(self) -> None:
        """Close the channels; calls in flight fail. Idempotent."""
        for channel in self._channels:
            channel.channel.close()


def _token_rejected(error: grpc.RpcError) -> bool:
    """True for etcd's "invalid auth token" and "revision of auth store is old"."""
    if not isinstance(error, grpc.Call):
        return False
    details = error.details() or ""
    return error.code() == grpc.StatusCode.UNAUTHENTICATED or "auth store is old" in details
