#!/usr/bin/env python3
"""Memory-search benchmark: bulk insert and filtered search on the embedded index (Qdrant Edge).

For each size (default 10k, 100k and 1M memories over 1,000 subjects) one run:

  build    a fresh process generates the synthetic memories (384-d unit vectors and short
           made-up texts, fixed seed), inserts them through ``EdgeIndex.upsert`` in batches,
           BM25 vectors (``IndexUpkeep.indexed``: ``Lexicon.index_text``) built inside the timed loop,
           then the same memories with plain BM25 vectors (memory.vectors.lexical: plain), then
           builds a second, lexical-only index (no dense vectors) for the HTTP gateway,
           and computes the exact (numpy brute-force cosine) top-10 of every query;
  search   a second fresh process opens the dense index (RSS measured right after) and times,
           query by query at concurrency 1, Qdrant Edge alone (``shard.query``), the adapter
           (``EdgeIndex.search``) and the project's own search path (``Memories.search``),
           dense-only and hybrid (BM25 + dense), with recall@10 of the dense-only searches;
           then, for the sizes in --optimize-sizes, calls ``EdgeIndex.optimize()`` (HNSW) and
           measures everything again;
  http     ``mnx-gateway serve`` as a subprocess, lexical-only (memory.embedder.provider
           none) on the pre-built lexical index, timed with ``GET /api/v1/memories/search``
           from a sequential client on one keep-alive connection.

It prints a markdown report and writes it into bench/memory_search/README.md.

Usage (from the repository root, with the venv that has the gateway installed):

    /tmp/venv/bin/python bench/memory_search/run.py [--sizes 10000,100000,1000000] [--queries 2000]

``--smoke`` (what tests/test_bench_smoke.py runs): 1,000 memories, 100 queries, no HTTP row, README
left alone.

Every child process is started in its own process group and stopped when the run ends,
fails or is interrupted; index directories live in a temporary directory removed at the
end (kept with --keep-dir or on failure). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = HERE / "README.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import results  # noqa: E402

HOST = "127.0.0.1"
PROJECT = "default"
GATEWAY_KEY = "mnx_bench_memory_key"
DIM = 384
TOP_K = 10
VOCABULARY = 5000
ZIPF_EXPONENT = 1.0
WORDS_PER_MEMORY = (8, 15)
# Memories per insert batch whose sparse vectors are counted (outside the timed sections).
SAMPLED_PER_BATCH = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULTS_START = "<!-- memory-search-results:start -->"
RESULTS_END = "<!-- memory-search-results:end -->"

# Targets at 1M memories.
TARGET_INSERT_RATE = 10_000
TARGET_SEARCH_P50 = 1.0
TARGET_SEARCH_P99 = 3.0
TARGET_RECALL = 0.98
TARGET_HTTP_P50 = 3.0


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(message, flush=True)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


class LoadMeter:
    """CPU the rest of the machine used while we measured, in % of one core.

    ``pids``: the processes doing the benchmark's work (this one, plus the gateway for HTTP).
    """

    def __init__(self, pids: Sequence[int | str] = ("self",)) -> None:
        self.pids = [os.getpid() if p == "self" else int(p) for p in pids]
        self.busy0 = machine_busy_seconds()
        self.own0 = sum(cpu_seconds(p) for p in self.pids)
        self.t0 = time.monotonic()

    def other_pct(self) -> float:
        wall = time.monotonic() - self.t0
        busy = machine_busy_seconds() - self.busy0
        own = sum(cpu_seconds(p) for p in self.pids) - self.own0
        return max(0.0, (busy - own) / wall * 100) if wall > 0 else 0.0


def wait_quiet(limit_pct: float, max_wait: float) -> None:
    """Give other work on the machine up to ``max_wait`` s to calm down below ``limit_pct``."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        busy0 = machine_busy_seconds()
        time.sleep(0.5)
        if (machine_busy_seconds() - busy0) / 0.5 * 100 <= limit_pct:
            return


def dir_size_mb(path: Path) -> float:
    total = 0
    for entry in path.rglob("*"):
        if entry.is_file():
            total += entry.stat().st_blocks * 512
    return total / 2**20


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(latencies_ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "n": len(a)}


# -- synthetic data ------------------------------------------------------------------------


def subject_name(subject: int) -> str:
    return f"user_{subject:04d}"


def memory_name(i: int) -> str:
    return f"mem_{i:08d}"


