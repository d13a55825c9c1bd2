"""How much ``GitSourceControl.latest()`` costs, the read behind every ingest.

    python -m benchmarks.bench_sourcecontrol

Compares it with the raw libgit2 read it wraps (reference lookup and peel, no lock, no URI)
and with running ``git rev-parse`` per call, the process-per-call design it avoids.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pygit2

from benchmarks.timing import measure, print_comparison
from stovepipe.sourcecontrol.git import GitSourceControl

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        repo = Path(directory) / "repo"
        git(Path(directory), "init", "--quiet", "--initial-branch=main", str(repo))
        for n in range(20):
            git(repo, "commit", "--quiet", "--allow-empty", f"--message=commit {n}")
        source = GitSourceControl(repo, "main")
        raw = pygit2.Repository(str(repo))

        def raw_read(_: int) -> object:
            return raw.lookup_reference("refs/heads/main").peel(pygit2.Commit).id

        ours = measure(lambda _: source.latest(), count=20_000)
        floor = measure(raw_read, count=20_000)
        process = measure(lambda _: git(repo, "rev-parse", "refs/heads/main"), count=200, warmup=5)
        print_comparison(
            "GitSourceControl.latest() against the raw libgit2 read",
            [("latest (loose ref)", ours, floor)],
        )
        git(repo, "pack-refs", "--all")
        ours_packed = measure(lambda _: source.latest(), count=20_000)
        floor_packed = measure(raw_read, count=20_000)
        print_comparison(
            "after git pack-refs --all", [("latest (packed ref)", ours_packed, floor_packed)]
        )
        print_comparison(
            "a process per call (git rev-parse) against latest()",
            [("git rev-parse", process, ours)],
        )


if __name__ == "__main__":
    main()
