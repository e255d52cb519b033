"""Redis document store: the production backend, shared by any number of gateways.

Layout, for key prefix ``P``, project ``p`` and collection ``c``:

* ``P{p}:c:d:<id>``            hash: ``body`` (JSON), ``seq``, ``idx`` (the index keys it is in),
                                 ``ord`` (its ordered entries: key, member, key, member...)
* ``P{p}:c:i:<index>=<values>`` sorted set of ids scored by ``seq`` (insertion order)
* ``P{p}:c:i:``                 the same, for every document of the collection
* ``P{p}:c:seq``                the collection's insertion counter
* ``P{p}:c:t:<id>``            hash of the document's tallies: ``<name>`` (count), ``<name>@`` (last time)
* ``P{p}:c:o:n:<index>``        a numeric ordered index: sorted set scored by value, member
                                 ``<seq>`` ``<value>`` NUL ``<id>``
* ``P{p}:c:o:s:<index>``        a text ordered index: sorted set, every score 0, member
                                 ``<value>`` NUL ``<seq>`` ``<id>``, read with ZRANGEBYLEX

``<seq>`` in an ordered member is the document's seq as 20 decimal digits: equal scores (and equal
text values) then order by insertion, as SQLite's (value, seq) key does, and the value in a numeric
member lets one document hold several values of one index. A text member starts with the value, so
byte order of members is byte order of values (NUL cannot occur in a value, and sorts before every
other byte: "ab" NUL ... comes before "abc" NUL ...). Reading an entry checks that its document
still exists with that seq, which tells a live entry from one left behind by an expired document.

``{p}`` is a Redis Cluster hash tag: all of a project's keys live in one slot, so
the Lua scripts below (which keep a document and its index entries consistent in
one atomic step) also work on a cluster. TTL is Redis's own key expiry; index
entries of expired documents are removed lazily by the reads that meet them.

Keys a script writes to are passed in KEYS. Two kinds of key are known only to the script,
from what it reads: the documents an index lists (read for their bodies in the same round trip)
and the entries a replaced or deleted document leaves behind (listed in its ``idx``/``ord``).
Declaring those too would cost a read before every such call; they carry the same hash tag,
so they live in the slot of the declared keys and the scripts run on a cluster as they are.

Every call names one project, so every key it touches is in that project's slot; what is not
a configured project's data lives under a pseudo-project of its own, one slot each: the API
keys the gateway issues (``{~gateway-keys}``, gateway/keys/store.py), and each project's usage
counters (``P{p}:~counters:<counter>``, ``charge``). Audit entries, the recall log, summaries
and integration values are collections of the project they belong to. Nothing here lists
keys (SCAN/KEYS would see one master of a cluster): every read starts from an index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from gateway.store import codec
from gateway.store.base import (Charge, Charged, Collection, Document, Increment, OrderedRange, OrderedValue, Tally,
                                require_project)
from gateway.store.redis_client import RedisClient, connect_redis, queue_script

# Shared by the scripts that replace or remove documents: drop a document's ordered entries.
_DROP_ORDERED = """
local function drop_ordered(dkey)
  local old = redis.call('HGET', dkey, 'ord')
  if old then
    local entries = cjson.decode(old)
    for i = 1, #entries, 2 do redis.call('ZREM', entries[i], entries[i + 1]) end
  end
end
"""

# KEYS: doc key, seq key, the index keys the new body belongs to, then its ordered index keys.
# ARGV: body, ttl in ms (0 = none), doc id, how many index keys, then per ordered entry:
# its key's position in KEYS, kind ('n' number / 's' string), value (a number as text).
_PUT = _DROP_ORDERED + """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then seq = redis.call('INCR', KEYS[2]) end
local old = redis.call('HGET', KEYS[1], 'idx')
if old then
  for _, k in ipairs(cjson.decode(old)) do redis.call('ZREM', k, ARGV[3]) end
