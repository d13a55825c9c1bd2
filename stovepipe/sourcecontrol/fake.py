"""An in-memory SourceControl over a configured linear history, for tests and demos."""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Mapping, Sequence

from stovepipe.sourcecontrol.contract import NotFound, Page, check_limit
from stovepipe.sourcecontrol.cursor import decode_cursor, encode_cursor


class FakeSourceControl:
    """A linear history of commit shas, newest first; URIs are ``fake://<name>/<sha>``.

    Every commit is an ancestor of every newer one. :meth:`push` adds a new head.
    ``commit_times`` gives commits' times by sha, in seconds since the epoch (UTC); a commit
    without one was committed at 0.0. The promotion ref starts unset; :attr:`promoted` and
    :attr:`promotions` show where :meth:`promote` moved it. Thread-safe.
    """

    def __init__(
        self,
        commits: Sequence[str] = (),
        *,
        name: str = "fake",
        commit_times: Mapping[str, float] | None = None,
    ) -> None:
        self._name = name
        self._lock = threading.Lock()
        # Oldest first, so a push is an append and positions stay stable.
        self._shas: list[str] = []
        self._position: dict[str, int] = {}
        self._commit_times: dict[str, float] = dict(commit_times or {})
        self._promotions: list[str] = []
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

    def push(self, sha: str, *, commit_time: float | None = None) -> str:
        """Make ``sha`` the new head and return its URI; ``commit_time`` sets its time."""
        with self._lock:
            self._append(sha)
            if commit_time is not None:
                self._commit_times[sha] = float(commit_time)
            return self._uri(sha)

    @property
    def promoted(self) -> str | None:
        """The URI the promotion ref points at, ``None`` until the first promotion."""
        with self._lock:
            return self._promotions[-1] if self._promotions else None

    @property
    def promotions(self) -> tuple[str, ...]:
        """Every URI the promotion ref was moved to, oldest first."""
        with self._lock:
            return tuple(self._promotions)

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

    def revision(self, uri: str) -> str:
        """The sha of ``uri``; ``NotFound`` for an unknown URI."""
        with self._lock:
            return self._shas[self._position_of(uri)]

    def commit_time(self, uri: str) -> float:
        """The configured time of ``uri``'s commit (0.0 if none); ``NotFound`` if unknown."""
        with self._lock:
            return self._commit_times.get(self._shas[self._position_of(uri)], 0.0)

    def checkout(self, uri: str, directory: pathlib.Path) -> None:
        """Create ``directory`` holding one file, ``FAKE_COMMIT``: the sha and a newline.

        ``NotFound`` for an unknown URI, ``ValueError`` if ``directory`` holds files.
        """
        with self._lock:
            sha = self._shas[self._position_of(uri)]
        directory = pathlib.Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ValueError(f"checkout directory {os.fspath(directory)!r} is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "FAKE_COMMIT").write_text(sha + "\n")

    def promote(self, uri: str) -> bool:
        """Move the promotion ref to ``uri`` unless it is already there or further on."""
        with self._lock:
            position = self._position_of(uri)
            if self._promotions and self._position_of(self._promotions[-1]) >= position:
                return False
            self._promotions.append(uri)
            return True
