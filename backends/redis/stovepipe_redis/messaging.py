"""The ``redis://`` messaging queue: Redis Streams, with consumer groups and leased shards, on
the storage's options (:mod:`stovepipe_redis.options`), connection pool construction and error
mapping (:func:`stovepipe_redis.backend.mapped_error`).

Layout, for a topic ``T`` whose UTF-8 encoding is ``n`` bytes long (the length prefix keeps
topics that contain ``:`` apart)::

    stovepipe:mq:<n>:T:s<i>        stream of shard i (0 <= i < shards); entries {key, payload}
    stovepipe:mq:<n>:T:o<i>        the consumer owning shard i, with a TTL (the lease)
    stovepipe:mq:<n>:T:dead-letter stream of dead letters {key, payload, attempt, reason, id}
    stovepipe:mq:<n>:T:ids         set of the ids of T's pending messages
    stovepipe:mq:<n>:T:parked      sorted set of T's parked keys, by when they are due (ms)
    stovepipe:mq:<n>:T:k:<key>     stream of a parked key's entries {key, payload, id, attempt}

(``stovepipe:mq:`` is the default of the URL option ``prefix``.) A message goes to shard
``crc32(key) % shards``: all messages of a key share one stream, in ``XADD`` order. Its entry
is ``{key, payload, id}``; a script adds the id to the topic's ``ids`` set and the entry to
the stream only if the id was not in the set (an idempotent publish), and settling the entry
removes the id in the same script. The set is also the topic's "has work" marker: a claim
passes a topic whose set is empty (no key) by after one ``EXISTS``, without looking at its
shards, so an idle claim costs one command per topic; every :data:`FULL_SCAN_SECONDS` a claim
looks at every shard all the same, so that an entry the set does not show (stored by another
program, or the set deleted) is still delivered. Every stream
has the consumer group ``stovepipe``. Per-key order and one delivery at a time come from shard
ownership: a consumer delivers from a shard only while it holds the shard's lease, and only one
message of the shard at a time. One Lua script claims, atomically, the first free or own shard
that has work: its pending entry first (``XAUTOCLAIM``, which adds one to the entry's delivery
count, read back with ``XPENDING`` as ``attempt``), else the next new entry (``XREADGROUP``); an
empty shard's lease is dropped so that any consumer may take it next. Settling is one script:
acknowledging is ``XACK`` plus ``XDEL``, dead-lettering adds ``XADD`` to the dead-letter
stream, and either gives the shard's lease up, so that the shard's next entry goes to whichever
consumer claims next. A consumer holds a shard only while it delivers from it: one that kept
the shards it had delivered from would keep more keys than it has workers, and leave other
consumers idle with their work waiting.

A delivery that is held or fails *parks* its key, so that the other keys of its shard do not
wait for it (a held key may wait for a whole build): one script moves the entry and the later
entries of its key (unread: the shard delivers one at a time) from the shard to the key's park
stream in order, the entry with the attempts it used as its ``attempt`` field (a retry counts
the delivery, a hold does not), parks the key in the topic's ``parked`` set until its delay
is over (Redis ``TIME``), and gives the shard's lease up. While a key is parked, the publish
script appends its messages to the park stream, behind the parked ones. A claim first moves
the keys whose park is over back (one script each: the park stream to the shard's tail, in
order; nothing of the key is in the shard meanwhile, so its order holds), then claims; a
delivery's ``attempt`` is its entry's ``attempt`` field plus its delivery count. Parked
messages keep their ids in the ids set, so their topic shows work; the backlog counts them.

The lease is the visibility timeout: a consumer that dies stops renewing, the lease expires,
and the next owner reclaims the dead consumer's pending entry at once; a key parked by a
consumer that died is moved back by whichever consumer claims once it is due. All processes
sharing a Redis must use the same number of shards. A server that lost its data (a restart
without persistence, ``FLUSHDB``) loses the groups too; the claim script recreates a shard's
group when it finds the stream without one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

import redis
import redis.exceptions

from stovepipe.messaging.brokered import Delivery, MessagingError, MessagingUnavailable
from stovepipe.messaging.codec import decode_text, decode_text_lax, encode_text
from stovepipe.messaging.contract import Message, as_messaging_error
from stovepipe.messaging.inprocess import DeadLetter
from stovepipe_redis.backend import mapped_error
from stovepipe_redis.options import parse_url

logger = logging.getLogger(__name__)

DEFAULT_SHARDS: Final = 16
FULL_SCAN_SECONDS: Final = 30.0
"""Seconds between two claims of a process that look at every shard whatever the topics' ids
sets say: the other claims pass a topic with no id pending by after one ``EXISTS``, so an
entry the set does not show (stored by something else than :meth:`RedisStreamsBroker.publish`,
or its set deleted) is claimed within this long. The first claim is one."""
GROUP: Final = b"stovepipe"
UNPARK_BATCH: Final = 32
"""The most parked keys whose park is over that one claim script returns, to move back."""
UNPARK_ROUNDS: Final = 4
"""Claim scripts one claim runs at most, each but the last after moving keys back."""
PREFIX: Final = b"stovepipe:mq:"

# KEYS: ids_1, parked_1, stream_1, owner_1, ids_2, parked_2, stream_2, owner_2, ... (the ids
# set and parked keys of the stream's topic before each stream). ARGV: group, consumer, lease
# in ms, '1' for a full scan, the most parked keys to return. Returns {index of the stream's
# ids set in KEYS, entry id, entry fields, delivery count, 1 if the ids set was empty}, or
# {0, index of an ids set in KEYS, parked key, ...}: keys of that topic whose park is over,
# to move back to their shards before claiming (the caller runs _UNPARK, then this again), or
# false. A topic whose ids set is empty has no message pending (publishing adds the id in the
# script that adds the entry, settling removes it in the script that deletes the entry, and
# parked messages keep theirs), so its shards are passed by after one EXISTS, unless this is
# a full scan.
_CLAIM: Final = """
local group, me, lease, full, most = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5]
local marked = {}  -- ids set -> whether it is not empty
local now
for i = 1, #KEYS, 4 do
  local ids, parked, stream, owner_key = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  if marked[ids] == nil then
    marked[ids] = redis.call('EXISTS', ids) == 1
    if full or marked[ids] then
      if not now then
        local time = redis.call('TIME')
        now = string.format('%d', time[1] * 1000 + math.floor(time[2] / 1000))
      end
      local due = redis.call('ZRANGEBYSCORE', parked, '-inf', now, 'LIMIT', 0, most)
      if #due > 0 then
        return {0, i, unpack(due)}
      end
    end
  end
  if full or marked[ids] then
    local owner = redis.call('GET', owner_key)
    if (not owner) or owner == me then
      local entry, count
      -- Settled entries are deleted, so an empty stream has nothing pending either.
      if redis.call('XLEN', stream) > 0 then
        local claimed = redis.pcall('XAUTOCLAIM', stream, group, me, 0, '0-0', 'COUNT', 1)
        if claimed['err'] then
          -- The server lost the group with its data (a restart without persistence, FLUSHDB)
          -- and a publish recreated the stream: recreate the group, from the first entry.
          if string.find(claimed['err'], 'NOGROUP', 1, true) ~= 1 then
            return redis.error_reply(claimed['err'])
          end
          redis.call('XGROUP', 'CREATE', stream, group, '0')
          claimed = redis.call('XAUTOCLAIM', stream, group, me, 0, '0-0', 'COUNT', 1)
        end
        if #claimed[2] > 0 then
          entry = claimed[2][1]
          count = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)[1][4]
        else
          local read = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1,
                                  'STREAMS', stream, '>')
          if read then
            entry = read[1][2][1]
            count = 1
          end
        end
      end
      if entry then
        redis.call('SET', owner_key, me, 'PX', lease)
        return {i, entry[1], entry[2], count, marked[ids] and 0 or 1}
      elseif owner then
        redis.call('DEL', owner_key)
      end
    end
  end
