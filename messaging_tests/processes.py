"""Helpers for the tests that run consumers in child processes."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

# The consumer's module by its installed name: the child imports it whatever name this one has.
CONSUMER_MODULE = "stovepipe.conformance.messaging.consumer_process"
TIMEOUT = 30.0


class Children:
    """Consumer processes of one test; those still running are killed at teardown."""

    def __init__(self, record: pathlib.Path) -> None:
        self.record = record
        self._spawned: list[subprocess.Popen[bytes]] = []

    def spawn(self, url: str, topic: str, **arguments: Any) -> subprocess.Popen[bytes]:
        """Start :mod:`consumer_process` with these arguments."""
        spec = {"url": url, "topic": topic, "record": str(self.record), **arguments}
        child = subprocess.Popen(
            [sys.executable, "-m", CONSUMER_MODULE, json.dumps(spec)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._spawned.append(child)
        return child

    def events(self, event: str | None = None, pid: int | None = None) -> list[dict[str, Any]]:
        """The recorded events, in the order written, optionally of one kind or process."""
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [
            entry
            for entry in map(json.loads, lines)
            if (event is None or entry["event"] == event) and (pid is None or entry["pid"] == pid)
        ]

    def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` until it holds; fail the test after :data:`TIMEOUT`."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events: {self.events()}")
            for child in self._spawned:
                if child.poll() not in (None, -signal.SIGKILL, 0):
                    stderr = child.stderr.read().decode() if child.stderr else ""
                    raise AssertionError(f"a consumer process failed: {stderr}")
            time.sleep(0.02)

    @staticmethod
    def kill(child: subprocess.Popen[bytes]) -> None:
        """SIGKILL: the process gets no chance to acknowledge or give anything back."""
        child.kill()
        child.wait(TIMEOUT)

    @staticmethod
    def terminate(child: subprocess.Popen[bytes]) -> int:
        """SIGTERM, then the exit status."""
        child.send_signal(signal.SIGTERM)
        return child.wait(TIMEOUT)

    def kill_all(self) -> None:
        for child in self._spawned:
            if child.poll() is None:
                child.kill()
                child.wait(TIMEOUT)
            if child.stderr:
                child.stderr.close()


def spawned(record: pathlib.Path) -> Iterator[Children]:
    """Fixture body: a :class:`Children` killed at teardown."""
    children = Children(record)
    yield children
    children.kill_all()
