from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATE_UNSPECIFIED: _ClassVar[RequestState]
    REQUEST_STATE_ACCEPTED: _ClassVar[RequestState]
    REQUEST_STATE_PROCESSING: _ClassVar[RequestState]
    REQUEST_STATE_SUPERSEDED: _ClassVar[RequestState]
    REQUEST_STATE_SUCCEEDED: _ClassVar[RequestState]
    REQUEST_STATE_FAILED: _ClassVar[RequestState]
    REQUEST_STATE_CANCELLED: _ClassVar[RequestState]

class BuildStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUILD_STRATEGY_UNSPECIFIED: _ClassVar[BuildStrategy]
    BUILD_STRATEGY_FULL: _ClassVar[BuildStrategy]
    BUILD_STRATEGY_INCREMENTAL: _ClassVar[BuildStrategy]
REQUEST_STATE_UNSPECIFIED: RequestState
REQUEST_STATE_ACCEPTED: RequestState
REQUEST_STATE_PROCESSING: RequestState
REQUEST_STATE_SUPERSEDED: RequestState
REQUEST_STATE_SUCCEEDED: RequestState
REQUEST_STATE_FAILED: RequestState
REQUEST_STATE_CANCELLED: RequestState
BUILD_STRATEGY_UNSPECIFIED: BuildStrategy
BUILD_STRATEGY_FULL: BuildStrategy
BUILD_STRATEGY_INCREMENTAL: BuildStrategy

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("id", "uri")
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    uri: str
    def __init__(self, id: _Optional[str] = ..., uri: _Optional[str] = ...) -> None: ...

class GetRequestRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetRequestResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: Request
    def __init__(self, request: _Optional[_Union[Request, _Mapping]] = ...) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class GetQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: Queue
    def __init__(self, queue: _Optional[_Union[Queue, _Mapping]] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ("queue", "page_size", "page_token")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    queue: str
    page_size: int
    page_token: str
    def __init__(self, queue: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRequestsResponse(_message.Message):
    __slots__ = ("requests", "next_page_token")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[Request]
    next_page_token: str
    def __init__(self, requests: _Optional[_Iterable[_Union[Request, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "queue", "uri", "state", "version", "build_strategy", "base_uri")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUILD_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BASE_URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    uri: str
    state: RequestState
    version: int
    build_strategy: BuildStrategy
    base_uri: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., uri: _Optional[str] = ..., state: _Optional[_Union[RequestState, str]] = ..., version: _Optional[int] = ..., build_strategy: _Optional[_Union[BuildStrategy, str]] = ..., base_uri: _Optional[str] = ...) -> None: ...

class Queue(_message.Message):
    __slots__ = ("name", "latest_request_id", "last_green_uri", "last_green_request_id", "in_flight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_GREEN_URI_FIELD_NUMBER: _ClassVar[int]
    LAST_GREEN_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_request_id: str
    last_green_uri: str
    last_green_request_id: str
    in_flight: int
    def __init__(self, name: _Optional[str] = ..., latest_request_id: _Optional[str] = ..., last_green_uri: _Optional[str] = ..., last_green_request_id: _Optional[str] = ..., in_flight: _Optional[int] = ...) -> None: ...
