"""The configured :class:`~stovepipe.buildrunner.contract.BuildRunnerFactory`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from stovepipe.buildrunner.contract import BuildRunner, NotFound


class RunnerMap:
    """A fixed binding of queue names to build runners, exact (byte for byte) on the name."""

    __slots__ = ("_bindings",)

    def __init__(self, bindings: Mapping[str, BuildRunner]) -> None:
        # A private copy: the binding is fixed once the factory is built.
        self._bindings: Mapping[str, BuildRunner] = MappingProxyType(dict(bindings))

    def for_queue(self, queue: str) -> BuildRunner:
        """Return the queue's runner, or raise ``NotFound`` naming the queue without one."""
        try:
            return self._bindings[queue]
        except KeyError:
            raise NotFound(f"no build runner for queue {queue!r}") from None

    def queues(self) -> list[str]:
        """The queue names with a runner, sorted."""
        return sorted(self._bindings)
