"""Durable queues across real processes: SIGKILLed consumers and publishers lose nothing,
redeliveries count their attempts, and per-key order holds across consumer processes."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from stovepipe.messaging import Message

from .conftest import MessagingFactory, url_with
from .processes import Children
from .recorder import Recorder, payloads
from .test_delivery import dead_letters_of


def started(children: Children, count: int) -> Callable[[], bool]:
    """Whether exactly ``count`` deliveries have started in the child processes."""
    return lambda: len(children.events("start")) == count


# Short leases, so that a dead consumer's message comes back within the test.
LEASE = 1.0


def test_a_message_survives_a_consumer_killed_before_ack_and_is_redelivered(
    durable_messaging_url: str,
    make_durable_messaging: MessagingFactory,
    topic: str,
    children: Children,
) -> None:
    url = url_with(durable_messaging_url, visibility_timeout=LEASE)
    doomed = children.spawn(url, topic, handler="hang", publish=[["k", "survivor"]])
    children.wait_for("the delivery to start", lambda: bool(children.events("start")))
    children.kill(doomed)

    queue = make_durable_messaging(visibility_timeout=LEASE)
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()

    (first,) = children.events("start")
    assert (first["payload"], first["attempt"]) == ("survivor", 1)
    (seen,) = recorder.wait_for(1)
    # Published by a child: its id is a fresh one, the same on every delivery.
    assert seen.message == Message(topic, "k", b"survivor", 2, seen.message.message_id)
    assert seen.message.message_id


def test_a_message_whose_consumers_keep_dying_is_dead_lettered_after_max_attempts(
    durable_messaging_url: str,
    make_durable_messaging: MessagingFactory,
    topic: str,
    children: Children,
) -> None:
    url = url_with(durable_messaging_url, visibility_timeout=LEASE)
    children.spawn(url, topic, consume=False, publish=[["k", "poison"]])
    children.wait_for("the publish", lambda: bool(children.events("ready")))
    for attempt in (1, 2):
        doomed = children.spawn(url, topic, handler="hang")
        children.wait_for(f"delivery {attempt}", started(children, attempt))
        children.kill(doomed)

    queue = make_durable_messaging(visibility_timeout=LEASE, max_attempts=2)
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()

    (letter,) = dead_letters_of(queue, topic)
    assert [e["attempt"] for e in children.events("start")] == [1, 2]
    assert letter.message == Message(topic, "k", b"poison", 3, letter.message.message_id)
    assert letter.message.message_id
    assert "without an outcome" in letter.reason
    assert recorder.seen == [], "the handler never sees a message past its last attempt"


def test_a_server_killed_between_publish_and_ack_loses_nothing(
    durable_messaging_url: str,
    make_durable_messaging: MessagingFactory,
    topic: str,
    children: Children,
) -> None:
    url = url_with(durable_messaging_url, visibility_timeout=LEASE, workers=2)
    published = [[f"queue-{n % 3}", f"{n:03}"] for n in range(30)]
    server = children.spawn(url, topic, handler="hang", publish=published)
    children.wait_for("deliveries in flight", lambda: len(children.events("start")) == 2)
    children.kill(server)

    queue = make_durable_messaging(visibility_timeout=LEASE, workers=4)
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()

    seen = recorder.wait_for(len(published))
    for key, group in itertools.groupby(sorted(published), key=lambda item: item[0]):
        assert payloads(seen, key) == [payload.encode() for _, payload in group]
    in_flight = {e["payload"] for e in children.events("start")}
    assert {s.message.payload.decode() for s in seen if s.message.attempt == 2} == in_flight
    assert all(s.message.attempt == 1 for s in seen if s.message.payload.decode() not in in_flight)


def most_at_once(starts: list[dict[str, Any]], ends: list[dict[str, Any]]) -> int:
    """The most deliveries running at one time, from their start and end events."""
    ended = {(e["key"], e["payload"]): e["t"] for e in ends}
    spans = [(s["t"], ended[s["key"], s["payload"]]) for s in starts]
    return max(sum(1 for begin, end in spans if begin <= at < end) for at, _ in spans)


def test_per_key_order_one_at_a_time_across_consumer_processes(
    durable_messaging_url: str,
    make_durable_messaging: MessagingFactory,
    topic: str,
    children: Children,
) -> None:
    keys, per_key, consumers, workers = 8, 12, 3, 2
    url = url_with(durable_messaging_url, workers=workers, poll_interval=0.02)
    # Started first and idle (polling every workers / 2 seconds), then the work arrives.
    processes = [children.spawn(url, topic, sleep=0.25) for _ in range(consumers)]
    children.wait_for("consumers", lambda: len(children.events("ready")) == consumers)

    publisher = make_durable_messaging()
    for n in range(per_key):
        for k in range(keys):
            publisher.publish(topic, f"k{k}", f"{n:03}".encode())
    children.wait_for("every delivery", lambda: len(children.events("end")) == keys * per_key)

    starts, ends = children.events("start"), children.events("end")
    assert len(starts) == keys * per_key, "each message was delivered once"
    for k in range(keys):
        mine_started = sorted((e for e in starts if e["key"] == f"k{k}"), key=lambda e: e["t"])
        mine_ended = sorted((e for e in ends if e["key"] == f"k{k}"), key=lambda e: e["t"])
        expected = [f"{n:03}" for n in range(per_key)]
        assert [e["payload"] for e in mine_started] == expected
        assert [e["payload"] for e in mine_ended] == expected
        for ended, next_started in zip(mine_ended, mine_started[1:], strict=False):
            assert ended["t"] <= next_started["t"], f"two deliveries of k{k} overlapped"
    # More keys than workers, each with 12 * 0.25 = 3 s of work, far longer than an idle
    # process's poll interval (1 s): a key whose work waits while no delivery holds it goes to
    # whichever worker asks next, so every process takes part and every worker is busy at
    # once. A consumer keeping the keys it delivered from, and delivering them two at a time,
    # would leave the others idle. (A worker may go on with the key it just acknowledged, as
    # the SQL queues' combined acknowledge-and-claim does: that key is not waiting.)
    shares = collections.Counter(e["pid"] for e in starts)
    assert len(shares) == consumers, f"an idle process took no key: deliveries {shares}"
    most = most_at_once(starts, ends)
    assert most == consumers * workers, f"at most {most} deliveries at once: {shares}"
    for process in processes:
        assert children.terminate(process) == 0, "SIGTERM stops a consumer gracefully"


def test_a_delivery_still_running_when_stop_times_out_keeps_its_lease_until_it_runs_out(
    make_durable_messaging: MessagingFactory, topic: str
) -> None:
    release = threading.Event()
    entered = threading.Event()

    entered_at: list[float] = []

    def stuck(message: Message) -> None:
        entered_at.append(time.monotonic())  # the lease runs from before here
        entered.set()
        release.wait(30)

    first = make_durable_messaging(visibility_timeout=LEASE)
    first.subscribe(topic, stuck)
    first.start()
    first.publish(topic, "k", b"slow", message_id="slow-1")
    assert entered.wait(30)
    first.stop(timeout=0.1)

    second = make_durable_messaging(visibility_timeout=LEASE)
    recorder = Recorder()
    second.subscribe(topic, recorder)
    second.start()
    try:
        (seen,) = recorder.wait_for(1)
    finally:
        release.set()
    assert seen.message == Message(topic, "k", b"slow", 2, "slow-1")
    assert seen.started - entered_at[0] >= LEASE * 0.5, "no other consumer starts the key alongside"
