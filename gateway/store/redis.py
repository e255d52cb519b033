"""Redis document store: the production backend, shared by any number of gateways.

Layout, for key prefix ``P``, project ``p`` and collection ``c``:

* ``P{p}:c:d:<id>``            hash: ``body`` (JSON), ``seq``, ``idx`` (the index keys it is in)
* ``P{p}:c:i:<index>=<values>`` sorted set of ids scored by ``seq`` (insertion order)
* ``P{p}:c:i:``                 the same, for every document of the collection
* ``P{p}:c:seq``                the collection's insertion counter
* ``P{p}:c:t:<id>``            hash of the document's tallies: ``<name>`` (count), ``<name>@`` (last time)

``{p}`` is a Redis Cluster hash tag: all of a project's keys live in one slot, so
the Lua scripts below (which keep a document and its index entries consistent in
one atomic step) also work on a cluster. TTL is Redis's own key expiry; index
entries of expired documents are removed lazily by the reads that meet them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import redis.asyncio as redis_asyncio

from gateway.store import codec
from gateway.store.base import Collection, Document, Increment, Tally, require_project
from gateway.store.redis_client import connect_redis

# KEYS: doc key, seq key, then the index keys the new body belongs to.
# ARGV: body, ttl in ms (0 = none), doc id.
_PUT = """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then seq = redis.call('INCR', KEYS[2]) end
local old = redis.call('HGET', KEYS[1], 'idx')
if old then
  for _, k in ipairs(cjson.decode(old)) do redis.call('ZREM', k, ARGV[3]) end
end
local idx = {}
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], seq, ARGV[3])
  idx[#idx + 1] = KEYS[i]
end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'seq', seq, 'idx', cjson.encode(idx))
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return seq
"""

# KEYS: doc key. ARGV: doc id. Also removes the document's index entries.
_DELETE = """
local old = redis.call('HGET', KEYS[1], 'idx')
if not old then return 0 end
for _, k in ipairs(cjson.decode(old)) do redis.call('ZREM', k, ARGV[1]) end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: index key. ARGV: doc key prefix, offset, limit (-1 = all), reverse (0/1), mode.
# mode "find" returns bodies, "count" returns a number, "delete" removes and returns a number.
# Index entries whose document has expired are dropped on the way.
_SCAN = """
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


class RedisDocumentStore:
    def __init__(self, redis: str | redis_asyncio.Redis, key_prefix: str = "mnx:") -> None:
        """``redis``: a client shared with the rest of the gateway (not closed here), or a URL
        to open one of its own."""
        self._owns_client = isinstance(redis, str)
        self._redis = connect_redis(redis) if isinstance(redis, str) else redis
        self._prefix = key_prefix
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._scan = self._redis.register_script(_SCAN)
        self._find_exact = self._redis.register_script(_FIND_EXACT)
        self._increment = self._redis.register_script(_INCREMENT)

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

    def _put_keys(self, collection: Collection, base: str, doc_id: str, doc: Document) -> list[str]:
        keys = [base + "d:" + doc_id, base + "seq", self._index_key(base, (), ())]
        keys += [self._index_key(base, f, v) for f, v in collection.index_entries(doc)]
        return keys

    # -- writes ---------------------------------------------------------------------------

    async def put(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                  *, ttl_seconds: float | None = None) -> None:
        base = self._base(collection, project_id)
        ttl_ms = max(1, int(ttl_seconds * 1000)) if ttl_seconds is not None else 0
        await self._put(keys=self._put_keys(collection, base, doc_id, doc),
                        args=[codec.encode(doc), ttl_ms, doc_id])

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]]) -> None:
        base = self._base(collection, project_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc_id, doc in docs:
                await self._put(keys=self._put_keys(collection, base, doc_id, doc),
                                args=[codec.encode(doc), 0, doc_id], client=pipe)
            await pipe.execute()

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
        base = self._base(collection, project_id)
        keys: list[str] = []
        args: list[Any] = []
        for increment in increments:
            keys.append(base + "t:" + increment.doc_id)
            args += [increment.name, increment.by, repr(float(increment.at))]
        if keys:
            # One script, so the whole batch is one atomic write (all keys share the project's slot).
            await self._increment(keys=keys, args=args)

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
        for start in range(0, len(keys), 500):
            await self._redis.delete(*keys[start:start + 500])

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

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        base = self._base(collection, project_id)
        key = self._where_key(collection, base, where)
        if not collection.expiring:
            return int(await self._redis.zcard(key))
        return int(await self._scan(keys=[key], args=[base + "d:", 0, -1, 0, "count"]))

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
