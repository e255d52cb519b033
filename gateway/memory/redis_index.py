"""A memory index on Redis's own query engine (Redis 8, or RediSearch in Redis Stack).

For teams that run one service: the gateway's documents, queue and index all in Redis, and
any number of gateway processes sharing them. Each memory point is two hashes. The one under
``<key_prefix>pt:`` is what one ``FT.CREATE`` index indexes:

- ``project`` TAG: a digest of the project (counting a project's points);
- ``access`` TAG: digests of the point's access keys (vector_index.access_keys: search,
  erasure and counting a subject filter on them, as on the Qdrant backends);
- ``terms`` TEXT: the memory's BM25 vector as tokens, scored by Redis's BM25 (the lexical leg);
- ``dense`` VECTOR (HNSW, FLOAT32, COSINE, the embedder's dimensions; none without one).

Its companion under ``<key_prefix>f:`` holds what search returns but never matches on: the
packed search-time fields and the recall counts. Any write to an indexed hash makes the engine
index the whole document again, and each replaced document stays in the BM25 statistics (the
document frequencies until the engine's garbage collector runs; the average document length,
in RediSearch before late 2025, for good): recall counts change on every recall, so they and
the fields live apart, and only a change of words or of who may read re-indexes a point.

Nothing a caller wrote reaches the query language: tag values are hex digests of the keys
(which embed project and subject ids), and the lexical leg's tokens are derived from the
lexicon's term ids, so no project id, subject id or query text can break a query or widen it
to another tenant. A term's token carries a salt of its project, which also keeps each
project's document frequency of a word (BM25's IDF) its own, as the embedded index does; the
document count and average length BM25 also weighs by are the whole index's.

The lexical leg honours the query's term weights (a conversation-context word counts less
than the question's own), which the engine's BM25 scorers do not: see _lexical_commands.

The engine has no sparse vectors and (before Redis 8.4's FT.HYBRID) no fusion: the lexical
and dense legs are two searches sent in one round trip, fused here with the same weighted
reciprocal-rank fusion the Qdrant backends get from Qdrant (vector_index.fused).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any
from collections.abc import Sequence

import numpy as np
import redis.asyncio as aioredis
from qdrant_edge import SparseVector
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from gateway.config import RedisVectorsConfig
from gateway.memory.lexical_postings import key_salt
from gateway.memory.vector_index import (DENSE, LAST_SEEN_KEY, PREFETCH_MIN, SEEN_KEY, SPARSE, IndexedMemory,
                                         IndexMismatch, IndexQuery, RecallCounts, VectorHit, check_dimensions,
                                         cosines, fused, owner_key, packed_payload, point_id, require_project,
                                         scored_hits, search_legs, searchable_by, shared_key)

# A term's weight in its BM25 vector (saturation, length, neighbours and pairs already in it)
# becomes this many repeats of its token, so that Redis's BM25 counts a neighbour's word or a
# word pair (about 0.4) less than a word of the memory's own text (about 1.7) and a word both
# have (about 4) more. Capped: BM25 saturates anyway.
TERM_UNIT = 0.5
MAX_REPEATS = 8
# Erasure deletes a subject's points this many at a time.
_PAGE = 1000
# Where the index records what it was built for (dense dimensions, lexical kind).
_META_FIELDS = ("dense_dimensions", "lexical")

# Writes to a point that exists only (KEYS[1] its indexed hash, KEYS[2] its companion): an
# update or a touch must not leave half a point behind for a memory whose point is gone.
# Set the companion's fields (ARGV: field, value, ...):
_SET_COMPANION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
return 1
"""
# Replace the fields (ARGV[1]) and the access tags (ARGV[2]), re-indexing the point only if the
# tags changed; with ARGV[3], new terms, which always re-index it.
_REPLACE_FIELDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'fields', ARGV[1])
if ARGV[3] then
  redis.call('HSET', KEYS[1], 'access', ARGV[2], 'terms', ARGV[3])
elseif redis.call('HGET', KEYS[1], 'access') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'access', ARGV[2])
end
return 1
"""


def tag(key: str) -> str:
    """A key as the index holds it: a hex digest, which the query language reads as one plain word."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def _project_tag(project_id: str) -> str:
    return tag(shared_key(project_id) + "\x1fproject")


