"""The pipeline after ingest, subscribed to a messaging queue: one call wires every stage."""

from __future__ import annotations

from collections.abc import Callable

from stovepipe.buildrunner.contract import BuildRunnerFactory
from stovepipe.controller.build import BuildController
from stovepipe.controller.buildsignal import DEFAULT_POLL_INTERVAL, BuildSignalController
from stovepipe.controller.deadletter import DeadLetterController
from stovepipe.controller.process import ProcessController, one_at_a_time
from stovepipe.controller.record import RecordController
from stovepipe.messaging.contract import (
    TOPIC_BUILD,
    TOPIC_BUILDSIGNAL,
    TOPIC_PROCESS,
    TOPIC_RECORD,
    Messaging,
    dead_letter_topic,
)
from stovepipe.sourcecontrol.contract import SourceControlFactory
from stovepipe.storage import Storage


def subscribe_pipeline(
    messaging: Messaging,
    storage: Storage,
    sources: SourceControlFactory,
    runners: BuildRunnerFactory,
    *,
    max_concurrent: Callable[[str], int] = one_at_a_time,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> None:
    """Subscribe process, build, buildsignal, record and the fail-closed dead-letter
    consumers to ``messaging`` (before it starts).

    ``max_concurrent(queue)`` bounds the queue's requests building at once; ``poll_interval``
    is the seconds between two looks at a running build.
    """
    messaging.subscribe(
        TOPIC_PROCESS, ProcessController(storage, sources, messaging, max_concurrent).handle
    )
    messaging.subscribe(TOPIC_BUILD, BuildController(storage, runners, messaging).handle)
    messaging.subscribe(
        TOPIC_BUILDSIGNAL,
        BuildSignalController(storage, runners, messaging, poll_interval).handle,
    )
    record = RecordController(storage, sources, messaging).handle
    messaging.subscribe(TOPIC_RECORD, record)
    messaging.subscribe(dead_letter_topic(TOPIC_RECORD), record)
    dead_letters = DeadLetterController(storage, runners, messaging).handle
    for topic in DeadLetterController.TOPICS:
        messaging.subscribe(topic, dead_letters)