end
return false
"""

# KEYS: stream, ids set, the key's park stream. ARGV: message id, key, payload. Returns 1 if
# added, 0 if the id was pending already. A parked key's messages go behind the parked ones:
# none of its messages is in the shard meanwhile, so its order holds.
_PUBLISH: Final = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local stream = KEYS[1]
if redis.call('EXISTS', KEYS[3]) == 1 then
  stream = KEYS[3]
end
redis.call('XADD', stream, '*', 'key', ARGV[2], 'payload', ARGV[3], 'id', ARGV[1])
return 1
"""

# KEYS: stream, owner key, the key's park stream, the topic's parked keys. ARGV: group, entry
# id, the entry's key, the attempts it used (stored as its 'attempt' field), delay in ms,
# consumer. Parks a held or backing-off key, atomically: moves the entry and every later entry
# of its key in the shard (unread: a shard delivers one entry at a time) to the park stream in
# order, XACKs and XDELs them, parks the key until now + delay (Redis TIME) and gives the
# shard's lease up, so that the shard's other keys go on at once. Does nothing (returns 0) if
# the entry is not this consumer's any more: another consumer has the shard (its lease ran
# out here) or settled the entry. Returns how many entries it moved.
_PARK: Final = """
local group, entry, key, attempt, delay, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= me then
  return 0
end
local entries = redis.call('XRANGE', KEYS[1], entry, '+')
if #entries == 0 or entries[1][1] ~= entry then
  return 0
end
local moved = 0
for j, found in ipairs(entries) do
  local fields, of_key = found[2], nil
  for x = 1, #fields, 2 do
    if fields[x] == 'key' then of_key = fields[x + 1] end
  end
  if j == 1 or of_key == key then
    if j == 1 then
      local counted = {}
      for x = 1, #fields, 2 do
        if fields[x] ~= 'attempt' then
          counted[#counted + 1] = fields[x]
          counted[#counted + 1] = fields[x + 1]
        end
      end
      counted[#counted + 1] = 'attempt'
      counted[#counted + 1] = attempt
      fields = counted
    end
    redis.call('XADD', KEYS[3], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], found[1])
    moved = moved + 1
  end
end
redis.call('XACK', KEYS[1], group, entry)
local time = redis.call('TIME')
local due = time[1] * 1000 + math.floor(time[2] / 1000) + tonumber(delay)
redis.call('ZADD', KEYS[4], string.format('%d', due), key)
if owner then
  redis.call('DEL', KEYS[2])
end
return moved
"""

