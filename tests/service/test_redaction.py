"""Secrets (URL passwords, secret options, registered tokens) never reach an error message or
the log."""

from __future__ import annotations

import logging
import socket

import pytest

from stovepipe import config as configuration
from stovepipe import redaction
from stovepipe.server import build_server


def test_storage_that_fails_to_open_is_reported_without_its_password() -> None:
    pytest.importorskip("stovepipe_redis")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    config = configuration.Config(
        listen="127.0.0.1:0",
        storage_url=f"redis://user:s3cret-pw@127.0.0.1:{closed_port}/0?timeout=1",
        messaging_url="memory://",
        queues={},
    )
    with pytest.raises(configuration.ConfigError) as raised:
        build_server(config)
    assert "s3cret-pw" not in str(raised.value)
    assert "user:***@" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://app:s3cret@db:3306/stovepipe", "mysql://app:***@db:3306/stovepipe"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "rediss://u:p%40ss@h/0?ssl_keyfile=/k.pem&ssl_password=pass-phrase&timeout=1",
            "rediss://u:***@h/0?ssl_keyfile=/k.pem&ssl_password=***&timeout=1",
        ),
        ("etcd://root:pw-123@10.0.0.1:2379?prefix=x/", "etcd://root:***@10.0.0.1:2379?prefix=x/"),
        ("sqlite:////var/lib/stovepipe.db?timeout=5", "sqlite:////var/lib/stovepipe.db?timeout=5"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_masks_a_urls_password_and_secret_options_and_keeps_the_rest(
    url: str, shown: str
) -> None:
    assert redaction.redact(url) == shown


def test_redact_text_masks_the_secrets_of_a_url_wherever_they_appear_in_a_message() -> None:
    url = "rediss://user:pa%24s@h:1/0?ssl_password=k3y-phrase"
    message = "cannot decrypt with 'k3y-phrase' for user pa$s; full url was " + url
    masked = redaction.redact_text(message, [url])
    for secret in ("k3y-phrase", "pa$s", "pa%24s"):
        assert secret not in masked
    assert "user:***@h:1/0?ssl_password=***" in masked


def test_redact_text_masks_url_shaped_secrets_it_was_not_told_about() -> None:
    message = "failed: mysql://a:unknown-pw@db/x and redis://h/0?auth_token=t0k3n&db=1"
    masked = redaction.redact_text(message)
    assert "unknown-pw" not in masked
    assert "t0k3n" not in masked
    assert "&db=1" in masked


def test_every_log_line_passes_through_the_redacting_filter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redaction.register_secret("registered-secret-value")
    caplog.handler.addFilter(redaction.RedactingFilter())
    logger = logging.getLogger("stovepipe.test")
    logger.warning("token %s in %s", "registered-secret-value", "mysql://u:pw-x@h/d")
    try:
        raise RuntimeError("registered-secret-value")
    except RuntimeError:
        logger.exception("failed")
    assert "registered-secret-value" not in caplog.text
    assert "pw-x" not in caplog.text
    assert "mysql://u:***@h/d" in caplog.text


@pytest.mark.parametrize(
    ("url", "message", "shown"),
    [
        (
            "redis://:redis@127.0.0.1:6379/0",
            "redis URL redis://:redis@127.0.0.1:6379/0: cannot connect",
            "redis URL redis://:***@127.0.0.1:6379/0: cannot connect",
        ),
        (
            "redis://:e@127.0.0.1:6379/0",
            "redis URL redis://:e@127.0.0.1:6379/0 has an invalid port",
            "redis URL redis://:***@127.0.0.1:6379/0 has an invalid port",
        ),
        (
            "rediss://h:6379/0?ssl_password=a&ssl_keyfile=/k.pem",
            "rediss://h:6379/0?ssl_password=a&ssl_keyfile=/k.pem: ssl_password does not decrypt",
            "rediss://h:6379/0?ssl_password=***&ssl_keyfile=/k.pem: ssl_password does not decrypt",
        ),
        (
            "mysql://mysql:mysql@db:3306/stovepipe",
            "mysql URL mysql://mysql:mysql@db:3306/stovepipe: access denied",
            "mysql URL mysql://mysql:***@db:3306/stovepipe: access denied",
        ),
    ],
)
def test_redaction_masks_by_structure_so_a_short_password_neither_garbles_nor_reveals_itself(
    url: str, message: str, shown: str
) -> None:
    assert redaction.redact_text(message, [url]) == shown
    assert redaction.redact(url) in shown


def test_a_known_secret_in_free_text_is_masked_only_whole_and_only_if_long_enough() -> None:
    url = "redis://:pass@h:1/0?ssl_password=abc"
    message = "AUTH pass failed (passive mode); password abc rejected; compass"
    masked = redaction.redact_text(message, [url])
    assert masked == "AUTH *** failed (passive mode); password abc rejected; compass"
    assert len("abc") < redaction.MIN_FREE_TEXT_LENGTH <= len("pass")
