"""SourceControl over a real git repository and ref."""

from __future__ import annotations

import os

from stovepipe.sourcecontrol.contract import Page


class GitSourceControl:
    """One ref of a local git repository; URIs are ``git://<remote>/<repo>/<ref>/<sha>``."""

    def __init__(
        self, path: str | os.PathLike[str], ref: str, *, remote: str | None = None
    ) -> None:
        raise NotImplementedError

    def latest(self) -> str:
        raise NotImplementedError

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        raise NotImplementedError

    def history(self, cursor: str | None = None, limit: int = 100) -> Page:
        raise NotImplementedError
