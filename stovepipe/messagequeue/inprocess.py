"""A messaging queue inside one process, for the embedded default deployment."""

from __future__ import annotations

from stovepipe.messagequeue.contract import Handler


class InProcessMessageQueue:
    """Delivers on worker threads of this process (see the module docstring)."""

    def __init__(self, *, max_attempts: int = 5, backoff_seconds: float = 0.1) -> None:
        raise NotImplementedError

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        raise NotImplementedError

    def subscribe(self, topic: str, handler: Handler) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        raise NotImplementedError
