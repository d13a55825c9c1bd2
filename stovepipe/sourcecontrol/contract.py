"""The SourceControl contract: the only place commit URIs are minted and interpreted.

A :class:`SourceControl` is bound to one queue (a repository and ref) by a
:class:`SourceControlFactory`, so its methods take no queue. URIs and history cursors are
opaque: nothing outside the implementation that minted them parses them.

Errors, all under :class:`SourceControlError` (in the tree of :mod:`stovepipe.errors`):

* :class:`NotFound`: an unknown queue, a missing ref, or a URI this source did not mint or no
  longer knows.
* :class:`Unavailable`: a transient fault (repository unreadable, remote down); retry later.
* :class:`Refused`: an operation the source will not do, such as moving a branch that is
  checked out in a working tree; not transient.
* ``ValueError``: a malformed argument, e.g. a ``limit`` outside ``1..MAX_PAGE_LIMIT`` or a
  cursor this source did not issue.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Final, Protocol

from stovepipe.errors import SourceControlError as SourceControlError
from stovepipe.errors import Transient

MAX_PAGE_LIMIT: Final = 1000
"""The largest ``limit`` :meth:`SourceControl.history` accepts: pages stay cheap to serve."""


class NotFound(SourceControlError):
    """An unknown queue, ref or URI."""


class Unavailable(Transient, SourceControlError):
    """A transient fault: the repository is unreadable or the remote is down."""


class Refused(SourceControlError):
    """The source will not do this, e.g. move a branch that is checked out; not transient."""


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of commit URIs, newest first.

    ``next_cursor`` continues the walk after the last URI of this page; ``None`` means this
    is the last page.
    """

    uris: tuple[str, ...]
    next_cursor: str | None


class SourceControl(Protocol):
    """One queue's commits. Implementations are thread-safe."""

    def latest(self) -> str:
        """Return the URI of the commit the queue's ref points at now.

        Called on every ingest, so it must be cheap and never stale. Raises ``NotFound`` if
        the ref does not exist (or has no commit), ``Unavailable`` on a transient fault.
        """
        ...

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Return whether ``ancestor`` is reachable from ``descendant``.

        A commit is its own ancestor. ``False`` for two known commits is the signal that
        history was rewritten. Raises ``NotFound`` if either URI is unknown to this source.
        """
        ...

    def history(self, cursor: str | None = None, limit: int = 100) -> Page:
        """Return up to ``limit`` commit URIs of the queue's ref, newest first.

        Without a cursor the page starts at :meth:`latest`; with the ``next_cursor`` of an
        earlier page it continues where that page ended (also after the ref moved on).
        Raises ``ValueError`` for a ``limit`` outside ``1..MAX_PAGE_LIMIT`` or a cursor this
        source did not issue, ``NotFound`` if the ref or the cursor's commit is gone.
        """
        ...

    def revision(self, uri: str) -> str:
        """Return the id of the commit ``uri`` names (for git, its full hex SHA).

        Raises ``NotFound`` if the URI is unknown to this source.
        """
        ...

    def commit_time(self, uri: str) -> float:
        """Return when the commit ``uri`` names was committed, in seconds since the epoch (UTC).

        For git this is the committer time, whole seconds. Raises ``NotFound`` if the URI is
        unknown to this source.
        """
        ...

    def checkout(self, uri: str, directory: pathlib.Path) -> None:
        """Write a clean checkout of the commit ``uri`` names into ``directory``.

        ``directory`` must not exist yet, or be empty; it is created, parents included. The
        checkout is a fresh copy of the commit's tree with nothing else in it: the
        configured repository's own working tree and index are never read or written. On
        failure nothing is left at ``directory`` that this call created. Raises ``NotFound``
        if the URI is unknown, ``ValueError`` if ``directory`` holds files, ``Unavailable``
        if the checkout cannot be made.
        """
        ...

    def promote(self, uri: str) -> bool:
        """Move the queue's promotion ref to the commit ``uri`` names, forward only.

        Returns ``True`` if the ref moved (or was created), ``False`` if it already points
        at that commit or at a descendant of it, or if this source has no promotion ref. A
        ref pointing at a commit that is neither an ancestor nor a descendant (history was
        rewritten) is moved only if a promotion moved it last: commits someone else put on
        it are never dropped. Safe under concurrent callers, also across processes: the ref
        only ever moves from the value the decision was made on. Raises ``NotFound`` if the
        URI is unknown (e.g. a rewrite dropped the commit), ``Refused`` if the ref cannot be
        moved safely (it is checked out in a working tree, or someone else moved it and this
        is not forward), ``Unavailable`` on a transient fault.
        """
        ...


class SourceControlFactory(Protocol):
    """Binds one :class:`SourceControl` to each configured queue."""

    def for_queue(self, queue: str) -> SourceControl:
        """Return the queue's source, or raise ``NotFound`` for an unknown queue."""
        ...


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` unless ``limit`` is an int in ``1..MAX_PAGE_LIMIT``."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit is {limit}; it must lie in [1, {MAX_PAGE_LIMIT}]")
