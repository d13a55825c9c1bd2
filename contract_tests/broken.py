"""Deliberately broken backends, each wrong in one way, to show the suite catches them.

They register the way any outside backend does (an entry point in ``stovepipe.storage``);
``test_suite_catches_broken_backends.py`` installs them only for the runs it starts.
"""

from __future__ import annotations

import dataclasses

from stovepipe.entity import Request
from stovepipe.storage.errors import VersionMismatch
from stovepipe.storage.memory import (
    MemoryBackend,
    MemoryCounter,
    MemoryRequestStore,
    MemoryRequestURIStore,
)


class _UpdateIgnoresVersion(MemoryRequestStore):
    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._requests.get(request.id)
            if stored is None:
                raise VersionMismatch(request.id)
            self._requests[request.id] = dataclasses.replace(
                stored, uri=request.uri, state=request.state, version=new_version
            )


class _CreateOverwrites(MemoryRequestStore):
    def create(self, request: Request) -> None:
        with self._lock:
            self._requests[request.id] = request


class _LowercaseRequestStore(MemoryRequestStore):
    def create(self, request: Request) -> None:
        super().create(dataclasses.replace(request, id=request.id.lower()))

    def get(self, request_id: str) -> Request:
        return dataclasses.replace(super().get(request_id.lower()), id=request_id)


class _LowercaseRequestURIStore(MemoryRequestURIStore):
    def create(self, queue: str, uri: str, request_id: str) -> None:
        super().create(queue.lower(), uri.lower(), request_id)

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        return super().get_id_by_uri(queue.lower(), uri.lower())


class _LowercaseCounter(MemoryCounter):
    def next(self, domain: str) -> int:
        return super().next(domain.lower())


def open_update_ignores_version(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _UpdateIgnoresVersion()
    return backend


def open_create_overwrites(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _CreateOverwrites()
    return backend


def open_lowercases_keys(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _LowercaseRequestStore()
    backend.request_uris = _LowercaseRequestURIStore()
    backend.counter = _LowercaseCounter()
    return backend
