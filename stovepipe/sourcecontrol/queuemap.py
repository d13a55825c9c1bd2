"""The configured :class:`~stovepipe.sourcecontrol.contract.SourceControlFactory`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from stovepipe.sourcecontrol.contract import NotFound, SourceControl


class QueueMap:
    """A fixed binding of queue names to sources, exact (byte for byte) on the name."""

    __slots__ = ("_bindings",)

    def __init__(self, bindings: Mapping[str, SourceControl]) -> None:
        # A private copy: the binding is fixed once the factory is built.
        self._bindings: Mapping[str, SourceControl] = MappingProxyType(dict(bindings))

    def for_queue(self, queue: str) -> SourceControl:
        """Return the queue's source, or raise ``NotFound`` naming the unknown queue."""
        try:
            return self._bindings[queue]
        except KeyError:
            raise NotFound(f"unknown queue {queue!r}") from None

    def queues(self) -> list[str]:
        """The configured queue names, sorted."""
        return sorted(self._bindings)
