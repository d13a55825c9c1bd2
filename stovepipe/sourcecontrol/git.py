"""SourceControl over one ref of a real git repository, read in-process with libgit2.

``latest()`` runs on every ingest, so it reads the ref through libgit2 (``pygit2``) in this
process rather than running ``git``: no process per call, a few microseconds per read.
libgit2 reads loose ref files on every lookup and re-reads ``packed-refs`` when its stamp
changes, and it rescans the object database when an object is missing, so new commits and
moved refs are seen at once, with no cache to go stale.

URIs are ``git://<remote>/<repo>/<ref>/<sha>``: ``<remote>`` defaults to ``local``,
``<repo>`` to the repository's directory name (without a ``.git`` suffix), and ``<ref>`` is
the ref as configured, less a leading ``refs/heads/``.

libgit2 keeps the objects it parses in a cache shared by every repository of the process, up to
256 MiB by default; a server that reads each new head's commit would grow by that much before
the cache evicted anything. The cache is bounded here to :data:`OBJECT_CACHE_BYTES`, so the
server's memory stays flat however many heads it sees.

History follows first parents from the head: the commits the branch itself pointed at in a
merge-based workflow, newest first. ``is_ancestor`` uses the full commit graph, like
``git merge-base --is-ancestor``. It walks back from the descendant in this process for at
most :data:`ANCESTRY_WALK` commits (the usual case: the last green commit a few commits
behind the new head), then asks ``git merge-base --is-ancestor``, in another process: libgit2
holds Python's global interpreter lock for the whole of a graph walk, so a walk over a large
history (an ancestor far back, or a rewritten branch, where the walk reaches the root) would
stop every thread of the server, Ping included, for as long as it takes (400 ms for 20,000
commits here). Without the ``git`` command it walks on in this process.

``checkout`` is the one operation that runs the ``git`` command: a build's checkout should
look exactly like one a developer makes (filters, attributes), and it is rare. It clones
with ``--shared`` (the new clone borrows the repository's objects, nothing is copied) and
checks the commit out detached in the new directory, so the repository's own working tree
and index are never touched. ``promote`` moves a local branch with compare-and-swap, so
racing promoters, in any process, never move it backwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Final

import pygit2

from stovepipe.sourcecontrol.contract import NotFound, Page, Refused, Unavailable, check_limit
from stovepipe.sourcecontrol.cursor import decode_cursor, encode_cursor

_SHA: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH_PREFIX: Final = "refs/heads/"

# Variables that point git at another repository, index or object store (the list
# ``git rev-parse --local-env-vars`` prints). Inherited from the server's environment they
# could make the checkout read or write the configured repository, so they are dropped.
_REPOSITORY_ENVIRONMENT: Final = frozenset(
    {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_DIR",
        "GIT_GRAFT_FILE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_OBJECT_DIRECTORY",
        "GIT_PREFIX",
        "GIT_REPLACE_REF_BASE",
        "GIT_SHALLOW_FILE",
        "GIT_WORK_TREE",
    }
)
# A promotion retries its compare-and-swap this often when other promoters keep winning.
_PROMOTE_ATTEMPTS: Final = 20

ANCESTRY_WALK: Final = 1000
"""Commits :meth:`GitSourceControl.is_ancestor` walks in this process (about a millisecond)
before it asks ``git`` instead."""

OBJECT_CACHE_BYTES: Final = 2 * 2**20
"""The most parsed git objects libgit2 keeps in memory, in bytes, for the whole process: the
heads and the history walks around them fit, and it is a few seconds' work to reparse."""


def bound_object_cache() -> None:
    """Bound libgit2's process-wide object cache to :data:`OBJECT_CACHE_BYTES` (idempotent).
    A setting of the whole process; a lower bound already set is kept."""
    _current, limit = pygit2.settings.cached_memory
    if limit > OBJECT_CACHE_BYTES:
        pygit2.settings.cache_max_size(OBJECT_CACHE_BYTES)


