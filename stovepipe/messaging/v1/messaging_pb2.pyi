from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ProcessRequest(_message.Message):
    __slots__ = ("id", "queue")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("id", "queue")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class BuildSignal(_message.Message):
    __slots__ = ("build_id", "request_id", "queue")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    request_id: str
    queue: str
    def __init__(self, build_id: _Optional[str] = ..., request_id: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class RecordRequest(_message.Message):
    __slots__ = ("id", "queue")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...
