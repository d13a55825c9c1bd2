"""An in-memory SourceControl over a configured linear history, for tests and demos."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from stovepipe.sourcecontrol.contract import NotFound, Page, check_limit
from stovepipe.sourcecontrol.cursor import decode_cursor, encode_cursor


class FakeSourceControl:
    """A linear history of commit shas, newest first; URIs are ``fake://<name>/<sha>``.

    Every commit is an ancestor of every newer one. :meth:`push` adds a new head.
    Thread-safe.
    """

    def __init__(self, commits: Sequence[str] = (), *, name: str = "fake") -> None:
        self._name = name
        self._lock = threading.Lock()
        # Oldest first, so a push is an append and positions stay stable.
        self._shas: list[str] = []
        self._position: dict[str, int] = {}
        for sha in reversed(commits):
            self._append(sha)

    def _uri(self, sha: str) -> str:
        return f"fake://{self._name}/{sha}"

    def _append(self, sha: str) -> None:
        if not isinstance(sha, str) or not sha or "/" in sha:
            raise ValueError(f"a fake commit sha must be a non-empty str without '/': {sha!r}")
        if sha in self._position:
            raise ValueError(f"commit {sha!r} is already in the history")
        self._position[sha] = len(self._shas)
        self._shas.append(sha)

    def _position_of(self, uri: str) -> int:
        prefix = f"fake://{self._name}/"
        if isinstance(uri, str) and uri.startswith(prefix):
            position = self._position.get(uri[len(prefix) :])
            if position is not None:
                return position
        raise NotFound(f"unknown commit URI {uri!r}")

    def push(self, sha: str) -> str:
        """Make ``sha`` the new head and return its URI."""
        with self._lock:
            self._append(sha)
            return self._uri(sha)

    def latest(self) -> str:
        """The newest commit's URI; ``NotFound`` while the history is empty."""
        with self._lock:
            if not self._shas:
                raise NotFound(f"fake source {self._name!r} has no commits")
            return self._uri(self._shas[-1])

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is ``descendant`` or older; ``NotFound`` for unknown URIs."""
        with self._lock:
            return self._position_of(ancestor) <= self._position_of(descendant)

    def history(self, cursor: str | None = None, limit: int = 100) -> Page:
        """Up to ``limit`` URIs, newest first, from the head or from ``cursor``."""
        check_limit(limit)
        with self._lock:
            if cursor is None:
                if not self._shas:
                    raise NotFound(f"fake source {self._name!r} has no commits")
                start = len(self._shas) - 1
            else:
                sha = decode_cursor(f"fake://{self._name}", cursor)
                if sha not in self._position:
                    raise NotFound(f"history cursor names unknown commit {sha!r}")
                start = self._position[sha]
            stop = max(start - limit, -1)
            uris = tuple(self._uri(self._shas[i]) for i in range(start, stop, -1))
            next_cursor = (
                encode_cursor(f"fake://{self._name}", self._shas[stop]) if stop >= 0 else None
            )
            return Page(uris=uris, next_cursor=next_cursor)