# KEYS: the topic's parked keys, the key's park stream, the key's shard stream. ARGV: key.
# Moves a parked key's entries back to the tail of its shard, in order, if its park is over
# (Redis TIME), atomically; none of the key's entries is in the shard meanwhile (publishing
# adds them to the park stream), so its order holds. Returns how many entries it moved (0
# if the key is not parked, or not due: another consumer moved it back already).
_UNPARK: Final = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
local time = redis.call('TIME')
if tonumber(score) > time[1] * 1000 + math.floor(time[2] / 1000) then
  return 0
end
local entries = redis.call('XRANGE', KEYS[2], '-', '+')
for _, found in ipairs(entries) do
  redis.call('XADD', KEYS[3], '*', unpack(found[2]))
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return #entries
"""

# KEYS: stream, ids set, owner key[, dead-letter stream]. ARGV: group, entry id, message id ('' if
# none), consumer[, the dead letter's fields and values]. Adds the dead letter (if given), XACKs
# and XDELs the entry, drops its id from the pending ids and gives the shard's lease up if it is
# still this consumer's, atomically: no other consumer can claim the shard before the entry is
# settled (it would find the entry pending and deliver it again), and any can at once after.
_SETTLE: Final = """
local group, entry, id, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if KEYS[4] then
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, 5))
end
redis.call('XACK', KEYS[1], group, entry)
redis.call('XDEL', KEYS[1], entry)
if id ~= '' then
  redis.call('SREM', KEYS[2], id)
