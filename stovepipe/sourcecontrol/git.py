"""SourceControl over one ref of a real git repository, read in-process with libgit2.

``latest()`` runs on every ingest, so it reads the ref through libgit2 (``pygit2``) in this
process rather than running ``git``: no process per call, a few microseconds per read.
libgit2 reads loose ref files on every lookup and re-reads ``packed-refs`` when its stamp
changes, and it rescans the object database when an object is missing, so new commits and
moved refs are seen at once, with no cache to go stale.

URIs are ``git://<remote>/<repo>/<ref>/<sha>``: ``<remote>`` defaults to ``local``,
``<repo>`` to the repository's directory name (without a ``.git`` suffix), and ``<ref>`` is
the ref as configured, less a leading ``refs/heads/``.

History follows first parents from the head: the commits the branch itself pointed at in a
merge-based workflow, newest first. ``is_ancestor`` uses the full commit graph, like
``git merge-base --is-ancestor``.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Final

import pygit2

from stovepipe.sourcecontrol.contract import NotFound, Page, Unavailable, check_limit
from stovepipe.sourcecontrol.cursor import decode_cursor, encode_cursor

_SHA: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH_PREFIX: Final = "refs/heads/"


class GitSourceControl:
    """One ref of a local git repository. Thread-safe.

    ``path`` is the repository (its working tree or its git directory; a path inside a
    working tree finds the repository above it). ``ref`` is a branch name such as ``main``
    or a full ref such as ``refs/remotes/origin/main``. The ref need not exist yet:
    :meth:`latest` raises ``NotFound`` until it does. Raises ``NotFound`` if there is no
    repository at ``path`` and ``ValueError`` if ``ref`` is not a valid ref name.
    """

    def __init__(
        self, path: str | os.PathLike[str], ref: str, *, remote: str | None = None
    ) -> None:
        self._ref = ref if ref.startswith("refs/") else _BRANCH_PREFIX + ref
        if not pygit2.reference_is_valid_name(self._ref):
            raise ValueError(f"not a valid git ref name: {ref!r}")
        try:
            self._repository = pygit2.Repository(os.fspath(path))
        except pygit2.GitError as error:
            raise NotFound(f"no git repository at {os.fspath(path)!r}: {error}") from None
        # libgit2 objects must not be used by two threads at once; each call is short.
        self._lock = threading.Lock()
        root = Path(self._repository.workdir or self._repository.path).resolve()
        name = root.name.removesuffix(".git") or root.name
        short_ref = self._ref.removeprefix(_BRANCH_PREFIX)
        self._prefix = f"git://{remote or 'local'}/{name}/{short_ref}/"

    def __repr__(self) -> str:
        return f"GitSourceControl({self._prefix!r})"

    def _uri(self, commit_id: pygit2.Oid) -> str:
        return f"{self._prefix}{commit_id}"

    def _head(self) -> pygit2.Oid:
        """The commit the ref points at. Call with the lock held."""
        try:
            reference = self._repository.lookup_reference(self._ref)
            return reference.peel(pygit2.Commit).id
        except KeyError:
            raise NotFound(f"ref {self._ref!r} does not exist") from None
        except (pygit2.InvalidSpecError, ValueError) as error:
            raise NotFound(f"ref {self._ref!r} does not name a commit: {error}") from None
        except pygit2.GitError as error:
            raise Unavailable(f"cannot read ref {self._ref!r}: {error}") from None

    def _commit(self, sha: str) -> pygit2.Commit:
        """The commit ``sha`` (lowercase hex). Call with the lock held."""
        try:
            found = self._repository.get(sha)
        except pygit2.GitError as error:
            raise Unavailable(f"cannot read commit {sha}: {error}") from None
        if not isinstance(found, pygit2.Commit):
            raise NotFound(f"no commit {sha} in the repository")
        return found

    def _sha_of(self, uri: str) -> str:
        if isinstance(uri, str) and uri.startswith(self._prefix):
            sha = uri[len(self._prefix) :]
            if _SHA.fullmatch(sha):
                return sha
        raise NotFound(f"not a commit URI of {self._prefix}: {uri!r}")

    def latest(self) -> str:
        """The URI of the commit the ref points at now."""
        with self._lock:
            return self._uri(self._head())

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (or is the same commit)."""
        ancestor_sha, descendant_sha = self._sha_of(ancestor), self._sha_of(descendant)
        with self._lock:
            ancestor_id = self._commit(ancestor_sha).id
            descendant_id = self._commit(descendant_sha).id
            if ancestor_id == descendant_id:
                return True
            try:
                return self._repository.descendant_of(descendant_id, ancestor_id)
            except pygit2.GitError as error:
                raise Unavailable(f"cannot walk the commit graph: {error}") from None

    def history(self, cursor: str | None = None, limit: int = 100) -> Page:
        """Up to ``limit`` URIs along first parents, newest first, from the head or ``cursor``."""
        check_limit(limit)
        issuer = self._prefix.removesuffix("/")
        start_sha = None if cursor is None else decode_cursor(issuer, cursor)
        if start_sha is not None and not _SHA.fullmatch(start_sha):
            raise ValueError("malformed history cursor")
        with self._lock:
            commit = self._commit(str(self._head()) if start_sha is None else start_sha)
            uris: list[str] = []
            while True:
                uris.append(self._uri(commit.id))
                if not commit.parent_ids:
                    return Page(uris=tuple(uris), next_cursor=None)
                parent_id = commit.parent_ids[0]
                if len(uris) == limit:
                    return Page(uris=tuple(uris), next_cursor=encode_cursor(issuer, str(parent_id)))
                commit = self._commit(str(parent_id))
