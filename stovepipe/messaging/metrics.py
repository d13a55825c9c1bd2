"""Prometheus metrics of the messaging consumers.

============================================================  =========  ===============
metric                                                        type       labels
============================================================  =========  ===============
``stovepipe_messaging_published_total``                    counter    topic
``stovepipe_messaging_deliveries_total``                   counter    topic
``stovepipe_messaging_retries_total``                      counter    topic
``stovepipe_messaging_dead_letters_total``                 counter    topic
``stovepipe_messaging_lag``                                gauge      topic
``stovepipe_messaging_handling_seconds``                   histogram  topic
``stovepipe_messaging_broker_errors_total``                counter    operation
============================================================  =========  ===============

``deliveries`` counts handler calls (redeliveries included), ``retries`` the failed deliveries
that will be tried again, ``dead_letters`` the messages given up on. ``lag`` is the backlog:
messages published to the topic and not yet acknowledged or dead-lettered, by any consumer.
``broker_errors`` counts failed broker calls by operation (``claim``, ``ack``, ``retry``,
``dead_letter``, ``renew``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From 1 ms to 1 min: a handler reloads one row, or waits on a backend timing out.
HANDLING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0)


class MessagingMetrics:
    """The messaging metric families, in ``registry`` (a private one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.published = Counter(
            "stovepipe_messaging_published",
            "Messages published by this process, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "stovepipe_messaging_deliveries",
            "Deliveries handed to a handler, redeliveries included, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "stovepipe_messaging_retries",
            "Failed deliveries that will be retried after a backoff, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "stovepipe_messaging_dead_letters",
            "Messages moved to the dead-letter topic, by original topic.",
            ["topic"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "stovepipe_messaging_lag",
            "Messages published and not yet acknowledged or dead-lettered, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "stovepipe_messaging_handling_seconds",
            "Time a handler took with one delivery, failures included.",
            ["topic"],
            buckets=HANDLING_BUCKETS,
            registry=self.registry,
        )
        self.broker_errors = Counter(
            "stovepipe_messaging_broker_errors",
            "Broker calls that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
