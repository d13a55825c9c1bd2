"""Run as a script: a separate OS process using a CommandBuildRunner over a shared builds
directory, as a second server would. Prints each build id it triggers on its own line."""

from __future__ import annotations

import argparse
import pathlib
import sys
import threading
import time

from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.sourcecontrol.git import GitSourceControl


class SlowCheckout(GitSourceControl):
    """Checks out only after ``delay`` seconds."""

    delay = 0.0

    def checkout(self, uri: str, directory: pathlib.Path) -> None:
        time.sleep(self.delay)
        super().checkout(uri, directory)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("builds_dir")
    parser.add_argument("command")
    parser.add_argument("request_id")
    parser.add_argument("--queue", default="monorepo/main")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--slow-checkout", type=float, default=0.0)
    parser.add_argument("--go-file", help="wait for this file to exist before triggering")
    parser.add_argument("--until", help="poll until the build has this status, then exit")
    parser.add_argument("--hang", action="store_true", help="never exit (to be killed)")
    args = parser.parse_args()
    SlowCheckout.delay = args.slow_checkout
    source = SlowCheckout(args.repo, "main")
    runner = CommandBuildRunner(
        args.queue, source, args.command, args.timeout, pathlib.Path(args.builds_dir)
    )
    if args.go_file:
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not pathlib.Path(args.go_file).exists():
            if time.monotonic() > deadline:
                sys.exit("no go file")
            time.sleep(0.001)
    build_id = runner.trigger(args.request_id, None, source.latest())
    print(build_id, flush=True)
    if args.until:
        deadline = time.monotonic() + 60
        while runner.status(build_id).status != args.until:
            if time.monotonic() > deadline:
                sys.exit(f"build never reached {args.until}")
            time.sleep(0.01)
        print(args.until, flush=True)
    if args.hang:
        threading.Event().wait()


if __name__ == "__main__":
    main()
