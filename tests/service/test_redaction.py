"""A storage URL's password never reaches an error message or the log."""

from __future__ import annotations

import socket

import pytest

from stovepipe import config as configuration
from stovepipe.server import build_server


def test_storage_that_fails_to_open_is_reported_without_its_password() -> None:
    pytest.importorskip("stovepipe_redis")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    config = configuration.Config(
        listen="127.0.0.1:0",
        storage_url=f"redis://user:s3cret-pw@127.0.0.1:{closed_port}/0?timeout=1",
        queue_url="memory://",
        queues={},
    )
    with pytest.raises(configuration.ConfigError) as raised:
        build_server(config)
    assert "s3cret-pw" not in str(raised.value)
    assert "user:***@" in str(raised.value)