end
drop_ordered(KEYS[1])
local idx = {}
for i = 3, 2 + tonumber(ARGV[4]) do
  redis.call('ZADD', KEYS[i], seq, ARGV[3])
  idx[#idx + 1] = KEYS[i]
end
local sep, tag, ord = string.char(0), string.format('%020d', tonumber(seq)), {}
for i = 5, #ARGV, 3 do
  local key, value, member = KEYS[tonumber(ARGV[i])], ARGV[i + 2], nil
  if ARGV[i + 1] == 'n' then
    member = tag .. value .. sep .. ARGV[3]
    redis.call('ZADD', key, value, member)
  else
    member = value .. sep .. tag .. ARGV[3]
    redis.call('ZADD', key, 0, member)
  end
  ord[#ord + 1] = key
  ord[#ord + 1] = member
end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'seq', seq, 'idx', cjson.encode(idx))
if #ord > 0 then redis.call('HSET', KEYS[1], 'ord', cjson.encode(ord)) else redis.call('HDEL', KEYS[1], 'ord') end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return seq
"""

# KEYS: doc key. ARGV: doc id. Also removes the document's index and ordered entries.
_DELETE = _DROP_ORDERED + """
local old = redis.call('HGET', KEYS[1], 'idx')
if not old then return 0 end
for _, k in ipairs(cjson.decode(old)) do redis.call('ZREM', k, ARGV[1]) end
drop_ordered(KEYS[1])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: index key. ARGV: doc key prefix, offset, limit (-1 = all), reverse (0/1), mode.
# mode "find" returns bodies, "count" returns a number, "delete" removes and returns a number.
# Index entries whose document has expired are dropped on the way.
_SCAN = _DROP_ORDERED + """
local ids
if ARGV[4] == '1' then ids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
else ids = redis.call('ZRANGE', KEYS[1], 0, -1) end
local offset, limit, mode = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local out, seen = {}, 0
for _, id in ipairs(ids) do
  local dkey = ARGV[1] .. id
  if mode == 'find' then
    local body = redis.call('HGET', dkey, 'body')
    if not body then
      redis.call('ZREM', KEYS[1], id)
    else
      seen = seen + 1
      if seen > offset then
        out[#out + 1] = body
        if limit >= 0 and #out >= limit then break end
      end
    end
  elseif redis.call('EXISTS', dkey) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    seen = seen + 1
    if mode == 'delete' then
      local old = redis.call('HGET', dkey, 'idx')
      if old then
        for _, k in ipairs(cjson.decode(old)) do redis.call('ZREM', k, id) end
      end
      drop_ordered(dkey)
      redis.call('DEL', dkey)
    end
  end
end
if mode == 'find' then return out end
return seen
"""

# Without expiring documents an index is exact, so counts and pages need no per-member check.
_FIND_EXACT = """
local start, stop = tonumber(ARGV[2]), -1
if tonumber(ARGV[3]) >= 0 then stop = start + tonumber(ARGV[3]) - 1 end
local ids
if ARGV[4] == '1' then ids = redis.call('ZREVRANGE', KEYS[1], start, stop)
else ids = redis.call('ZRANGE', KEYS[1], start, stop) end
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', ARGV[1] .. id, 'body')
  if body then out[#out + 1] = body end
end
return out
"""

# KEYS: one ordered index. ARGV: doc key prefix, kind ('n' / 's'), from, to (ZRANGEBYSCORE or ZRANGEBYLEX
# bounds, in the command's order: high first when descending), descending (0/1), offset, limit (-1 = all),
# exact (1: the collection has no expiring documents, so every entry is live), mode ('find' / 'count').
# "find" returns bodies, "count" a number. An entry is live when its document exists with the seq the
# entry was written under; others (an expired document's, or one from before it was written anew) are
# skipped and removed. Exact indexes are paged by the server; others are walked, counting live entries.
_FIND_ORDERED = """
local key, prefix, kind, from, to = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local offset, limit, exact, mode = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1', ARGV[9]
local cmd = kind == 'n' and 'ZRANGEBYSCORE' or 'ZRANGEBYLEX'
if ARGV[5] == '1' then cmd = kind == 'n' and 'ZREVRANGEBYSCORE' or 'ZREVRANGEBYLEX' end
if mode == 'find' and limit == 0 then return {} end
local sep = string.char(0)
local out, seen, stale = {}, 0, {}
-- True once the page is full.
local function visit(member, skip)
  local id, tag
  if kind == 'n' then
    id, tag = string.sub(member, string.find(member, sep, 21, true) + 1), string.sub(member, 1, 20)
  else
    local at = string.find(member, sep, 1, true)
    id, tag = string.sub(member, at + 21), string.sub(member, at + 1, at + 20)
  end
  local doc = redis.call('HMGET', prefix .. id, 'body', 'seq')
  if not doc[1] or string.format('%020d', tonumber(doc[2])) ~= tag then
    stale[#stale + 1] = member
    return false
  end
  seen = seen + 1
  if mode ~= 'find' or seen <= skip then return false end
  out[#out + 1] = doc[1]
  return limit >= 0 and #out >= limit
end
if exact then
  for _, member in ipairs(redis.call(cmd, key, from, to, 'LIMIT', offset, limit)) do visit(member, 0) end
else
  local position, batch, done = 0, 500, false
  while not done do
    local members = redis.call(cmd, key, from, to, 'LIMIT', position, batch)
    for _, member in ipairs(members) do
      done = visit(member, offset)
      if done then break end
    end
    if #members < batch then done = true end
    position = position + batch
  end
end
for _, member in ipairs(stale) do redis.call('ZREM', key, member) end
if mode == 'find' then return out end
return seen
"""

# KEYS: one tally hash per increment. ARGV: name, by, at for each (in KEYS' order).
# HINCRBY keeps concurrent increments from several gateways; the time only moves forward.
_INCREMENT = """
for i = 1, #KEYS do
  local name, at = ARGV[3 * i - 2], tonumber(ARGV[3 * i])
  redis.call('HINCRBY', KEYS[i], name, ARGV[3 * i - 1])
  local last = tonumber(redis.call('HGET', KEYS[i], name .. '@') or '-1')
  if at > last then redis.call('HSET', KEYS[i], name .. '@', ARGV[3 * i]) end
end
return #KEYS
"""

# KEYS: one counter per charge. ARGV: by, limit (-1: none), expiry in epoch ms, for each (in
# KEYS' order). Every counter is checked before any is added to: all or nothing, in one step.
# Returns the refused charge's position (0: none) followed by every counter's value.
_CHARGE = """
local counts, refused = {}, 0
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  local by, limit = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  if refused == 0 and limit >= 0 and counts[i] + math.max(by, 1) > limit then refused = i end
end
if refused == 0 then
  for i = 1, #KEYS do
    counts[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
    redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
  end
end
table.insert(counts, 1, refused)
return counts
"""


def _ttl_ms(ttl_seconds: float | None) -> int:
    """A document's time to live as the put script takes it: milliseconds, at least 1; 0 for none."""
    return max(1, int(ttl_seconds * 1000)) if ttl_seconds is not None else 0


class RedisDocumentStore:
    def __init__(self, redis: str | RedisClient, key_prefix: str = "mnx:", *, cluster: bool = False) -> None:
        """``redis``: a client shared with the rest of the gateway (not closed here), or a URL
        to open one of its own (a Redis Cluster's seed node with ``cluster``)."""
        self._owns_client = isinstance(redis, str)
        self._redis = connect_redis(redis, cluster=cluster) if isinstance(redis, str) else redis
        self._prefix = key_prefix
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._scan = self._redis.register_script(_SCAN)
        self._find_exact = self._redis.register_script(_FIND_EXACT)
        self._find_ordered = self._redis.register_script(_FIND_ORDERED)
        self._increment = self._redis.register_script(_INCREMENT)
        self._charge = self._redis.register_script(_CHARGE)

    # -- key layout -----------------------------------------------------------------------

    def _base(self, collection: Collection, project_id: str) -> str:
        require_project(project_id)
        return f"{self._prefix}{{{quote(project_id, safe='')}}}:{collection.name}:"

    def _index_key(self, base: str, fields: tuple[str, ...], values: tuple[str, ...]) -> str:
        if not fields:
            return base + "i:"
        return base + "i:" + ",".join(fields) + "=" + ":".join(quote(v, safe="") for v in values)

    def _where_key(self, collection: Collection, base: str, where: Mapping[str, str] | None) -> str:
        fields = collection.index_for(where or {})
        return self._index_key(base, fields, tuple((where or {})[f] for f in fields))

    def _ordered_key(self, base: str, index: str, numeric: bool) -> str:
        return base + ("o:n:" if numeric else "o:s:") + quote(index, safe="")

    def _put_call(self, collection: Collection, base: str, doc_id: str, doc: Document,
                  ttl_ms: int) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of _PUT for this document (ValueError, before anything is sent, for bad ordered values)."""
        ordered = collection.ordered_entries(doc)
        keys = [base + "d:" + doc_id, base + "seq", self._index_key(base, (), ())]
        keys += [self._index_key(base, f, v) for f, v in collection.index_entries(doc)]
        args: list[Any] = [codec.encode(doc), ttl_ms, doc_id, len(keys) - 2]
        positions: dict[str, int] = {}
        for index, value in ordered:
            numeric = not isinstance(value, str)
            key = self._ordered_key(base, index, numeric)
            if key not in positions:
                keys.append(key)
                positions[key] = len(keys)  # Lua counts from 1
            args += [positions[key], "n" if numeric else "s", _score(value) if numeric else value]
        return keys, args

    # -- writes ---------------------------------------------------------------------------

    async def put(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                  *, ttl_seconds: float | None = None) -> None:
        base = self._base(collection, project_id)
        keys, args = self._put_call(collection, base, doc_id, doc, _ttl_ms(ttl_seconds))
        await self._put(keys=keys, args=args)

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]],
                       *, ttl_seconds: float | None = None) -> None:
        await self._put_and_increment(collection, project_id, docs, _ttl_ms(ttl_seconds), collection, ())

    async def delete(self, collection: Collection, project_id: str, doc_id: str) -> bool:
        base = self._base(collection, project_id)
        return bool(await self._delete(keys=[base + "d:" + doc_id], args=[doc_id]))

    async def delete_where(self, collection: Collection, project_id: str, where: Mapping[str, str]) -> int:
        if not where:
            raise ValueError("delete_where needs a filter")
        base = self._base(collection, project_id)
        return int(await self._scan(keys=[self._where_key(collection, base, where)],
                                    args=[base + "d:", 0, -1, 0, "delete"]))

    async def increment(self, collection: Collection, project_id: str, increments: Iterable[Increment]) -> None:
        keys, args = self._increment_call(self._base(collection, project_id), increments)
        if keys:
            # One script, so the whole batch is one atomic write (all keys share the project's slot).
            await self._increment(keys=keys, args=args)

    async def put_many_and_increment(self, collection: Collection, project_id: str,
                                     docs: Iterable[tuple[str, Document]], tallied: Collection,
                                     increments: Iterable[Increment]) -> None:
        await self._put_and_increment(collection, project_id, docs, 0, tallied, increments)

    async def _put_and_increment(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]],
                                 ttl_ms: int, tallied: Collection, increments: Iterable[Increment]) -> None:
        """``ttl_ms``: each document's time to live (0: none)."""
        base = self._base(collection, project_id)
        # Every call checked before the first is sent: a bad document writes nothing.
        calls = [(self._put, *self._put_call(collection, base, doc_id, doc, ttl_ms)) for doc_id, doc in docs]
        keys, args = self._increment_call(self._base(tallied, project_id), increments)
        if keys:
            calls.append((self._increment, keys, args))
        if len(calls) == 1:
            # One script is atomic by itself, and one round trip: redis-py sends a pipeline that
            # holds a script after a SCRIPT EXISTS of its own.
            script, keys, args = calls[0]
            await script(keys=keys, args=args)
        elif calls:
            # MULTI/EXEC: all of them or none, also if the connection drops midway. Every key
            # (P{p}:c:d:<id>, P{p}:c:seq, P{p}:c:i:..., P{p}:c:o:..., P{p}:c:t:<id>) carries the
            # project's tag, so a cluster takes the transaction too, on the project's master.
            async with self._redis.pipeline(transaction=True) as pipe:
                for script, keys, args in calls:
                    await queue_script(script, pipe, keys, args)
                await pipe.execute()

    @staticmethod
    def _increment_call(base: str, increments: Iterable[Increment]) -> tuple[list[str], list[Any]]:
        """The increment script's keys and arguments for these increments."""
        keys: list[str] = []
        args: list[Any] = []
        for increment in increments:
            keys.append(base + "t:" + increment.doc_id)
            args += [increment.name, increment.by, repr(float(increment.at))]
        return keys, args

    async def tallies(self, collection: Collection, project_id: str,
                      doc_ids: Iterable[str]) -> dict[str, dict[str, Tally]]:
        base = self._base(collection, project_id)
        ids = list(dict.fromkeys(doc_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc_id in ids:
                pipe.hgetall(base + "t:" + doc_id)
            replies = await pipe.execute()
        found: dict[str, dict[str, Tally]] = {}
        for doc_id, reply in zip(ids, replies):
            values = {_text(k): _text(v) for k, v in reply.items()}
            for name, count in values.items():
                if not name.endswith("@"):
                    found.setdefault(doc_id, {})[name] = Tally(int(count), float(values.get(name + "@", 0.0)))
        return found

    async def delete_tallies(self, collection: Collection, project_id: str, doc_ids: Iterable[str]) -> None:
        base = self._base(collection, project_id)
        keys = [base + "t:" + doc_id for doc_id in doc_ids]
        for start in range(0, len(keys), 500):  # one multi-key DEL: all P{p}:c:t:<id>, one slot
            await self._redis.delete(*keys[start:start + 500])

    async def charge(self, project_id: str, charges: Sequence[Charge]) -> Charged:
        require_project(project_id)
        if not charges:
            return Charged(None, ())
        # Under the project's hash tag, so one script reaches every counter on a cluster too.
        base = f"{self._prefix}{{{quote(project_id, safe='')}}}:~counters:"
        args: list[Any] = []
        for charge in charges:
            args += [charge.by, -1 if charge.limit is None else charge.limit, int(charge.expires_at * 1000)]
        reply = await self._charge(keys=[base + quote(c.counter, safe="") for c in charges], args=args)
        refused = int(reply[0])
        return Charged(refused - 1 if refused else None, tuple(int(count) for count in reply[1:]))

    # -- reads ----------------------------------------------------------------------------

    async def get(self, collection: Collection, project_id: str, doc_id: str) -> Document | None:
        body = await self._redis.hget(self._base(collection, project_id) + "d:" + doc_id, "body")
        return codec.decode(body) if body is not None else None

    async def find(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None,
                   *, limit: int | None = None, offset: int = 0, newest_first: bool = False) -> list[Document]:
        base = self._base(collection, project_id)
        script = self._scan if collection.expiring else self._find_exact
        args: list[Any] = [base + "d:", offset, -1 if limit is None else limit, 1 if newest_first else 0, "find"]
        bodies = await script(keys=[self._where_key(collection, base, where)], args=args)
        return [codec.decode(body) for body in bodies]

    async def find_each(self, project_id: str,
                        queries: Sequence[tuple[Collection, Mapping[str, str]]]) -> list[list[Document]]:
        # Concurrently: one round trip's wait for all of them.
        return list(await asyncio.gather(*(self.find(collection, project_id, where) for collection, where in queries)))

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        base = self._base(collection, project_id)
        key = self._where_key(collection, base, where)
        if not collection.expiring:
            return int(await self._redis.zcard(key))
        return int(await self._scan(keys=[key], args=[base + "d:", 0, -1, 0, "count"]))

    async def find_ordered(self, collection: Collection, project_id: str, where: OrderedRange, *,
                           descending: bool = False, limit: int | None = None, offset: int = 0) -> list[Document]:
        base = self._base(collection, project_id)
        low, high = _bounds(where)
        args: list[Any] = [base + "d:", "n" if where.numeric else "s", *((high, low) if descending else (low, high)),
                           1 if descending else 0, offset, -1 if limit is None else limit,
                           0 if collection.expiring else 1, "find"]
        bodies = await self._find_ordered(keys=[self._ordered_key(base, where.index, where.numeric)], args=args)
        return [codec.decode(body) for body in bodies]

    async def count_ordered(self, collection: Collection, project_id: str, where: OrderedRange) -> int:
        base = self._base(collection, project_id)
        key = self._ordered_key(base, where.index, where.numeric)
        low, high = _bounds(where)
        if collection.expiring:  # entries of expired documents linger until a read meets them
            return int(await self._find_ordered(keys=[key], args=[base + "d:", "n" if where.numeric else "s",
                                                                  low, high, 0, 0, -1, 0, "count"]))
        if where.numeric:
            return int(await self._redis.zcount(key, low, high))
        return int(await self._redis.zlexcount(key, low, high))

    async def scrub(self) -> None:
        # A deleted key is gone from memory at once; what Redis persists (RDB, AOF) is the
        # operator's configuration, rewritten by Redis itself.
        return None

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _score(value: OrderedValue) -> str:
    # A sorted-set score is a double: repr round-trips it exactly (ints beyond 2**53 round, as they must).
    return repr(float(value))


def _bounds(where: OrderedRange) -> tuple[str, str]:
    """(min, max) of the range as ZRANGEBYSCORE or ZRANGEBYLEX spell them.

    A text member is value NUL seq id, so the value's entries lie between "v" and "v\\x01" (NUL is
    refused in values, so no other value lies there): ">= v" is [v, "> v" is [v\\x01, "< v" is (v,
    "<= v" is (v\\x01."""
    if where.numeric:
        low = "-inf" if where.low is None else ("" if where.low_inclusive else "(") + _score(where.low)
        high = "+inf" if where.high is None else ("" if where.high_inclusive else "(") + _score(where.high)
        return low, high
    low = "-" if where.low is None else "[" + str(where.low) + ("" if where.low_inclusive else "\x01")
    high = "+" if where.high is None else "(" + str(where.high) + ("\x01" if where.high_inclusive else "")
    return low, high
