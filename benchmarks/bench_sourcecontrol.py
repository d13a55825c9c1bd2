"""How much ``GitSourceControl.latest()`` costs, the read behind every ingest.

    python -m benchmarks.bench_sourcecontrol

Compares it with the raw libgit2 read it wraps (reference lookup and peel, no lock, no URI)
and with running ``git rev-parse`` per call, the process-per-call design it avoids.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pygit2

from benchmarks.timing import measure, print_comparison
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import run_git as git


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