end
if redis.call('GET', KEYS[3]) == me then
  redis.call('DEL', KEYS[3])
end
return 1
"""

# KEYS: owner keys. ARGV: consumer, lease in ms (0 = give the lease up). Returns a list of
# 1/0, whether each lease was still this consumer's.
_RENEW: Final = """
local held = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if ARGV[2] == '0' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
    end
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

# KEYS: streams. ARGV: group, this consumer, idle threshold in ms ('' = only this consumer).
# Deletes from each stream's group the consumers with no pending entry: this consumer (when it
# stops), or any idle longer than the threshold (stale: their process went away). A consumer
# with pending entries is kept: deleting it would drop them from the group's pending list.
# Returns how many consumers it deleted.
_REMOVE_CONSUMERS: Final = """
local group, me, idle_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = 0
for i = 1, #KEYS do
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[i], group)
  if ok then
    for _, consumer in ipairs(consumers) do
      local info = {}
      for j = 1, #consumer, 2 do info[consumer[j]] = consumer[j + 1] end
      local stale = idle_ms and info['name'] ~= me and tonumber(info['idle']) > idle_ms
      local leaving = (not idle_ms) and info['name'] == me
      if tonumber(info['pending']) == 0 and (stale or leaving) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[i], group, info['name'])
        removed = removed + 1
      end
    end
  end
end
return removed
"""

# KEYS: the topic's parked keys, its shard streams. Returns {the entries left in the shard
# streams, {parked key, ...}}: one request, however many shards (a pipeline of one XLEN per
# shard would be as many commands to the server, every few seconds, idle or not).
_BACKLOG: Final = """
local total = 0
for i = 2, #KEYS do
  total = total + redis.call('XLEN', KEYS[i])
end
return {total, redis.call('ZRANGE', KEYS[1], 0, -1)}
"""

_T = TypeVar("_T")
_Shard = tuple[str, int]
"""``(topic, shard index)``."""


