"""A consumer whose broker keeps refusing (credentials changed, say) backs off and does not
flood the log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from stovepipe.messaging.brokered import BrokeredMessaging, Delivery, MessagingError

WORKERS = 4
POLL_INTERVAL = 0.01
RUN_SECONDS = 1.5


class RefusingBroker:
    """A broker whose every claim is refused with the same permanent error."""

    def __init__(self) -> None:
        self.claims = 0
        self._lock = threading.Lock()

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        with self._lock:
            self.claims += 1
        raise MessagingError("redis at 127.0.0.1:6379: access denied (WRONGPASS)")

    def renew(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_consumer_refused_by_its_broker_backs_off_and_rate_limits_its_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = RefusingBroker()
    messaging = BrokeredMessaging(
        broker,  # type: ignore[arg-type]  # claims only: nothing is published
        workers=WORKERS,
        poll_interval=POLL_INTERVAL,
    )
    messaging.subscribe("process", lambda message: None)
    with caplog.at_level(logging.WARNING, logger="stovepipe.messaging.brokered"):
        messaging.start()
        time.sleep(RUN_SECONDS)
        messaging.stop(timeout=5)
    # Without backoff each worker claims every poll interval: WORKERS * 150 claims.
    unbounded = WORKERS * RUN_SECONDS / POLL_INTERVAL
    assert 0 < broker.claims <= unbounded / 10, broker.claims
    warnings = [r for r in caplog.records if "claiming a message failed" in r.getMessage()]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
    assert "access denied" in warnings[0].getMessage()
