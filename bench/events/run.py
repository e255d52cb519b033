#!/usr/bin/env python3
"""Event delivery benchmark: how long a memory event takes from the write to a subscriber.

Gateways run as ``python -m gateway serve`` processes (the embedded default config, plus
the backend's storage). One client process holds both ends, on one asyncio loop:

* a subscriber: ``GET /api/v1/events/memories?subject_id=bench`` (httpx stream), parsing
  frames as they arrive;
* a writer: ``POST /api/v1/memories`` for that subject, one at a time, ``--pace-ms`` apart
  (20 ms by default, so that each event is timed on its own rather than queued behind the
  previous one), texts "Bench note <i> ..." with ``no_supersede``.

Backends: (a) SQLite, one gateway: the writer and the subscriber talk to the same process;
(b) Redis, two gateway processes on one Redis and key prefix: the writer talks to the first,
the subscriber to the second, so every event crosses Redis (stream + pub/sub).

Per event:

* **delivery** = when the subscriber parsed the ``memory.created`` frame (time.time() in the
  client) - when the event was published, read from its id, whose first part is the
  publish time in milliseconds (the gateway's clock, or on Redis the Redis server's, all on
  this machine). The id's milliseconds are truncated, so this overestimates by 0 to 1 ms.
  Target: p50 < 5 ms (issue 19);
* write -> subscriber = frame - when the writer started the POST (time.perf_counter): the
  same plus the write itself (validation, store, index) before the publish;
* the POST's own duration, and frame - POST answer (negative: the event reached the
  subscriber before the writer had its HTTP answer).

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/events/run.py [--events 1000] [--pace-ms 20] [--redis-url redis://127.0.0.1:6379/15]

``--smoke`` (what tests/test_bench_smoke.py runs): 20 events per backend, README left alone;
the Redis row is skipped (and said so) when Redis does not answer.

Prints a markdown table and writes it into bench/README.md between the events-results markers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.processes import free_port, stop, wait_up  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- events-results:start -->"
RESULTS_END = "<!-- events-results:end -->"
KEY = "mnx_bench_key"
SUBJECT = "bench"




def start_gateway(directory: Path, name: str, storage: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {
        "server": {"port": port, "log_level": "warning"},
        "storage": storage,
        "memory": {"vectors": {"edge": {"path": str(directory / f"{name}-index")}}},
        "projects": [{"id": "bench", "keys": [{"key": KEY}]}],
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url + "/health", process)
    except RuntimeError:
        stop(process)
        raise RuntimeError(f"the {name} gateway did not come up") from None
    return process, url




async def measure(writer_url: str, subscriber_url: str, events: int, pace_ms: float,
                  warmup: int) -> dict[str, list[float]]:
    """Per timed event (ms): delivery from the publish, from the write's start, the POST, frame - POST answer."""
    received: dict[int, tuple[float, float]] = {}  # note -> (perf_counter, delivery from the publish)
    connected = asyncio.Event()

    async def subscribe() -> None:
        headers = {"x-mnexium-key": KEY, "Accept": "text/event-stream"}
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async with client.stream("GET", subscriber_url + "/api/v1/events/memories", headers=headers,
                                     params={"subject_id": SUBJECT}) as response:
                response.raise_for_status()
                buffer = ""
                async for text in response.aiter_text():
                    now, wall_ms = time.perf_counter(), time.time() * 1000
                    buffer += text
                    while "\n\n" in buffer:
                        block, buffer = buffer.split("\n\n", 1)
                        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                        if fields.get("event") == "connected":
                            connected.set()
                        elif fields.get("event") == "memory.created":
                            published_ms = int(fields["id"].split("-")[0])
                            note = int(json.loads(fields["data"])["text"].split()[2])
                            received[note] = (now, wall_ms - published_ms)

    reader = asyncio.create_task(subscribe())
    await asyncio.wait_for(connected.wait(), 10)
    sent: dict[int, tuple[float, float]] = {}
    async with httpx.AsyncClient(base_url=writer_url, headers={"x-mnexium-key": KEY}, timeout=30) as client:
        for i in range(warmup + events):
            began = time.perf_counter()
            response = await client.post("/api/v1/memories", json={
                "subject_id": SUBJECT, "text": f"Bench note {i} about an ordinary day", "no_supersede": True})
            answered = time.perf_counter()
            response.raise_for_status()
            sent[i] = (began, answered)
            await asyncio.sleep(pace_ms / 1000)
    deadline = time.perf_counter() + 10
    while len(received) < len(sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    reader.cancel()
    missing = [i for i in sent if i not in received]
    if missing:
        raise RuntimeError(f"{len(missing)} event(s) never reached the subscriber, e.g. {missing[:5]}")
    timed = [i for i in sent if i >= warmup]
    return {"delivery": [received[i][1] for i in timed],
            "from_write": [(received[i][0] - sent[i][0]) * 1000 for i in timed],
            "write": [(sent[i][1] - sent[i][0]) * 1000 for i in timed],
            "after_answer": [(received[i][0] - sent[i][1]) * 1000 for i in timed]}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def run_backend(backend: str, directory: Path, args: argparse.Namespace, warmup: int) -> dict[str, list[float]]:
    processes: list[subprocess.Popen] = []
    prefix = f"mnxbench:{secrets.token_hex(4)}:"
    try:
        if backend == "sqlite":
            process, url = start_gateway(directory, "sqlite", {"backend": "sqlite",
                                                               "sqlite": {"path": str(directory / "events.db")}})
            processes.append(process)
            writer_url = subscriber_url = url
        else:
            storage = {"backend": "redis", "redis": {"url": args.redis_url, "key_prefix": prefix}}
            writer, writer_url = start_gateway(directory, "redis-writer", storage)
            processes.append(writer)
            subscriber, subscriber_url = start_gateway(directory, "redis-subscriber", storage)
            processes.append(subscriber)
        return asyncio.run(measure(writer_url, subscriber_url, args.events, args.pace_ms, warmup))
    finally:
        for process in processes:
            stop(process)
        if backend == "redis":
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)