class RedisStreamsBroker:
    """The :class:`~stovepipe.messaging.brokered.Broker` on Redis Streams (see module)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        visibility_timeout: float,
        shards: int = DEFAULT_SHARDS,
        prefix: bytes = PREFIX,
        full_scan_interval: float = FULL_SCAN_SECONDS,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}")
        self._full_scan_interval = full_scan_interval
        self._next_full_scan = 0.0  # monotonic time of the next full scan: the first claim
        self._client = client
        self._prefix = prefix
        self._lease_ms = max(1, round(visibility_timeout * 1000))
        self._shards = shards
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}".encode()
        self._claim_script = client.register_script(_CLAIM)
        self._publish_script = client.register_script(_PUBLISH)
        self._renew_script = client.register_script(_RENEW)
        self._settle_script = client.register_script(_SETTLE)
        self._remove_consumers_script = client.register_script(_REMOVE_CONSUMERS)
        self._backlog_script = client.register_script(_BACKLOG)
        self._park_script = client.register_script(_PARK)
        self._unpark_script = client.register_script(_UNPARK)
        self._lock = threading.Lock()
        self._groups: set[bytes] = set()  # streams known to have the group
        self._in_flight: set[_Shard] = set()
        # Shards this consumer took a lease on and has not settled: one whose backoff ended
        # keeps its lease until claimed again here or the lease runs out, so close() gives
        # them back.
        self._leased: set[_Shard] = set()
        # Shards whose settlement met a transient fault (the consumer engine retries it):
        # shard -> monotonic time after which this process may claim from it again.
        self._unsettled: dict[_Shard, float] = {}
        self._closed = False

    def publish(self, topic: str, key: str, payload: bytes, message_id: str) -> None:
        """``XADD`` to the key's shard stream (its park stream while it is parked), unless
        ``message_id`` is in the topic's set of pending ids (one script: of racing publishers,
        one adds the entry)."""
        stream = self._stream(topic, self._shard_of(key))
        self._ensure_group(stream)
        keys = [stream, self._ids(topic), self._park(topic, encode_text(key))]
        args = [encode_text(message_id), encode_text(key), payload]
        self._call(lambda: self._publish_script(keys=keys, args=args))

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        """Claim from the first shard of ``topics`` that is not busy here and has work.

        One script: a topic with no message pending costs it one command (``EXISTS`` of the
        topic's ids set) but every :data:`FULL_SCAN_SECONDS` (see there). Keys whose park is
        over are moved back to their shards first (one more script each, then the claim
        again)."""
        now = time.monotonic()
        with self._lock:
            for shard, due in list(self._unsettled.items()):
                if due <= now:
                    del self._unsettled[shard]
            # Start at a random shard, so that consumers spread over the shards.
            offset = uuid.uuid4().int % self._shards
            candidates = [
                (topic, (offset + n) % self._shards)
                for topic in topics
                for n in range(self._shards)
                if (topic, (offset + n) % self._shards) not in self._in_flight
                and (topic, (offset + n) % self._shards) not in self._unsettled
            ]
            # Mark them busy, so that this process's other workers pass them by meanwhile.
            self._in_flight.update(candidates)
            full = bool(candidates) and now >= self._next_full_scan
            if full:
                self._next_full_scan = now + self._full_scan_interval
        if not candidates:
            return None
        claimed: Any = None
        try:
            for topic, index in candidates:
                self._ensure_group(self._stream(topic, index))
            keys = [
                name
                for topic, index in candidates
                for name in (
                    self._ids(topic),
                    self._parked(topic),
                    self._stream(topic, index),
                    self._owner(topic, index),
                )
            ]
            args: list[bytes | int] = [
                GROUP,
                self._consumer,
                self._lease_ms,
                b"1" if full else b"0",
                UNPARK_BATCH,
            ]
            for _ in range(UNPARK_ROUNDS):
                claimed = self._call(lambda: self._claim_script(keys=keys, args=args))
                if not claimed or int(claimed[0]) != 0:
                    break
                self._unpark(candidates[(int(claimed[1]) - 1) // 4][0], claimed[2:])
                claimed = None
        finally:
            with self._lock:
                won = candidates[(int(claimed[0]) - 1) // 4] if claimed else None
                self._in_flight.difference_update(c for c in candidates if c != won)
                if won is not None:
                    self._leased.add(won)
        if not claimed:
            return None
        topic, index = won  # type: ignore[misc]
        _, entry_id, raw_fields, count, unmarked = claimed
        if int(unmarked):
            # An entry the ids set did not show: scan every shard again at the next claim,
            # until the entries it does not show are delivered, not one a full-scan interval.
            with self._lock:
                self._next_full_scan = 0.0
        fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=False))
        try:
            message = Message(
                topic,
                decode_text(fields[b"key"]),
                bytes(fields[b"payload"]),
                # The attempts used before a park, and the deliveries since.
                int(fields.get(b"attempt", 0)) + int(count),
                decode_text(fields.get(b"id", b"")),
            )
        except (KeyError, UnicodeDecodeError, ValueError) as error:
            # Written by something else than this module: no delivery can ever succeed, and
            # keeping the shard would strand every key behind it.
            self._discard_undecodable(topic, index, bytes(entry_id), fields, int(count), error)
            return None
        return Delivery(message, (topic, index, bytes(entry_id)))

    def _discard_undecodable(
        self,
        topic: str,
        index: int,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        count: int,
        error: Exception,
    ) -> None:
        """Dead-letter an entry this module cannot read, as stored, and give up its shard."""
        if isinstance(error, KeyError):
            what = f"no {error.args[0].decode()!r} field"
        elif isinstance(error, UnicodeDecodeError):
            what = f"key is not UTF-8: {error}"
        else:
            what = f"attempt is not an integer: {error}"
        reason = f"undecodable message: {what}"
        logger.error("dead-lettering an undecodable %r message: %s", topic, reason)
        letter = {
            **fields,
            b"key": fields.get(b"key", b""),
            b"payload": fields.get(b"payload", b""),
            b"attempt": str(count).encode(),
            b"reason": reason.encode(),
        }

        with self._settling(topic, index):
            self._settle_entry(topic, index, entry_id, fields.get(b"id"), letter)

    def _settle_entry(
        self,
        topic: str,
        index: int,
        entry_id: bytes,
        message_id: bytes | None,
        letter: dict[bytes, bytes] | None = None,
    ) -> None:
        """Settle the entry in one script: add ``letter`` to the topic's dead letters (if
        given), ``XACK``/``XDEL`` the entry, drop its id from the pending ids, and give the
        shard's lease up (if still this consumer's)."""
        keys = [self._stream(topic, index), self._ids(topic), self._owner(topic, index)]
        args = [GROUP, entry_id, message_id or b"", self._consumer]
        if letter is not None:
            keys.append(self._dead_letter_stream(topic))
            args.extend(part for field, value in letter.items() for part in (field, value))
        self._call(lambda: self._settle_script(keys=keys, args=args))
        with self._lock:
            self._leased.discard((topic, index))

    def ack(self, delivery: Delivery) -> None:
        """``XACK`` and ``XDEL`` the entry, drop its id from the pending ids and give the
        shard's lease up, atomically."""
        topic, index, entry_id = self._receipt(delivery)
        message_id = encode_text(delivery.message.message_id)
        with self._settling(topic, index):
            self._settle_entry(topic, index, entry_id, message_id)

    def ack_and_claim_next(self, delivery: Delivery) -> None:
        """:meth:`ack`, and ``None``: a claim here reads a shard's stream with its own
        ``XREADGROUP``, which a ``MULTI`` with the acknowledgement would not save."""
        self.ack(delivery)

    def retry(self, delivery: Delivery, delay: float, reason: str) -> None:
        """Park the delivery's key for ``delay`` seconds, this delivery counted as an attempt
        (see :meth:`_park_key`)."""
        self._park_key(delivery, delay, delivery.message.attempt)

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Park the delivery's key for ``delay`` seconds, this delivery not counted: the next
        one has the same ``attempt`` (see :meth:`_park_key`)."""
        self._park_key(delivery, delay, delivery.message.attempt - 1)

    def _park_key(self, delivery: Delivery, delay: float, attempts: int) -> None:
        """Move the delivery's entry and the later entries of its key from the shard to the
        key's park stream, the entry with ``attempts`` used, until ``delay`` seconds from now,
        and give the shard up, in one script: the shard's other keys do not wait for this
        one (a claim moves it back once due). Nothing happens if the entry is not this
        consumer's any more (its lease ran out and another consumer has it)."""
        topic, index, entry_id = self._receipt(delivery)
        key = encode_text(delivery.message.key)
        keys = [
            self._stream(topic, index),
            self._owner(topic, index),
            self._park(topic, key),
            self._parked(topic),
        ]
        args: list[bytes | int] = [
            GROUP,
            entry_id,
            key,
            attempts,
            max(0, round(delay * 1000)),
            self._consumer,
        ]
        with self._settling(topic, index):
            self._call(lambda: self._park_script(keys=keys, args=args))
            with self._lock:
                self._leased.discard((topic, index))

    def _unpark(self, topic: str, keys: Sequence[bytes]) -> None:
        """Move the parked ``keys`` of ``topic`` whose park is over back to their shards (one
        script each: another consumer may be moving them too; the script checks)."""
        parked = self._parked(topic)
        for key in map(bytes, keys):
            stream = self._stream(topic, zlib.crc32(key) % self._shards)
            self._ensure_group(stream)
            names = [parked, self._park(topic, key), stream]
            self._call(functools.partial(self._unpark_script, keys=names, args=[key]))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Add the dead letter, ``XACK``/``XDEL`` the entry and give the shard's lease up,
        atomically."""
        topic, index, entry_id = self._receipt(delivery)
        message = delivery.message
        letter = {
            b"key": encode_text(message.key),
            b"payload": message.payload,
            b"attempt": str(message.attempt).encode(),
            b"reason": reason.encode("utf-8", "surrogatepass"),
            b"id": encode_text(message.message_id),
        }
        message_id = encode_text(message.message_id)
        with self._settling(topic, index):
            self._settle_entry(topic, index, entry_id, message_id, letter)

    def renew(self) -> None:
        """Extend the leases of the shards delivering here, and remove the
        stale consumers of the streams used here (see :meth:`remove_stale_consumers`)."""
        self.remove_stale_consumers()
        with self._lock:
            shards = sorted(self._in_flight)
        if not shards:
            return
        self._call(
            lambda: self._renew_script(
                keys=[self._owner(topic, index) for topic, index in shards],
                args=[self._consumer, self._lease_ms],
            )
        )

    def remove_stale_consumers(self) -> int:
        """Delete from the groups of the streams used here the consumers with no pending
        entry that were idle longer than the visibility timeout (their process went away
        without leaving); how many. Consumers with pending entries stay: their entries are
        reclaimed through the lease."""
        with self._lock:
            streams = sorted(self._groups)
        if not streams:
            return 0
        removed: Any = self._call(
            lambda: self._remove_consumers_script(
                keys=streams, args=[GROUP, self._consumer, self._lease_ms]
            )
        )
        return int(removed)

    def _leave_groups(self) -> None:
        """Delete this consumer from the groups of the streams used here, where it holds no
        pending entry (one that it does is reclaimed by the next owner of the shard)."""
        with self._lock:
            streams = sorted(self._groups)
        if streams:
            self._call(
                lambda: self._remove_consumers_script(
                    keys=streams, args=[GROUP, self._consumer, ""]
                )
            )

    def backlog(self, topic: str) -> int:
        """Entries left in ``topic``'s shard and park streams (settled ones are deleted).

        One script, and one ``XLEN`` per parked key when there are any."""
        keys = [self._parked(topic)] + [self._stream(topic, index) for index in range(self._shards)]
        found: Any = self._call(lambda: self._backlog_script(keys=keys))
        total, parked = int(found[0]), list(found[1])
        if parked:
            pipeline = self._client.pipeline(transaction=False)
            for key in parked:
                pipeline.xlen(self._park(topic, bytes(key)))
            lengths: Any = self._call(pipeline.execute)
            total += sum(int(length) for length in lengths)
        return total

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead-letter stream of ``topic``, oldest first."""
        entries: Any = self._call(lambda: self._client.xrange(self._dead_letter_stream(topic)))
        letters = []
        for _, fields in entries:
            message = Message(
                topic,
                decode_text_lax(fields.get(b"key", b"")),
                bytes(fields.get(b"payload", b"")),
                int(fields.get(b"attempt", 0)),
                decode_text_lax(fields.get(b"id", b"")),
            )
            letters.append(DeadLetter(message, decode_text_lax(fields.get(b"reason", b""))))
        return letters

    def close(self) -> None:
        """Give up every shard lease held here with no delivery running, so that other
        consumers take the shards at once; leave the consumer groups (where this consumer has
        no pending entry); disconnect.

        Shards with a delivery still running keep their lease until it runs out: handing
        them back would let another consumer start the same key alongside.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            shards = sorted(self._leased - self._in_flight)
            self._leased.clear()
        if shards:
            with contextlib.suppress(MessagingUnavailable, MessagingError):
                self._call(
                    lambda: self._renew_script(
                        keys=[self._owner(topic, index) for topic, index in shards],
                        args=[self._consumer, 0],
                    )
                )
        with contextlib.suppress(MessagingUnavailable, MessagingError):
            self._leave_groups()
        self._client.close()

    @staticmethod
    def _receipt(delivery: Delivery) -> tuple[str, int, bytes]:
        receipt = delivery.receipt
        assert isinstance(receipt, tuple)
        topic, index, entry_id = receipt
        return topic, index, entry_id

    @contextlib.contextmanager
    def _settling(self, topic: str, index: int) -> Iterator[None]:
        """Keep the shard busy here until the entry is settled on the server: a worker that
        claimed the shard earlier would find the entry still pending and deliver it again.

        A settlement that meets a transient fault (the server restarting) is retried by the
        consumer engine, so the shard stays out of this process's claims meanwhile, for one
        visibility timeout at most (as a delivery's lease: after that it is delivered again)
        and without renewing its lease. Any other outcome frees the shard at once.
        """
        shard = (topic, index)
        unsettled = False
        try:
            yield
        except MessagingError as error:
            unsettled = error.transient
            raise
        finally:
            with self._lock:
                self._in_flight.discard(shard)
                if unsettled:
                    self._unsettled[shard] = time.monotonic() + self._lease_ms / 1000
                else:
                    self._unsettled.pop(shard, None)

    def _shard_of(self, key: str) -> int:
        return zlib.crc32(encode_text(key)) % self._shards

    def _base(self, topic: str) -> bytes:
        encoded = encode_text(topic)
        return self._prefix + str(len(encoded)).encode() + b":" + encoded

    def _stream(self, topic: str, index: int) -> bytes:
        return self._base(topic) + b":s" + str(index).encode()

    def _owner(self, topic: str, index: int) -> bytes:
        return self._base(topic) + b":o" + str(index).encode()

    def _ids(self, topic: str) -> bytes:
        return self._base(topic) + b":ids"

    def _parked(self, topic: str) -> bytes:
        return self._base(topic) + b":parked"

    def _park(self, topic: str, key: bytes) -> bytes:
        return self._base(topic) + b":k:" + key

    def _dead_letter_stream(self, topic: str) -> bytes:
        return self._base(topic) + b":dead-letter"

    def _ensure_group(self, stream: bytes) -> None:
        if stream in self._groups:
            return

        def create() -> None:
            # From id 0: entries added before the group existed are delivered too.
            try:
                self._client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as error:
                if not str(error).startswith("BUSYGROUP"):  # BUSYGROUP: it exists already
                    raise

        self._call(create)
        with self._lock:
            self._groups.add(stream)

    def _call(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except redis.exceptions.RedisError as error:
            raise as_messaging_error(mapped_error(error)) from error


def redis_broker(url: str, *, visibility_timeout: float) -> RedisStreamsBroker:
    """Entry point (``stovepipe.messaging``) for ``redis://`` and ``rediss://``: a broker on
    the storage's URL and options (:mod:`stovepipe_redis.options`: TLS, ``timeout``,
    ``prefix``, redis-py's), plus ``shards`` (default 16, the same in every process).

    ``prefix`` (default ``stovepipe:mq:``) starts every key name: deployments sharing one
    Redis database give each its own (the default messaging URL of a storage URL with
    ``prefix=P`` has ``P`` + ``mq:``). Connects lazily: an unreachable server shows at the
    first call, as :class:`MessagingUnavailable`.
    """
    options = parse_url(url, extra=("shards",))
    shards = options.extra.get("shards", str(DEFAULT_SHARDS))
    try:
        shard_count = int(shards)
    except ValueError:
        raise ValueError(f"redis URL option shards must be an integer, not {shards!r}") from None
    return RedisStreamsBroker(
        redis.Redis(connection_pool=options.connection_pool()),
        visibility_timeout=visibility_timeout,
        shards=shard_count,
        prefix=PREFIX if options.prefix is None else options.prefix.encode(),
    )