def _tags(keys: Sequence[str]) -> str:
    return ",".join(tag(key) for key in keys)


def _any_tag(field: str, digests: Sequence[str]) -> str:
    return f"@{field}:{{{' | '.join(digests)}}}"


def _tokens(project_id: str, vector: SparseVector) -> list[str]:
    """Each term id of the vector as one word, its project's salt first (fixed width, so that
    two projects' words never meet): "t" and hex digits, which the engine reads as one term."""
    salt = key_salt(shared_key(project_id))
    return [f"t{salt:08x}{index:08x}" for index in vector.indices]


def term_tokens(project_id: str, vector: SparseVector) -> str:
    """A BM25 vector as text for the ``terms`` field: each term's token repeated by its weight."""
    words = []
    for token, weight in zip(_tokens(project_id, vector), vector.values):
        words.extend([token] * min(MAX_REPEATS, max(1, round(weight / TERM_UNIT))))
    return " ".join(words)


def _dense_bytes(vector: Sequence[float]) -> bytes:
    """FLOAT32, normalised (as Qdrant stores cosine vectors): a hit's cosine is then one dot product."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return (array / norm if norm else array).astype(np.float32).tobytes()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _payload(values: list[Any]) -> dict[str, Any]:
    """A point's payload as vector_index.scored_hits reads it, from its companion's
    fields, seen and last_seen (the last two None until a recall touches it)."""
    fields, seen, last_seen = values
    payload: dict[str, Any] = {"fields": fields}
    if seen is not None:
        payload[SEEN_KEY] = int(seen)
        payload[LAST_SEEN_KEY] = float(last_seen)
    return payload


class RedisIndex:
    def __init__(self, config: RedisVectorsConfig, dense_dimensions: int | None,
                 lexical: str = "contextual") -> None:
        self.dense_dimensions = dense_dimensions
        self._lexical = lexical
        self._index = config.index
        self._points = f"{config.key_prefix}pt:"
        self._companions = f"{config.key_prefix}f:"
        self._meta = f"{config.key_prefix}index:{config.index}"
        # RESP2: redis-py reads FT.SEARCH's flat RESP2 answer in a third of the time it takes
        # over the RESP3 map (100 hits: 0.36 against 1.27 ms).
        self._client = aioredis.Redis.from_url(config.url, protocol=2, max_connections=config.max_connections,
                                               socket_timeout=config.socket_timeout_seconds)
        self._set_companion = self._client.register_script(_SET_COMPANION)
        self._replace_fields = self._client.register_script(_REPLACE_FIELDS)

    async def open(self) -> None:
        """Create the index, or check that the existing one was built for this embedder and lexicon."""
        schema: list[Any] = ["project", "TAG", "access", "TAG", "terms", "TEXT", "NOSTEM"]
        if self.dense_dimensions:
            schema += ["dense", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(self.dense_dimensions),
                       "DISTANCE_METRIC", "COSINE"]
        try:
            # No stopwords and no stemming: the tokens are term ids the lexicon already made.
            # No offsets or highlighting: no phrase search needs them.
            await self._client.execute_command("FT.CREATE", self._index, "ON", "HASH", "PREFIX", "1", self._points,
                                               "STOPWORDS", "0", "NOOFFSETS", "NOHL", "NOFIELDS", "SCHEMA", *schema)
        except ResponseError as error:
            if "already exists" not in str(error).lower():
                raise
            await self._check_existing()
            return
        await self._record()

    async def _record(self) -> None:
        """Note what the index was built for (checked by every later open)."""
        await self._client.hset(self._meta, mapping={"dense_dimensions": str(self.dense_dimensions or ""),
                                                     "lexical": self._lexical})

    async def _check_existing(self) -> None:
        where = f"the Redis index {self._index!r}"
        stored: list[Any] = [None, None]
        for _ in range(50):  # another gateway may have created it a moment ago and not yet recorded it
            stored = await self._client.hmget(self._meta, list(_META_FIELDS))
            if stored[1] is not None:
                break
            await asyncio.sleep(0.1)
        else:
            if not await self._is_our_empty_index():
                raise IndexMismatch(f"{where} exists but was not created by the gateway (no {self._meta} key); "
                                    "use another memory.vectors.redis.index", setting="memory.vectors.redis.index")
            # The gateway that created it died before recording it (nothing can have been written
            # to it since: no gateway could open it): record it now, as that one would have.
            await self._record()
            return
        dimensions = _text(stored[0]) if stored[0] is not None else ""
        check_dimensions(int(dimensions) if dimensions else None, self.dense_dimensions, where)
        if _text(stored[1]) != self._lexical:
            raise IndexMismatch(f"{where} holds {_text(stored[1])} BM25 vectors but memory.vectors.lexical is "
                                f"{self._lexical}; use a new index name to switch", setting="memory.vectors.lexical")

    async def _is_our_empty_index(self) -> bool:
        """Whether the existing index, which has no record, is empty and exactly the one open()
        would have created (its prefix, fields and vector size): then only its record is missing."""
        info = _pairs(await self._client.execute_command("FT.INFO", self._index))
        definition = _pairs(info.get("index_definition") or [])
        fields = {}
        for attribute in info.get("attributes") or []:
            described = _pairs(attribute)
            fields[_text(described.get("attribute", ""))] = described
        expected = {"project": "TAG", "access": "TAG", "terms": "TEXT"}
        if self.dense_dimensions:
            expected["dense"] = "VECTOR"
        return (int(info.get("num_docs", 1)) == 0
                and [_text(prefix) for prefix in definition.get("prefixes") or []] == [self._points]
                and {name: _text(described.get("type", "")) for name, described in fields.items()} == expected
                and (not self.dense_dimensions
                     or int(fields["dense"].get("dim", fields["dense"].get("dimension", 0))) == self.dense_dimensions))

    def _keys(self, project_id: str, memory_id: str) -> list[str]:
        """A point's indexed hash and its companion."""
        point = point_id(project_id, memory_id)
        return [self._points + point, self._companions + point]

    def _companion(self, point_key: str) -> str:
        return self._companions + point_key[len(self._points):]

    async def upsert(self, project_id: str, memories: Sequence[IndexedMemory]) -> None:
        require_project(project_id)
        if not memories:
            return
        project = _project_tag(project_id)
        async with self._client.pipeline(transaction=False) as pipe:
            for memory in memories:
                point, companion = self._keys(project_id, memory.memory_id)
                payload = packed_payload(project_id, memory.subject_id, memory.memory_id, memory.fields,
                                         memory.access)
                # The companion first: a search that finds the point finds its fields. HSET
                # leaves the recall counts touched since the point was last written.
                pipe.hset(companion, "fields", payload["fields"])
                indexed: dict[FieldT, EncodableT] = {"project": project, "access": _tags(payload["access"]),
                                                     "terms": term_tokens(project_id, memory.sparse)}
                if memory.dense is not None:
                    indexed["dense"] = _dense_bytes(memory.dense)
                else:
                    pipe.hdel(point, "dense")
                pipe.hset(point, mapping=indexed)
            await pipe.execute()

    async def update_fields(self, project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        require_project(project_id)
        payload = packed_payload(project_id, subject_id, memory_id, fields)
        await self._replace_fields(keys=self._keys(project_id, memory_id),
                                   args=[payload["fields"], _tags(payload["access"])])

    async def update_lexical(self, project_id: str, subject_id: str, memory_id: str, sparse: SparseVector,
                             fields: dict[str, Any]) -> None:
        require_project(project_id)
        payload = packed_payload(project_id, subject_id, memory_id, fields)
        await self._replace_fields(keys=self._keys(project_id, memory_id),
                                   args=[payload["fields"], _tags(payload["access"]),
                                         term_tokens(project_id, sparse)])

    async def touch(self, project_id: str, counts: Sequence[RecallCounts]) -> None:
        require_project(project_id)
        if not counts:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for memory in counts:
                await self._set_companion(keys=self._keys(project_id, memory.memory_id),
                                          args=[SEEN_KEY, memory.seen_count, LAST_SEEN_KEY, repr(memory.last_seen)],
                                          client=pipe)
            await pipe.execute()

    async def search(self, project_id: str, query: IndexQuery) -> list[VectorHit]:
        require_project(project_id)
        allowed = _any_tag("access", [tag(key) for key in searchable_by(project_id, query)])
        legs = search_legs(query, bool(self.dense_dimensions))
        if not legs:
            return []
        if len(legs) == 1:
            using, vector = legs[0]
            if using == SPARSE:
                weights, commands = self._lexical_commands(project_id, allowed, vector, query.limit)
                ranked = _weighted_sum(weights, await self._send(commands), query.limit)
                return await self._read_hits(ranked, [None] * len(ranked))
            reply = await self._client.execute_command(*self._leg_command(project_id, allowed, using, vector,
                                                                          query.limit, fusing=False))
            # The engine's cosine distance: the hit's similarity, and its score as on Qdrant.
            found = [(key, 1.0 - distance) for key, distance in _hits(reply, scores=False, distances=True)]
            return await self._read_hits(found, [score for _, score in found])
        depth = max(PREFETCH_MIN, query.limit)
        # Both legs in one round trip: the lexical leg's searches (one per term weight), then the dense one.
        (_, sparse), (_, dense) = legs  # search_legs: the lexical leg, then the dense one
        weights, commands = self._lexical_commands(project_id, allowed, sparse, depth)
        replies = await self._send([*commands, self._leg_command(project_id, allowed, DENSE, dense, depth,
                                                                 fusing=True)])
        lexical = _weighted_sum(weights, replies[:-1], depth)
        nearest = _hits(replies[-1], scores=False, distances=False)
        rankings = [(SPARSE, [key for key, _ in lexical]), (DENSE, [key for key, _ in nearest])]
        return await self._read_hits(fused(rankings, query.limit), None, query.dense or [])

    def _lexical_commands(self, project_id: str, allowed: str, vector: SparseVector,
                          limit: int) -> tuple[list[float], list[list[Any]]]:
        """The lexical leg as searches with BM25 scores, one per distinct term weight, and those
        weights. A query's terms weigh differently (a conversation-context word counts
        CONTEXT_TERM_WEIGHT of a question's word, as on Qdrant, where the weight multiplies the
        term's IDF), but the engine's BM25 scorers ignore a query term's $weight (RediSearch
        2.10). A document's BM25 is a sum over the terms it matches, so each weight's terms are
        searched apart and the scores added up, times their weight (_weighted_sum)."""
        groups: dict[float, list[int]] = {}
        for index, weight in zip(vector.indices, vector.values):
            groups.setdefault(weight, []).append(index)
        return list(groups), [self._leg_command(project_id, allowed, SPARSE, SparseVector(ids, [1.0] * len(ids)),
                                                limit, fusing=False) for ids in groups.values()]

    async def _send(self, commands: list[list[Any]]) -> list[Any]:
        if len(commands) == 1:
            return [await self._client.execute_command(*commands[0])]
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    async def _read_hits(self, ranked: list[tuple[str, float]], similarities: list[float | None] | None,
                         dense: Sequence[float] = ()) -> list[VectorHit]:
        """The hits' fields and recall counts (and, for ``similarities`` None, their cosines to
        ``dense`` from their stored vectors), in one round trip; a point erased since the search
        found it is left out."""
        async with self._client.pipeline(transaction=False) as pipe:
            for key, _ in ranked:
                pipe.hmget(self._companion(key), ["fields", SEEN_KEY, LAST_SEEN_KEY])
                if similarities is None:
                    pipe.hget(key, "dense")
            stored = await pipe.execute()
        per_hit = 1 if similarities is not None else 2
        points, vectors, kept = [], [], []
        for number, (_, score) in enumerate(ranked):
            values = stored[number * per_hit]
            if values[0] is None:
                continue
            points.append((score, _payload(values)))
            kept.append(number)
            if similarities is None:
                blob = stored[number * per_hit + 1]
                vectors.append({DENSE: np.frombuffer(blob, dtype=np.float32)} if blob else None)
        found = cosines(vectors, dense) if similarities is None else [similarities[i] for i in kept]
        return scored_hits(points, found)

    def _leg_command(self, project_id: str, allowed: str, using: str, vector: Any, limit: int,
                     fusing: bool) -> list[Any]:
        """FT.SEARCH for one leg, the points' keys best first: BM25 over the query's term
        tokens, or the nearest dense vectors, among the points the asker may read. Alone, a
        leg's scores (or distances) come too; a leg to fuse needs its order only."""
        if using == SPARSE:
            terms = " | ".join(_tokens(project_id, vector))
            scores = [] if fusing else ["WITHSCORES"]
            return ["FT.SEARCH", self._index, f"@terms:({terms}) {allowed}", "SCORER", "BM25STD", *scores,
                    "NOCONTENT", "LIMIT", "0", str(limit), "DIALECT", "2"]
        returned = ["NOCONTENT"] if fusing else ["RETURN", "1", "distance"]
        return ["FT.SEARCH", self._index, f"({allowed})=>[KNN $k @dense $vector AS distance]",
                "PARAMS", "4", "k", str(limit), "vector", _dense_bytes(vector), "SORTBY", "distance", *returned,
                "LIMIT", "0", str(limit), "DIALECT", "2"]

    async def delete_subject(self, project_id: str, subject_id: str) -> None:
        require_project(project_id)
        owned = _any_tag("access", [tag(owner_key(project_id, subject_id))])
        while True:
            reply = await self._client.execute_command("FT.SEARCH", self._index, owned, "NOCONTENT",
                                                       "LIMIT", "0", str(_PAGE), "DIALECT", "2")
            keys = [key for key, _ in _hits(reply, scores=False, distances=False)]
            if not keys:
                return
            await self._client.delete(*keys, *(self._companion(key) for key in keys))

    async def count(self, project_id: str, subject_id: str | None = None) -> int:
        require_project(project_id)
        where = (_any_tag("project", [_project_tag(project_id)]) if subject_id is None
                 else _any_tag("access", [tag(owner_key(project_id, subject_id))]))
        reply = await self._client.execute_command("FT.SEARCH", self._index, where, "NOCONTENT", "LIMIT", "0", "0",
                                                   "DIALECT", "2")
        return int(reply[0])

    async def drop(self) -> None:
        """Remove the index, its points and its record (tests, and a deliberate reset)."""
        try:
            await self._client.execute_command("FT.DROPINDEX", self._index, "DD")
        except ResponseError as error:
            if "unknown index" not in str(error).lower() and "no such index" not in str(error).lower():
                raise
        # The prefix is the operator's: a * ? [ or \ in it is matched literally, never as a pattern.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._companions) + "*"
        companions = [key async for key in self._client.scan_iter(match=pattern, count=1000)]
        await self._client.delete(self._meta, *companions)

    async def close(self) -> None:
        await self._client.aclose()


def _pairs(reply: Any) -> dict[str, Any]:
    """A RESP2 flat list of names and values (FT.INFO's) as a dict, names as text in lower case."""
    items = list(reply)
    return {_text(items[at]).lower(): items[at + 1] for at in range(0, len(items) - 1, 2)}


def _weighted_sum(weights: Sequence[float], replies: Sequence[Any], limit: int) -> list[tuple[str, float]]:
    """Each document's BM25 scores from the searches of one term weight each, times that weight,
    added up: the best ``limit``, best first."""
    scores: dict[str, float] = {}
    for weight, reply in zip(weights, replies):
        for key, score in _hits(reply, scores=True, distances=False):
            scores[key] = scores.get(key, 0.0) + weight * score
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)[:limit]


def _hits(reply: list[Any], scores: bool, distances: bool) -> list[tuple[str, float]]:
    """FT.SEARCH's RESP2 answer, ``[total, key, (score,) (["distance", value],) ...]``, as
    (key, score or distance, 0.0 with neither)."""
    step = 1 + scores + distances
    hits = []
    for at in range(1, len(reply), step):
        value = 0.0
        if scores:
            value = float(reply[at + 1])
        elif distances:
            returned = reply[at + 1] or []
            value = float(returned[1]) if len(returned) > 1 else 2.0  # none: as far as cosine goes
        hits.append((_text(reply[at]), value))
    return hits