def make_vocabulary(rng: np.random.Generator, lexicon: Any) -> list[str]:
    """Made-up words of 2-4 syllables, none a stopword, in random Zipf-rank order."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + [c + v + "n" for c in "bdgkmt" for v in "aio"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(syllables, int(rng.integers(2, 5))))
        if len(word) >= 4 and lexicon.terms(word):
            words.add(word)
    ordered = sorted(words)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def zipf_probabilities() -> np.ndarray:
    p = 1.0 / np.arange(1, VOCABULARY + 1) ** ZIPF_EXPONENT
    return p / p.sum()


@dataclass
class Dataset:
    vectors: np.ndarray  # (n, DIM) float32, unit length
    subjects: np.ndarray  # (n,) int
    texts: list[str]
    # The texts of the same subject's memories stored just before and just after (what
    # Memories keeps in doc["_previous_text"] / doc["_next_text"] and indexes as BM25 context).
    previous: list[str]
    following: list[str]
    created_at: np.ndarray  # (n,) epoch seconds
    vocabulary: list[str]


def make_dataset(n: int, subjects: int, seed: int, lexicon: Any) -> Dataset:
    rng = np.random.default_rng(seed)
    vocabulary = make_vocabulary(rng, lexicon)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(n, start + 100_000) - start, DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + len(block)] = block
    owners = rng.integers(0, subjects, n)
    lengths = rng.integers(WORDS_PER_MEMORY[0], WORDS_PER_MEMORY[1] + 1, n)
    words = rng.choice(VOCABULARY, size=int(lengths.sum()), p=zipf_probabilities())
    ends = np.cumsum(lengths)
    texts = [" ".join(vocabulary[w] for w in words[e - length:e])
             for e, length in zip(ends.tolist(), lengths.tolist())]
    last: dict[int, int] = {}
    previous = [""] * n
    following = [""] * n
    for i, owner in enumerate(owners.tolist()):
        if owner in last:
            previous[i] = texts[last[owner]]
            following[last[owner]] = texts[i]
        last[owner] = i
    created_at = time.time() - rng.uniform(0, 365 * 86400, n)
    return Dataset(vectors, owners, texts, previous, following, created_at, vocabulary)


def memory_doc(data: Dataset, i: int) -> dict[str, Any]:
    """The fields of the document Memories.create stores that indexing reads: a plain private fact."""
    return {"id": memory_name(i), "subject_id": subject_name(int(data.subjects[i])), "text": data.texts[i],
            "kind": "fact", "listing": "active", "visibility": "private", "importance": 50, "confidence": 0.8,
            "is_temporal": False, "_created": float(data.created_at[i]), "seen_count": 0,
            "_previous_text": data.previous[i], "_next_text": data.following[i]}


# -- worker: build ---------------------------------------------------------------------------


class TimedShard:
    """Wraps the adapter's EdgeShard to time the engine's own share of ``update`` and ``query``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.update_seconds = 0.0
        self.query_seconds = 0.0

    def query(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.query(request)
        finally:
            self.query_seconds += time.perf_counter() - started

    def update(self, operation: Any) -> None:
        started = time.perf_counter()
        self.inner.update(operation)
        self.update_seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def insert_all(path: Path, data: Dataset, batch: int, dense: bool, label: str,
                     lexical: str = "contextual") -> dict[str, Any]:
    from gateway.config import MemoryConfig, VectorsConfig
    from gateway.memory.edge_index import EdgeIndex
    from gateway.memory.memories import Memories

    n = len(data.texts)
    index = EdgeIndex(str(path), DIM if dense else None, lexical)
    # The product's own per-memory indexing step (IndexUpkeep.indexed: the index fields and the one
    # BM25 vector of the text, with its neighbours' words and word pairs unless memory.vectors.
    # lexical is plain), so the benchmark follows whatever Memories.create hands to the index.
    # It never touches the store.
    memories = Memories(None, index, MemoryConfig(vectors=VectorsConfig(lexical=lexical)))  # type: ignore[arg-type]
    timer = TimedShard(index._shard)
    index._shard = timer
    rss_before = rss_mb()[0]
    meter = LoadMeter()
    prepare = upsert = 0.0
    entries = sampled = 0
    next_report = time.perf_counter() + 15
    started = time.perf_counter()
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        # Not timed: an embedder hands the gateway lists of floats already.
        lists = data.vectors[start:stop].tolist() if dense else None
        t0 = time.perf_counter()
        batch_items = [memories._upkeep.indexed(memory_doc(data, i), lists[i - start] if lists else None)
                       for i in range(start, stop)]
        t1 = time.perf_counter()
        await index.upsert(PROJECT, batch_items)
        t2 = time.perf_counter()
        entries += sum(len(item.sparse.indices) for item in batch_items[:SAMPLED_PER_BATCH])
        sampled += min(len(batch_items), SAMPLED_PER_BATCH)
        prepare += t1 - t0
        upsert += t2 - t1
        if t2 >= next_report:
            next_report = t2 + 15
            log(f"    {label}: {stop:,}/{n:,} inserted, {stop / (prepare + upsert):,.0f} memories/s, "
                f"RSS {rss_mb()[0]:,.0f} MiB")
    elapsed = time.perf_counter() - started
    timed = prepare + upsert
    rss_after, hwm = rss_mb()
    index._shard = timer.inner
    info = index._shard.info()
    points, segments = info.points_count, info.segments_count
    t0 = time.perf_counter()
    await index.close()
    close_s = time.perf_counter() - t0
    if points != n:
        raise BenchError(f"{label}: the index holds {points} points after inserting {n}")
    return {"n": n, "rate": n / timed, "seconds": timed, "wall_seconds": elapsed, "encode_seconds": prepare,
            "adapter_seconds": upsert - timer.update_seconds, "engine_seconds": timer.update_seconds,
            "close_seconds": close_s, "other_load_pct": meter.other_pct(), "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "hwm_mb": hwm,
            "segments": segments, "disk_mb": dir_size_mb(path),
            "sparse_entries": entries / max(sampled, 1)}


def make_queries(data: Dataset, count: int, subjects: int, seed: int) -> dict[str, Any]:
    """Random subject, random unit query vector, exact top-10 over the subject's memories."""
    from gateway.memory.edge_index import point_number

    rng = np.random.default_rng(seed + 1)
    order = np.argsort(data.subjects, kind="stable")
    bounds = np.searchsorted(data.subjects[order], np.arange(subjects + 1))
    p = zipf_probabilities()
    qs = rng.integers(0, subjects, count)
    dense = rng.standard_normal((count, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    texts, exact_memory_ids, exact_point_ids, exact_cosines, owned = [], [], [], [], []
    for j, s in enumerate(qs.tolist()):
        members = order[bounds[s]:bounds[s + 1]]
        owned.append(len(members))
        sims = data.vectors[members] @ dense[j]
        best = np.argsort(-sims, kind="stable")[:TOP_K]
        top = members[best]
        exact_cosines.append([round(float(c), 6) for c in sims[best]])
        exact_memory_ids.append([memory_name(int(i)) for i in top])
        exact_point_ids.append([str(point_number(PROJECT, memory_name(int(i)))) for i in top])
        # Two words: one from one of the subject's own memories (so BM25 finds something),
        # one drawn from the whole vocabulary with the corpus' Zipf weights.
        own = data.texts[int(rng.choice(members))].split() if len(members) else []
        first = own[int(rng.integers(0, len(own)))] if own else data.vocabulary[0]
        second = data.vocabulary[int(rng.choice(VOCABULARY, p=p))]
        texts.append(f"{first} {second}")
    return {"subjects": [subject_name(s) for s in qs.tolist()], "texts": texts, "dense": dense,
            "exact_memory_ids": exact_memory_ids, "exact_point_ids": exact_point_ids, "exact_cosines": exact_cosines,
            "mean_subject_size": float(np.mean(owned))}


def worker_build(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.memory.lexical import Lexicon

    workdir = Path(args.workdir)
    n = args.size
    t0 = time.perf_counter()
    data = make_dataset(n, args.subjects, args.seed, Lexicon())
    words = [len(t.split()) for t in data.texts[:10000]]
    log(f"    generated {n:,} memories ({time.perf_counter() - t0:.1f} s, not timed; "
        f"{np.mean(words):.1f} words each), RSS {rss_mb()[0]:,.0f} MiB")
    queries = make_queries(data, args.queries + args.warmup, args.subjects, args.seed)
    np.save(workdir / "queries_dense.npy", queries.pop("dense"))
    (workdir / "queries.json").write_text(json.dumps(queries))
    gc.collect()
    result: dict[str, Any] = {"mean_words": float(np.mean(words)), "mean_subject_size": queries["mean_subject_size"]}
    result["dense"] = asyncio.run(insert_all(workdir / "dense", data, args.batch, True, "dense+BM25"))
    d = result["dense"]
    log(f"    dense+BM25 insert: {d['rate']:,.0f} memories/s ({d['seconds']:.1f} s: BM25+IndexedMemory "
        f"{d['encode_seconds']:.1f} s, adapter {d['adapter_seconds']:.1f} s, Edge update {d['engine_seconds']:.1f} s), "
        f"close {d['close_seconds']:.1f} s, RSS {d['rss_before_mb']:,.0f} -> {d['rss_after_mb']:,.0f} MiB, "
        f"{d['segments']} segment(s), {d['disk_mb']:,.0f} MiB on disk")
    # The same memories with memory.vectors.lexical: plain (BM25 of each text alone): what the
    # default's lexical features (neighbours' words, word pairs) cost an insert. Not searched.
    result["plain"] = asyncio.run(insert_all(workdir / "plain", data, args.batch, True, "dense+plain BM25",
                                             lexical="plain"))
    shutil.rmtree(workdir / "plain")
    d = result["plain"]
    log(f"    dense+plain BM25 insert (memory.vectors.lexical: plain): {d['rate']:,.0f} memories/s "
        f"({d['seconds']:.1f} s: "
        f"BM25+IndexedMemory {d['encode_seconds']:.1f} s, adapter {d['adapter_seconds']:.1f} s, "
        f"Edge update {d['engine_seconds']:.1f} s)")
    if args.http:
        del data.vectors
        gc.collect()
        data.vectors = np.zeros((0, DIM), dtype=np.float32)
        result["lexical"] = asyncio.run(insert_all(workdir / "lexical", data, args.batch, False, "BM25-only"))
        d = result["lexical"]
        log(f"    BM25-only insert (HTTP gateway's index): {d['rate']:,.0f} memories/s ({d['seconds']:.1f} s), "
            f"{d['disk_mb']:,.0f} MiB on disk")
    return result


# -- worker: search --------------------------------------------------------------------------


class FixedEmbedder:
    """The Embedder protocol with no model: ``embed`` returns the vector set for the next query."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.next: list[float] = []

    def key_for(self, headers: Any) -> str | None:
        return None

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        return [self.next for _ in texts]


@dataclass
class Pass:
    key: str
    label: str
    run: Callable[[int], Awaitable[list[str]]]  # query number -> returned ids
    ids: str | None  # "memory" or "point": compared with the exact top-10 (dense-only passes)


async def time_pass(p: Pass, warmup: int, total: int, exact: dict[str, list[list[str]]],
                    timer: TimedShard) -> dict[str, Any]:
    for j in range(warmup):
        await p.run(j)
    latencies, found, recalls = [], [], []
    meter = LoadMeter()
    timer.query_seconds = 0.0
    for j in range(warmup, total):
        t0 = time.perf_counter_ns()
        ids = await p.run(j)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        found.append(len(ids))
        if p.ids:
            expected = exact[p.ids][j]
            if expected:
                recalls.append(len(set(ids) & set(expected)) / len(expected))
    result = percentiles(latencies)
    result["other_load_pct"] = meter.other_pct()
    # The engine's share: time inside EdgeShard.query (the rest is the adapter's and Memories' Python).
    result["engine_mean"] = timer.query_seconds * 1000 / len(latencies)
    result["hits"] = float(np.mean(found))
    if recalls:
        result["recall"] = float(np.mean(recalls))
    return result


async def search_passes(args: argparse.Namespace, index: Any, queries: dict[str, Any],
                        dense: np.ndarray) -> dict[str, Any]:
    from qdrant_edge import FieldCondition, Filter, MatchValue, Query, QueryRequest

    from gateway.config import MemoryConfig, StorageConfig, SqliteConfig
    from gateway.memory.edge_index import EdgeIndex
    from gateway.memory.lexical import Lexicon
    from gateway.memory.memories import Memories
    from gateway.memory import vector_index
    from gateway.memory.vector_index import DENSE, IndexQuery, own_key
    from gateway.store import open_sqlite_store

    assert isinstance(index, EdgeIndex)
    lexicon = Lexicon()
    store = open_sqlite_store(StorageConfig(sqlite=SqliteConfig(path=str(Path(args.workdir) / "empty.db"))), None)
    embedder = FixedEmbedder(DIM)
    memories = Memories(store, index, MemoryConfig(), embedder)
    memories_lexical = Memories(store, index, MemoryConfig(), None)
    # Dense-only: a query text with no indexable terms gives an empty sparse vector, so the
    # index searches the dense vectors alone (vector_index.search_legs: no BM25 legs; with one
    # leg EdgeIndex.search sends a plain filtered nearest-neighbour query, no fusion).
    dense_only_text = ""
    empty_sparse = memories._ranking.query_vector(dense_only_text, ())
    if empty_sparse.indices:
        raise BenchError("the dense-only query text has BM25 terms")
    legs = getattr(vector_index, "search_legs", None)
    if legs is not None:
        names = [name for name, _ in legs(IndexQuery("s", empty_sparse, [0.0] * DIM), True)]
        if names != [DENSE]:
            raise BenchError(f"a dense-only query searches {names}, not the dense vectors alone")
    for text in queries["texts"][:50]:
        if not lexicon.query_vector(text).indices:
            raise BenchError(f"hybrid query text {text!r} has no BM25 terms")
    subjects = queries["subjects"]
    texts = queries["texts"]
    lists = dense.tolist()
    # The hybrid queries' sparse vectors as Memories.search builds them (no conversation context).
    sparse = [memories._ranking.query_vector(t, ()) for t in texts]
    timer = TimedShard(index._shard)
    index._shard = timer
    shard = timer

    async def raw(j: int) -> list[str]:
        request = QueryRequest(limit=TOP_K, query=Query.Nearest(lists[j], using=DENSE),
                               filter=Filter(must=[FieldCondition("access",
                                                                  match=MatchValue(own_key(PROJECT, subjects[j])))]),
                               with_payload=False)
        return [str(point.id) for point in shard.query(request)]

    async def adapter_dense(j: int) -> list[str]:
        hits = await index.search(PROJECT, IndexQuery(subjects[j], empty_sparse, lists[j], limit=TOP_K))
        return [h.memory_id for h in hits]

    async def adapter_hybrid(j: int) -> list[str]:
        hits = await index.search(PROJECT, IndexQuery(subjects[j], sparse[j], lists[j], limit=TOP_K))
        return [h.memory_id for h in hits]

    async def memories_dense(j: int) -> list[str]:
        embedder.next = lists[j]
        return [h.memory_id for h in await memories.search(PROJECT, subjects[j], dense_only_text, limit=TOP_K)]

    async def memories_hybrid(j: int) -> list[str]:
        embedder.next = lists[j]
        return [h.memory_id for h in await memories.search(PROJECT, subjects[j], texts[j], limit=TOP_K)]

    async def memories_bm25(j: int) -> list[str]:
        return [h.memory_id for h in await memories_lexical.search(PROJECT, subjects[j], texts[j], limit=TOP_K)]

    passes = [
        Pass("raw", "Qdrant Edge alone: shard.query, dense, one subject key", raw, "point"),
        Pass("adapter_dense", "EdgeIndex.search, dense-only", adapter_dense, "memory"),
        Pass("adapter_hybrid", "EdgeIndex.search, hybrid (BM25 + dense, RRF)", adapter_hybrid, None),
        Pass("memories_dense", "Memories.search, dense-only (q = \"\")", memories_dense, "memory_scored"),
        Pass("memories_hybrid", "Memories.search, hybrid (2-word q + dense)", memories_hybrid, None),
        Pass("memories_bm25", "Memories.search, BM25-only (no embedder)", memories_bm25, None),
    ]
    # Memories.search drops hits scoring below min_score (0 here); a dense-only hit's score is its
    # cosine, so its exact answer is the exact top-10 without the negative cosines.
    scored = [[m for m, c in zip(ids, cosines) if c >= 0.0]
              for ids, cosines in zip(queries["exact_memory_ids"], queries["exact_cosines"])]
    exact = {"memory": queries["exact_memory_ids"], "point": queries["exact_point_ids"], "memory_scored": scored}
    results: dict[str, Any] = {}
    # Warm the index first: one hybrid adapter search per subject (every leg, payloads, vectors).
    # Right after opening (or optimizing) an index, the first search of a subject reads pages
    # nothing has touched yet and is several times slower; that is reported, not mixed into the rows.
    cold = []
    for s in range(args.subjects):
        j = s % len(lists)
        t0 = time.perf_counter_ns()
        await index.search(PROJECT, IndexQuery(subject_name(s), sparse[j], lists[j], limit=TOP_K))
        cold.append((time.perf_counter_ns() - t0) / 1e6)
    results["cold"] = percentiles(cold)
    log(f"      first search of each subject (cold, EdgeIndex.search hybrid): p50 {results['cold']['p50']:.3f} ms, "
        f"p99 {results['cold']['p99']:.3f} ms")
    total = args.warmup + args.queries
    for p in passes:
        attempts = []
        for attempt in range(args.retries + 1):
            wait_quiet(args.noise_limit, 10.0 if attempt else 3.0)
            r = await time_pass(p, args.warmup, total, exact, timer)
            attempts.append(r)
            recall = f", recall@10 {r['recall']:.4f}" if "recall" in r else ""
            log(f"      {p.label:<55} p50 {r['p50']:6.3f} ms  p99 {r['p99']:6.3f} ms  mean {r['mean']:6.3f} ms "
                f"(in shard.query {r['engine_mean']:.3f})  {r['hits']:.1f} hits{recall}  "
                f"other load {r['other_load_pct']:.0f}%")
            if r["other_load_pct"] <= args.noise_limit:
                break
        r = min(attempts, key=lambda a: a["other_load_pct"])
        r["label"] = p.label
        r["attempts"] = len(attempts)
        results[p.key] = r
    index._shard = timer.inner
    await store.close()
    return results


async def worker_search_async(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.memory.edge_index import EdgeIndex

    workdir = Path(args.workdir)
    queries = json.loads((workdir / "queries.json").read_text())
    dense = np.load(workdir / "queries_dense.npy")
    rss_start = rss_mb()[0]
    t0 = time.perf_counter()
    index = EdgeIndex(str(workdir / "dense"), DIM)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()[0]
    info = index._shard.info()
    log(f"    opened the index in {open_s:.2f} s: {info.points_count:,} points, {info.segments_count} segment(s); "
        f"RSS {rss_start:,.0f} MiB before, {rss_open:,.0f} MiB after")
    result: dict[str, Any] = {"open_seconds": open_s, "rss_start_mb": rss_start, "rss_open_mb": rss_open,
                              "segments": info.segments_count}
    log("    searches, not optimized (as the gateway runs):")
    result["plain"] = await search_passes(args, index, queries, dense)
    result["rss_searched_mb"] = rss_mb()[0]
    if args.optimize:
        log("    optimize() (builds HNSW, merges segments)...")
        t0 = time.perf_counter()
        index.optimize()
        result["optimize_seconds"] = time.perf_counter() - t0
        info = index._shard.info()
        result["optimized_segments"] = info.segments_count
        result["rss_optimized_mb"] = rss_mb()[0]
        log(f"    optimize() took {result['optimize_seconds']:.1f} s: {info.segments_count} segment(s), "
            f"RSS {result['rss_optimized_mb']:,.0f} MiB; searches, optimized:")
        result["optimized"] = await search_passes(args, index, queries, dense)
        result["rss_optimized_searched_mb"] = rss_mb()[0]
    result["hwm_mb"] = rss_mb()[1]
    await index.close()
    return result


def worker_main(args: argparse.Namespace) -> int:
    if args.worker == "build":
        result = worker_build(args)
    else:
        result = asyncio.run(worker_search_async(args))
    (Path(args.workdir) / f"{args.worker}.json").write_text(json.dumps(result))
    return 0


# -- HTTP gateway ----------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self) -> int:
        assert self.popen is not None
        return self.popen.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


RUNNING: list[Child] = []


def run_worker(kind: str, size: int, workdir: Path, args: argparse.Namespace, optimize: bool) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--size", str(size),
            "--workdir", str(workdir), "--queries", str(args.queries), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--subjects", str(args.subjects), "--seed", str(args.seed),
            "--noise-limit", str(args.noise_limit), "--retries", str(args.retries)]
    if optimize:
        argv.append("--optimize")
    if size in args.http_sizes:
        argv.append("--http")
    # Output goes straight to our terminal (progress lines); the result comes back as a file.
    child = Child(f"{kind} worker", argv, workdir / f"{kind}.log")
    child.popen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    RUNNING.append(child)
    try:
        code = child.wait()
    finally:
        child.stop()
        RUNNING.remove(child)
    if code != 0:
        raise BenchError(f"the {kind} worker for {size:,} memories exited with {code}")
    return json.loads((workdir / f"{kind}.json").read_text())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gateway_config(workdir: Path, port: int) -> Path:
    config = {
        "server": {"host": HOST, "port": port, "log_level": "warning", "access_log": False},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(workdir / "gateway.db")}},
        "projects": [{"id": PROJECT, "keys": [{"key": GATEWAY_KEY, "scopes": ["*"]}]}],
        "defaults": {"learn": False},
        "memory": {"vectors": {"backend": "edge", "edge": {"path": str(workdir / "lexical")}},
                   "embedder": {"provider": "none"}},
    }
    path = workdir / "bench.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def http_get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"x-mnexium-key": GATEWAY_KEY})
    response = conn.getresponse()
    return response.status, response.read()


def measure_http(size: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    queries = json.loads((workdir / "queries.json").read_text())
    port = free_port()
    config = gateway_config(workdir, port)
    cli = Path(sys.executable).parent / "mnx-gateway"
    argv = [str(cli), "serve", "--config", str(config)] if cli.exists() else \
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    child = Child("gateway", argv, workdir / "gateway.log")
    started = time.perf_counter()
    child.start(env)
    RUNNING.append(child)
    try:
        deadline = time.monotonic() + 300
        while True:
            if not child.alive():
                raise BenchError(f"the gateway exited during start-up:\n{child.log_tail()}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                status, _ = http_get(conn, "/health")
                conn.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the gateway did not answer /health within 300 s:\n{child.log_tail()}")
            time.sleep(0.1)
        startup = time.perf_counter() - started
        assert child.popen is not None
        pid = child.popen.pid
        rss_ready = rss_mb(pid)[0]
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.connect()
        subjects, texts = queries["subjects"], queries["texts"]

        def path_for(j: int) -> str:
            return "/api/v1/memories/search?" + urllib.parse.urlencode(
                {"subject_id": subjects[j], "q": texts[j], "limit": TOP_K})

        status, body = http_get(conn, path_for(0))
        answer = json.loads(body)
        if status != 200 or answer.get("engine") != "bm25" or not answer.get("count"):
            raise BenchError(f"the gateway's search answered {status}: {body[:300]!r}")
        attempts = []
        for attempt in range(args.retries + 1):
            wait_quiet(args.noise_limit, 10.0 if attempt else 3.0)
            # A fresh connection: the gateway closes one left idle longer than its keep-alive.
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            conn.connect()
            for j in range(args.warmup):
                http_get(conn, path_for(j))
            latencies, counts = [], []
            meter = LoadMeter(["self", pid])
            cpu0 = cpu_seconds(pid)
            for j in range(args.warmup, args.warmup + args.queries):
                path = path_for(j)
                t0 = time.perf_counter_ns()
                status, body = http_get(conn, path)
                latencies.append((time.perf_counter_ns() - t0) / 1e6)
                if status != 200:
                    raise BenchError(f"search answered {status}: {body[:300]!r}")
                counts.append(json.loads(body)["count"])
            cpu = cpu_seconds(pid) - cpu0
            r = percentiles(latencies)
            r.update(hits=float(np.mean(counts)), cpu_ms_per_req=cpu * 1000 / len(latencies),
                     other_load_pct=meter.other_pct())
            attempts.append(r)
            log(f"      GET /api/v1/memories/search  p50 {r['p50']:6.3f} ms  p99 {r['p99']:6.3f} ms  "
                f"mean {r['mean']:6.3f} ms  {r['hits']:.1f} hits  gateway CPU {r['cpu_ms_per_req']:.3f} ms/req  "
                f"other load {r['other_load_pct']:.0f}%")
            if r["other_load_pct"] <= args.noise_limit:
                break
        conn.close()
        result = min(attempts, key=lambda a: a["other_load_pct"])
        result.update(attempts=len(attempts), startup_seconds=startup, rss_ready_mb=rss_ready,
                      rss_after_mb=rss_mb(pid)[0])
        return result
    finally:
        child.stop()
        RUNNING.remove(child)
        if child.popen is not None and child.popen.returncode not in (0, -signal.SIGTERM):
            log(f"    (gateway exited with {child.popen.returncode}; log tail:)\n{child.log_tail(10)}")


# -- report ----------------------------------------------------------------------------------


def fmt_size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def ratio_line(label: str, value: float, target: float, unit: str, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value < target
    ratio = value / target
    sign = "≥" if higher_is_better else "<"
    if unit == "":
        shown, goal = f"{value:.4f}", f"{target:g}"
    elif unit == "/s":
        shown, goal = f"{value:,.0f}/s", f"{target:,.0f}/s"
    else:
        shown, goal = f"{value:.3f} {unit}", f"{target:g} {unit}"
    return (f"- {label}: **{shown}** (target {sign} {goal}: {'met' if met else 'missed'}; "
            f"{ratio:.2f}x the target)")


SEARCH_ROWS = ["raw", "adapter_dense", "adapter_hybrid", "memories_dense", "memories_hybrid", "memories_bm25"]


def render(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> str:
    sizes = sorted(results)
    out = []
    out.append(f"**Insert** (`EdgeIndex.upsert`, batches of {args.batch:,}; BM25 document vectors included; "
               "time split into "
               "building the BM25 vectors + `IndexedMemory` objects, the adapter's own Python (point ids, payload, "
               "`Point` objects) and Qdrant Edge's `update`):\n")
    out.append("| memories | insert/s (dense + BM25) | BM25 + IndexedMemory s | adapter s | Edge update s | "
               "insert/s (BM25 only) | RSS added by insert MiB | RSS after open MiB | RSS after searches MiB | "
               "on disk MiB | other load |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        b, s = results[n]["build"], results[n]["search"]
        d = b["dense"]
        lex_rate = f"{b['lexical']['rate']:,.0f}" if b.get("lexical") else "—"
        out.append(f"| {fmt_size(n)} | {d['rate']:,.0f} | {d['encode_seconds']:.1f} | {d['adapter_seconds']:.1f} | "
                   f"{d['engine_seconds']:.1f} | {lex_rate} | "
                   f"{d['rss_after_mb'] - d['rss_before_mb']:,.0f} | {s['rss_open_mb']:,.0f} | "
                   f"{s['rss_searched_mb']:,.0f} | {d['disk_mb']:,.0f} | {d['other_load_pct']:.0f}% |")
    out.append("")
    out.append("The same memories with `memory.vectors.lexical: plain` (Qdrant's BM25 of each text alone: no "
               "neighbours' words, no word pairs, as bench/locomo's plain BM25 baseline ranks, which misses that "
               "benchmark's target), same dense vectors:\n")
    out.append("| memories | insert/s (dense + plain BM25) | BM25 + IndexedMemory s | adapter s | Edge update s | "
               "sparse entries per memory (plain / contextual) |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        b = results[n]["build"]
        if "plain" not in b:
            continue
        d = b["plain"]
        out.append(f"| {fmt_size(n)} | {d['rate']:,.0f} | {d['encode_seconds']:.1f} | {d['adapter_seconds']:.1f} | "
                   f"{d['engine_seconds']:.1f} | {d['sparse_entries']:.1f} / {b['dense']['sparse_entries']:.1f} |")
    out.append("")
    out.append(f"**Search** (top-{TOP_K}, a random subject per query, concurrency 1, {args.queries:,} timed queries "
               f"after {args.warmup:,} warm-up ones per row; recall@10 against exact numpy cosine over the "
               f"subject's memories, on the dense-only rows):\n")
    out.append("| memories | index | path | p50 ms | p99 ms | mean ms | of which shard.query ms | hits | recall@10 "
               "| other load |")
    out.append("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        s = results[n]["search"]
        for state, label in (("plain", "not optimized"), ("optimized", "optimized")):
            if state not in s:
                continue
            for key in SEARCH_ROWS:
                r = s[state][key]
                recall = f"{r['recall']:.4f}" if "recall" in r else "—"
                out.append(f"| {fmt_size(n)} | {label} | {r['label']} | {r['p50']:.3f} | {r['p99']:.3f} | "
                           f"{r['mean']:.3f} | {r['engine_mean']:.3f} | {r['hits']:.1f} | {recall} | "
                           f"{r['other_load_pct']:.0f}% |")
    out.append("")
    out.append("Before the rows, one hybrid `EdgeIndex.search` per subject warms the index; those first searches "
               "(cold pages right after opening or optimizing) took: " + "; ".join(
                   f"{fmt_size(n)} {label}: p50 {results[n]['search'][state]['cold']['p50']:.3f} ms, "
                   f"p99 {results[n]['search'][state]['cold']['p99']:.3f} ms"
                   for n in sizes for state, label in (("plain", "not optimized"), ("optimized", "optimized"))
                   if state in results[n]["search"]) + ".")
    out.append("")
    http_sizes = [n for n in sizes if "http" in results[n]]
    if http_sizes:
        out.append("**HTTP** (`GET /api/v1/memories/search?subject_id=…&q=<2 words>&limit=10`, lexical-only gateway, "
                   "one keep-alive connection, sequential; latency as the client sees it):\n")
        out.append("| memories | p50 ms | p99 ms | mean ms | hits | gateway CPU ms/req | start-up s | "
                   "gateway RSS MiB (ready → after) | other load |")
        out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in http_sizes:
            h = results[n]["http"]
            out.append(f"| {fmt_size(n)} | {h['p50']:.3f} | {h['p99']:.3f} | {h['mean']:.3f} | {h['hits']:.1f} | "
                       f"{h['cpu_ms_per_req']:.3f} | {h['startup_seconds']:.1f} | "
                       f"{h['rss_ready_mb']:,.0f} → {h['rss_after_mb']:,.0f} | {h['other_load_pct']:.0f}% |")
        out.append("")
    optimized = [n for n in sizes if "optimize_seconds" in results[n]["search"]]
    if optimized:
        out.append("`optimize()` (HNSW build and segment merge, blocking): " + "; ".join(
            f"{fmt_size(n)}: {results[n]['search']['optimize_seconds']:.0f} s, "
            f"{results[n]['search']['segments']} → {results[n]['search']['optimized_segments']} segment(s), "
            f"RSS {results[n]['search']['rss_optimized_searched_mb']:,.0f} MiB after its searches"
            for n in optimized) + ".")
        out.append("")
    top = max(sizes)
    s = results[top]["search"]["plain"]
    out.append(f"Against the targets (at {fmt_size(top)}, index not optimized, as the gateway runs):\n")
    out.append(ratio_line("insert throughput, dense + BM25 (contextual, the default)",
                          results[top]["build"]["dense"]["rate"], TARGET_INSERT_RATE, "/s", True))
    if "plain" in results[top]["build"]:
        out.append(ratio_line("insert throughput, dense + BM25 (memory.vectors.lexical: plain)",
                              results[top]["build"]["plain"]["rate"], TARGET_INSERT_RATE, "/s", True))
    for key in ("memories_hybrid", "memories_dense"):
        out.append(ratio_line(f"{s[key]['label']} p50", s[key]["p50"], TARGET_SEARCH_P50, "ms", False))
        out.append(ratio_line(f"{s[key]['label']} p99", s[key]["p99"], TARGET_SEARCH_P99, "ms", False))
    out.append(ratio_line("recall@10, Memories.search dense-only", s["memories_dense"]["recall"], TARGET_RECALL, "",
                          True))
    if "http" in results[top]:
        out.append(ratio_line("HTTP search p50 (BM25)", results[top]["http"]["p50"], TARGET_HTTP_P50, "ms", False))
    if "optimized" in results[top]["search"]:
        o = results[top]["search"]["optimized"]
        out.append(f"- after optimize(): Memories.search hybrid p50 {o['memories_hybrid']['p50']:.3f} ms / p99 "
                   f"{o['memories_hybrid']['p99']:.3f} ms, dense-only recall@10 {o['memories_dense']['recall']:.4f}")
    r = s["raw"]
    out.append(f"- reference, Qdrant Edge alone measured by others at 1M: p50 0.57 ms, p99 1.57 ms, 23k inserts/s, "
               f"2.1 GB RSS; here at {fmt_size(top)}: p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms")
    return "\n".join(out)


def machine_description() -> str:
    from importlib.metadata import version
    return f"{results.machine_description()}, qdrant-edge-py {version('qdrant-edge-py')}"


def code_version() -> str:
    """The commit the gateway code was measured at, and whether gateway/ or plugins/ had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "plugins"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "gateway code version unknown"
    return f"gateway at commit {head}" + (" with uncommitted changes in gateway/ or plugins/" if dirty else "")


def write_readme(section: str) -> None:
    results.write_readme(README, RESULTS_START, RESULTS_END, section)


# -- main ------------------------------------------------------------------------------------


def _terminate(signum: int, frame: Any) -> None:
    print(f"\nstopped by signal {signum}; stopping the child processes", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def sizes_arg(value: str) -> list[int]:
    if value.strip().lower() in ("", "none"):
        return []
    return [int(v.replace("_", "")) for v in value.split(",") if v.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes_arg, default=[10_000, 100_000, 1_000_000],
                        help="comma-separated memory counts (default 10000,100000,1000000)")
    parser.add_argument("--queries", type=int, default=2000, help="timed queries per search row (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed queries before each row (default 200)")
    parser.add_argument("--batch", type=int, default=2000, help="memories per EdgeIndex.upsert call (default 2000)")
    parser.add_argument("--subjects", type=int, default=1000, help="subjects the memories are spread over")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--optimize-sizes", type=sizes_arg, default=None,
                        help="sizes to measure again after EdgeIndex.optimize() (default: those up to 100000; "
                             "'none' for no optimize)")
    parser.add_argument("--http-sizes", type=sizes_arg, default=None,
                        help="sizes to measure over HTTP (default: all)")
    parser.add_argument("--noise-limit", type=float, default=25.0,
                        help="%% of one core that other work on the machine may take during a search row before it "
                             "is measured again (default 25)")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed search row (default 2)")
    parser.add_argument("--no-readme", action="store_true", help="print only; leave README.md alone")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (indexes, logs)")
    parser.add_argument("--worker", choices=("build", "search"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--optimize", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--http", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds' check that the build and search workers run: 1,000 memories over 20 "
                             "subjects, 100 queries per row, no optimize, no HTTP row, README left alone")
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if args.smoke:
        # No HTTP row: it would start a gateway, the slowest step, and bench/locomo's smoke run
        # already searches through one.
        args.sizes, args.queries, args.warmup, args.batch, args.subjects = [1000], 100, 10, 250, 20
        args.optimize_sizes, args.http_sizes, args.retries, args.no_readme = [], [], 0, True
    if args.optimize_sizes is None:
        args.optimize_sizes = [n for n in args.sizes if n <= 100_000]
    if args.http_sizes is None:
        args.http_sizes = list(args.sizes)
    if not args.sizes or (args.queries < 1000 and not args.smoke) or args.warmup < 0 or args.batch < 1:
        parser.error("need at least one size, --queries >= 1000, --warmup >= 0 and --batch >= 1")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memsearch-"))
    measured: dict[int, dict[str, Any]] = {}
    started = time.monotonic()
    version = code_version()
    ok = False
    try:
        for n in args.sizes:
            workdir = tmp / str(n)
            workdir.mkdir()
            log(f"== {n:,} memories over {args.subjects:,} subjects (work directory {workdir})")
            t0 = time.monotonic()
            measured[n] = {"build": run_worker("build", n, workdir, args, False)}
            measured[n]["search"] = run_worker("search", n, workdir, args, n in args.optimize_sizes)
            if n in args.http_sizes:
                log("    HTTP: lexical-only gateway (mnx-gateway serve) on the pre-built BM25 index")
                h = measure_http(n, workdir, args)
                measured[n]["http"] = h
                log(f"      gateway start-up {h['startup_seconds']:.1f} s, RSS {h['rss_ready_mb']:,.0f} -> "
                    f"{h['rss_after_mb']:,.0f} MiB")
            log(f"   {n:,} done in {time.monotonic() - t0:.0f} s")
            (tmp / "results.json").write_text(json.dumps(measured, indent=1))
            if not args.keep_dir:
                shutil.rmtree(workdir, ignore_errors=True)
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        section = (f"Measured {when} on {machine_description()}; {version}; {args.subjects:,} subjects, "
                   f"{DIM}-d vectors, "
                   f"seed {args.seed}; whole run {(time.monotonic() - started) / 60:.0f} min.\n\n"
                   f"Command (from the repository root):\n\n```\n{results.command_line()}\n```\n\n"
                   f"{render(measured, args)}\n")
        print()
        print(section)
        if not args.no_readme:
            write_readme(section)
            print(f"(written to {README.relative_to(ROOT)})")
        ok = True
        return 0
    except BenchError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for child in list(RUNNING):
            child.stop()
        if ok and not args.keep_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(work directory kept: {tmp})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
