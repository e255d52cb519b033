"""What the usage-limit check costs per request (gateway/usage_limits.py), on each backend.

Times ``UsageLimiter.admit`` as a REST call to /memories makes it with every limit set, on the
project and on the key (four counters: requests and memory actions, twice) and with a proxy
route's token check too (six), against a SQLite file and a local Redis; and counts the Redis
commands one check sends (INFO commandstats before and after): one EVALSHA, one round trip.

    .venv/bin/python bench/usage_limits/run.py [--redis redis://127.0.0.1:6379/15] [--n 5000] [--smoke]

``--smoke`` (tests/test_bench_smoke.py): 200 checks a row, only proving the benchmark runs.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as redis_asyncio

from gateway.auth import Principal
from gateway.config import parse_config
from gateway.store.redis import RedisDocumentStore
from gateway.store.sqlite import SqliteDocumentStore
from gateway.usage_limits import UsageLimiter

_HIGH = 10 ** 12  # never reached: every check is admitted, as almost all are in production
CONFIG = parse_config({"projects": [{"id": "bench", "keys": [{"name": "main", "key": "mnx_live_bench"}], "limits": {
    "requests_per_minute": _HIGH, "memory_actions_per_month": _HIGH, "tokens_per_day": _HIGH,
    "keys": {"main": {"requests_per_minute": _HIGH, "memory_actions_per_month": _HIGH,
                      "tokens_per_day": _HIGH}}}}]})
PRINCIPAL = Principal("bench", "main", frozenset({"*"}))


async def timed(limiter: UsageLimiter, n: int, *, proxy: bool) -> list[float]:
    path = "/chat/completions" if proxy else "/memories"
    for _ in range(200):  # warm up (connections, statement cache, script load)
        await limiter.admit(PRINCIPAL, path, proxy=proxy)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await limiter.admit(PRINCIPAL, path, proxy=proxy)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"| {name} | {statistics.median(ordered):.3f} | {ordered[int(len(ordered) * 0.99)]:.3f} |")


async def redis_commands(url: str, limiter: UsageLimiter) -> dict[str, int]:
    client: Any = redis_asyncio.from_url(url)
    try:
        before = await client.info("commandstats")
        await limiter.admit(PRINCIPAL, "/memories", proxy=False)
        after = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = {name: stats["calls"] - before.get(name, {}).get("calls", 0) for name, stats in after.items()}
    # The INFO call itself is counted too; what is left is the check's.
    return {name.removeprefix("cmdstat_"): count for name, count in calls.items()
            if count and name != "cmdstat_info"}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="200 checks a row: proves it runs, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.n = 200
    print("| backend, check | p50 ms | p99 ms |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SqliteDocumentStore(str(Path(directory) / "bench.db"))
        limiter = UsageLimiter(sqlite, CONFIG.projects)
        print(row("SQLite, REST /memories (4 counters)", await timed(limiter, args.n, proxy=False)))
        print(row("SQLite, proxy turn (6 counters)", await timed(limiter, args.n, proxy=True)))
        await sqlite.close()
    prefix = f"mnxbench:{secrets.token_hex(4)}:"
    store = RedisDocumentStore(args.redis, prefix)
    limiter = UsageLimiter(store, CONFIG.projects)
    print(row("Redis, REST /memories (4 counters)", await timed(limiter, args.n, proxy=False)))
    print(row("Redis, proxy turn (6 counters)", await timed(limiter, args.n, proxy=True)))
    print("Redis commands per check:", await redis_commands(args.redis, limiter))
    await store.close()
    client: Any = redis_asyncio.from_url(args.redis)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