def table(rows: dict[str, dict[str, list[float]] | None], args: argparse.Namespace) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {stamp} on {results.machine_description()}, `{results.command_line()}`:", "",
             "| backend | events | publish -> subscriber p50 ms (target < 5) | p99 ms "
             "| write start -> subscriber p50 / p99 ms | POST p50 / p99 ms | frame - POST answer p50 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    labels = {"sqlite": "SQLite, one gateway", "redis": "Redis, write on gateway A, subscribe on gateway B"}
    for backend, measured in rows.items():
        if measured is None:
            lines.append(f"| {labels[backend]} | skipped: Redis at {args.redis_url} does not answer | | | | | |")
            continue
        delivery, write, after = measured["delivery"], measured["write"], measured["after_answer"]
        from_write = measured["from_write"]
        lines.append(f"| {labels[backend]} | {len(delivery):,} | **{statistics.median(delivery):.2f}** | "
                     f"{percentile(delivery, 99):.2f} | {statistics.median(from_write):.2f} / "
                     f"{percentile(from_write, 99):.2f} | {statistics.median(write):.2f} / "
                     f"{percentile(write, 99):.2f} | {statistics.median(after):+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="timed events per backend")
    parser.add_argument("--pace-ms", type=float, default=20, help="pause between writes")
    parser.add_argument("--redis-url", default=os.environ.get("MNX_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="20 events per backend, README left alone")
    args = parser.parse_args()
    warmup = 50
    if args.smoke:
        args.events, args.no_readme, warmup = 20, True, 5
    rows: dict[str, dict[str, list[float]] | None] = {}
    with tempfile.TemporaryDirectory(prefix="mnx-events-bench-") as tmp:
        for backend in ("sqlite", "redis"):
            if backend == "redis" and not redis_reachable(args.redis_url):
                if not args.smoke:
                    sys.exit(f"Redis at {args.redis_url} does not answer")
                rows[backend] = None
                continue
            rows[backend] = run_backend(backend, Path(tmp), args, warmup)
    text = table(rows, args)
    print(text)
    if not args.no_readme:
        results.write_readme(README, RESULTS_START, RESULTS_END, text)


if __name__ == "__main__":
    main()
