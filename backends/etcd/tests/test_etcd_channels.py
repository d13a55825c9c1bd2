"""The etcd client spreads its callers over a few channels instead of sharing one."""

from __future__ import annotations

import threading
import urllib.parse

import pytest
from stovepipe_etcd.client import DEFAULT_CHANNELS, EtcdClient

from stovepipe.storage import StorageError


def target_of(etcd_url: str) -> str:
    parts = urllib.parse.urlsplit(etcd_url)
    return f"{parts.hostname}:{parts.port or 2379}"


def test_etcd_client_threads_are_spread_over_several_channels(etcd_url: str, prefix: str) -> None:
    client = EtcdClient(target_of(etcd_url), timeout=5)
    threads_count = 2 * DEFAULT_CHANNELS
    start = threading.Barrier(threads_count)
    used: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(20):
                client.range(prefix.encode() + b"absent")
            with lock:
                used.append(id(client._mine()))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(threads_count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert len(used) == threads_count
        assert len(set(used)) == DEFAULT_CHANNELS
    finally:
        client.close()


def test_etcd_client_close_closes_every_channel(etcd_url: str, prefix: str) -> None:
    client = EtcdClient(target_of(etcd_url), timeout=5, channels=3)
    client.range(prefix.encode())
    client.close()
    failures: list[BaseException] = []

    def call() -> None:
        try:
            client.range(prefix.encode())
        except StorageError as error:
            failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(failures) == 6
    assert all("closed" in str(failure) for failure in failures)


def test_etcd_client_needs_a_channel() -> None:
    with pytest.raises(ValueError, match="at least one channel"):
        EtcdClient("127.0.0.1:2379", timeout=1, channels=0)