class GitSourceControl:
    """One ref of a local git repository. Thread-safe.

    ``path`` is the repository (its working tree or its git directory; a path inside a
    working tree finds the repository above it). ``ref`` is a branch name such as ``main``
    or a full ref such as ``refs/remotes/origin/main``. The ref need not exist yet:
    :meth:`latest` raises ``NotFound`` until it does. ``promote_ref`` is the local branch
    :meth:`promote` moves (``green`` or ``refs/heads/green``); without one, ``promote`` does
    nothing. Raises ``NotFound`` if there is no repository at ``path`` and ``ValueError`` if
    ``ref`` or ``promote_ref`` is not a valid name, or ``promote_ref`` is not a branch or is
    the queue's own ref.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ref: str,
        *,
        remote: str | None = None,
        promote_ref: str | None = None,
    ) -> None:
        self._ref = ref if ref.startswith("refs/") else _BRANCH_PREFIX + ref
        if not pygit2.reference_is_valid_name(self._ref):
            raise ValueError(f"not a valid git ref name: {ref!r}")
        self._promote_ref: str | None = None
        if promote_ref is not None:
            if promote_ref.startswith("refs/") and not promote_ref.startswith(_BRANCH_PREFIX):
                raise ValueError(f"the promotion ref must be a branch: {promote_ref!r}")
            full = promote_ref if promote_ref.startswith("refs/") else _BRANCH_PREFIX + promote_ref
            if not pygit2.reference_is_valid_name(full) or full == _BRANCH_PREFIX:
                raise ValueError(f"not a valid git branch name: {promote_ref!r}")
            if full == self._ref:
                raise ValueError(
                    f"the promotion ref {promote_ref!r} is the queue's own ref; "
                    "promoting would rewind the branch being watched"
                )
            self._promote_ref = full
        bound_object_cache()
        try:
            self._repository = pygit2.Repository(os.fspath(path))
        except pygit2.GitError as error:
            raise NotFound(f"no git repository at {os.fspath(path)!r}: {error}") from None
        # libgit2 objects must not be used by two threads at once; each call is short.
        self._lock = threading.Lock()
        root = Path(self._repository.workdir or self._repository.path).resolve()
        self._root = root
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

    def ref_is_unborn(self) -> bool:
        """Whether the ref does not exist yet but is the branch checked out in the
        repository or one of its working trees: a branch without commits (``git init``
        makes one), which its first commit brings to life.

        Read at start-up, to tell such a branch from a ref that is misspelled.
        """
        with self._lock:
            repositories = [self._repository]
            for name in self._repository.list_worktrees():
                try:
                    repositories.append(
                        pygit2.Repository(self._repository.lookup_worktree(name).path)
                    )
                except (pygit2.GitError, KeyError):
                    continue  # a working tree removed without `git worktree prune`
            for repository in repositories:
                try:
                    head = repository.lookup_reference("HEAD")
                except (KeyError, pygit2.GitError):
                    continue
                if head.type == pygit2.enums.ReferenceType.SYMBOLIC and head.target == self._ref:
                    return self._ref not in self._repository.references
            return False

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (or is the same commit).

        ``NotFound`` if either is not a commit of the repository, ``Unavailable`` if the graph
        cannot be read. At most :data:`ANCESTRY_WALK` commits are walked here; a longer walk
        runs in ``git``, so it holds neither the interpreter nor this queue's lock.
        """
        ancestor_sha, descendant_sha = self._sha_of(ancestor), self._sha_of(descendant)
        with self._lock:
            ancestor_id = self._commit(ancestor_sha).id
            descendant_id = self._commit(descendant_sha).id
            if ancestor_id == descendant_id:
                return True
            found = self._walk_for(ancestor_id, descendant_id, ANCESTRY_WALK)
        if found is not None:
            return found
        answer = self._git_is_ancestor(ancestor_sha, descendant_sha)
        if answer is not None:
            return answer
        with self._lock:  # no git command: walk on here
            found = self._walk_for(ancestor_id, descendant_id, None)
        return bool(found)

    def _descends(self, descendant_id: pygit2.Oid, ancestor_id: pygit2.Oid) -> bool:
        """Whether ``ancestor_id`` is reachable from ``descendant_id``, as :meth:`is_ancestor`
        finds it but all with the lock held (the walk beyond :data:`ANCESTRY_WALK` runs in
        ``git``, so other threads still run). ``Unavailable`` if the graph cannot be read."""
        found = self._walk_for(ancestor_id, descendant_id, ANCESTRY_WALK)
        if found is None:
            found = self._git_is_ancestor(str(ancestor_id), str(descendant_id))
        if found is None:
            found = self._walk_for(ancestor_id, descendant_id, None)
        return bool(found)

    def _walk_for(
        self, ancestor_id: pygit2.Oid, descendant_id: pygit2.Oid, limit: int | None
    ) -> bool | None:
        """Walk back from ``descendant_id`` for ``ancestor_id``: found, not reachable, or
        ``None`` after ``limit`` commits. Call with the lock held. One commit per step, so
        other threads run between steps."""
        try:
            walker = self._repository.walk(descendant_id, pygit2.enums.SortMode.TIME)
            for walked, commit in enumerate(walker, start=1):
                if commit.id == ancestor_id:
                    return True
                if limit is not None and walked >= limit:
                    return None
        except pygit2.GitError as error:
            raise Unavailable(f"cannot walk the commit graph: {error}") from None
        return False

    def _git_is_ancestor(self, ancestor_sha: str, descendant_sha: str) -> bool | None:
        """``git merge-base --is-ancestor``; ``None`` if the ``git`` command is missing."""
        try:
            completed = subprocess.run(
                [
                    "git",
                    "--git-dir",
                    self._repository.path,
                    "merge-base",
                    "--is-ancestor",
                    ancestor_sha,
                    descendant_sha,
                ],
                env=_git_environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
            )
        except FileNotFoundError:
            return None
        except OSError as error:
            raise Unavailable(f"cannot run git merge-base: {error}") from None
        if completed.returncode in (0, 1):
            return completed.returncode == 0
        detail = completed.stderr.strip() or f"exit status {completed.returncode}"
        raise Unavailable(f"git merge-base --is-ancestor failed: {detail}")

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

    def revision(self, uri: str) -> str:
        """The commit's full hex SHA; ``NotFound`` for an unknown URI."""
        sha = self._sha_of(uri)
        with self._lock:
            return str(self._commit(sha).id)

    def commit_time(self, uri: str) -> float:
        """The commit's committer time in seconds since the epoch (UTC); ``NotFound`` if unknown."""
        sha = self._sha_of(uri)
        with self._lock:
            return float(self._commit(sha).commit_time)

    def checkout(self, uri: str, directory: Path) -> None:
        """Clone the repository ``--shared`` into ``directory`` and check the commit out detached.

        Runs ``git``; hooks are disabled for the checkout. ``NotFound`` for an unknown URI,
        ``ValueError`` if ``directory`` holds files, ``Unavailable`` if git fails or is not
        installed (the partial checkout is removed).
        """
        sha = self.revision(uri)
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ValueError(f"checkout directory {os.fspath(directory)!r} is not empty")
        existed = directory.exists()
        environment = _git_environment()
        root = os.fspath(self._root)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            no_hooks = ["-c", f"core.hooksPath={os.devnull}"]
            for step, arguments in (
                ("clone", ["clone", "--quiet", "--shared", "--no-checkout", "--", root, "."]),
                ("checkout", [*no_hooks, "checkout", "--quiet", "--detach", sha]),
            ):
                completed = subprocess.run(
                    ["git", *arguments],
                    cwd=directory,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    check=False,
                )
                if completed.returncode != 0:
                    detail = completed.stderr.strip() or f"exit status {completed.returncode}"
                    raise Unavailable(f"git {step} of {sha} failed: {detail}")
        except FileNotFoundError:
            _remove(directory, existed)
            raise Unavailable("cannot check out: the git command is not installed") from None
        except OSError as error:
            _remove(directory, existed)
            raise Unavailable(f"cannot check out {sha}: {error}") from None
        except BaseException:
            _remove(directory, existed)
            raise

    def promote(self, uri: str) -> bool:
        """Move the promotion branch to the commit, forward only (see the contract)."""
        sha = self._sha_of(uri)
        with self._lock:
            target = self._commit(sha).id
            if self._promote_ref is None:
                return False
            try:
                for _ in range(_PROMOTE_ATTEMPTS):
                    moved = self._try_promote(self._promote_ref, target)
                    if moved is not None:
                        return moved
            except (pygit2.GitError, OSError) as error:
                raise Unavailable(f"cannot move {self._promote_ref!r}: {error}") from None
            raise Unavailable(f"{self._promote_ref!r} kept moving under a promotion; try again")

    def _try_promote(self, name: str, target: pygit2.Oid) -> bool | None:
        """One compare-and-swap attempt: whether the ref moved, ``None`` if it changed under
        us and the decision must be made again. Call with the lock held."""
        reference = self._repository.references.get(name)
        if reference is not None:
            current = reference.resolve().target
            if not isinstance(current, pygit2.Oid):
                raise Unavailable(f"{name!r} does not point at a commit")
            if current == target:
                return False
            try:
                if self._descends(current, target):
                    return False
                forward = self._descends(target, current)
            except (Unavailable, KeyError):
                forward = False  # the current commit is gone, as after a rewrite
            if not forward and not _last_moved_by_promotion(reference):
                # Not a fast-forward, and someone else moved the branch last: moving it would
                # drop their commits. A sideways move is ours to make only over our own.
                raise Refused(
                    f"will not move {name!r} from {current} to {target}: that is not forward, "
                    "and the branch was last moved by someone else"
                )
        self._refuse_if_checked_out(name)
        message = f"{_PROMOTE_MESSAGE} {target}"
        if reference is None:
            try:
                self._repository.create_reference_direct(name, target, False, message=message)
            except pygit2.AlreadyExistsError:
                return None  # another promoter created it first: decide again
            return True
        try:
            reference.set_target(target, message)
        except pygit2.GitError:
            # libgit2 moves a ref only from the value it was read at; anything else moving it
            # meanwhile is reported as a generic error, so look again to tell which it was.
            latest = self._repository.references.get(name)
            if latest is None or latest.target != reference.target:
                return None
            raise
        return True

    def _refuse_if_checked_out(self, name: str) -> None:
        """Raise ``Refused`` if branch ``name`` is the HEAD of any working tree of the
        repository: moving it would leave that tree's files and index out of step."""
        heads: list[tuple[str, pygit2.Repository]] = []
        repository = self._repository
        common = Path(repository.path) / "commondir"
        if common.is_file():  # opened through a linked worktree: also check the main one
            main = pygit2.Repository(str(Path(repository.path) / common.read_text().strip()))
            if not main.is_bare:
                heads.append((main.workdir, main))
        if not repository.is_bare:
            heads.append((repository.workdir, repository))
        for worktree_name in repository.list_worktrees():
            worktree = repository.lookup_worktree(worktree_name)
            if not worktree.is_prunable:
                heads.append((worktree.path, pygit2.Repository(worktree.path)))
        for workdir, opened in heads:
            head = opened.references.get("HEAD")
            symbolic = head is not None and head.type == pygit2.enums.ReferenceType.SYMBOLIC
            if symbolic and head is not None and head.target == name:
                raise Refused(
                    f"will not move {name!r}: it is checked out in the working tree at "
                    f"{workdir!r}; configure a promotion branch nobody checks out"
                )


_PROMOTE_MESSAGE = "stovepipe: promote to"
"""How a promotion begins its reflog entry, so the next one knows who moved the branch last."""


def _git_environment() -> dict[str, str]:
    """This process's environment for a ``git`` command, without the variables that would
    point it at another repository, and never prompting."""
    environment = {
        name: value for name, value in os.environ.items() if name not in _REPOSITORY_ENVIRONMENT
    }
    environment["GIT_TERMINAL_PROMPT"] = "0"
    return environment


def _last_moved_by_promotion(reference: pygit2.Reference) -> bool:
    """Whether the newest reflog entry of ``reference`` is one of our promotions."""
    for entry in reference.log():
        return bool(entry.message.startswith(_PROMOTE_MESSAGE))
    return False  # no reflog: we cannot tell, so the branch is not ours to move sideways


def _remove(directory: Path, existed: bool) -> None:
    """Undo a failed checkout: empty ``directory``, and remove it if this call made it."""
    if not existed:
        shutil.rmtree(directory, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
