#!/usr/bin/env python3
"""Subject API benchmark: what reading what the gateway knows about a subject costs over HTTP.

A gateway runs as ``python -m gateway serve`` (the embedded default config plus the backend's
storage: SQLite, then Redis). Each case seeds its own subject through the REST API, then one
client sends ``--requests`` GETs of the case's endpoint one at a time on one keep-alive
connection (after ``--warmup`` untimed ones) and times each from sending to the parsed JSON
body: p50, p99 and mean in milliseconds, with the response's size. The client's own cost
(httpx, JSON parsing) is included, so the figures are what an application would see.

Cases (``CASES``; a new endpoint on a subject adds its cases there):

* ``GET /claims/subject/{sid}/truth``, 1,000 claims in 100 slots x 10 versions: the subject's
  truths are 100 claims among 1,000 (each slot superseded nine times, the realistic shape);
* the same endpoint, 1,000 claims in 1,000 distinct slots: every claim is a truth, so the
  answer lists 1,000 slots (the worst case for the size of the answer);
* ``GET /profiles`` (the simple format the SDK reads) of a subject with 20 fields, each set
  50 times by ``PATCH /profiles`` (1,000 writes, 980 older values in the history), and the
  same profile in ``format=full`` with ``include_history=true`` (every older value too).

Claims are posted with ``POST /claims`` in rounds (every slot's first version, then every
slot's second...), as a subject's claims accumulate over time. Target (issue 19): p50 under
2 ms with 1,000 claims per subject.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/subject_api/run.py [--requests 2000] [--warmup 200]
        [--redis-url redis://127.0.0.1:6379/15] [--print-only]

``--smoke`` (what tests/test_bench_smoke.py runs): 50 claims per case, 50 requests, SQLite
only, README left alone. ``--print-only``: print the table, leave the README alone.

Prints a markdown table and writes it into bench/README.md between the subject-api-results markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
RESULTS_START = "<!-- subject-api-results:start -->"
RESULTS_END = "<!-- subject-api-results:end -->"
KEY = "mnx_bench_subject_api_key"
API = "/api/v1"


# -- the cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One timed endpoint on one seeded subject."""

    label: str
    # The path, "{subject}" standing for the case's subject.
    path: str
    # Writes the subject's data through the API (client, subject, size).
    seed: Callable[[httpx.Client, str, int], None]
    # Whether a response body is what the seed should produce (checked once, before timing).
    check: Callable[[dict[str, Any], int], bool]


def post_claims(client: httpx.Client, subject: str, slots: int, versions: int) -> None:
    for version in range(versions):
        for slot in range(slots):
            response = client.post(f"{API}/claims", json={
                "subject_id": subject, "predicate": f"attribute_{slot}", "object_value": f"value {slot}.{version}",
                "confidence": 0.9, "tags": ["bench"]})
            if response.status_code != 201:
                raise RuntimeError(f"POST /claims: {response.status_code} {response.text[:200]}")


def slot_versions(size: int) -> tuple[int, int]:
    """100 slots x 10 versions for 1,000 claims (a tenth of them true), scaled to ``size``."""
    versions = 10 if size >= 100 else 5
    return size // versions, versions


PROFILE_FIELDS = 20


def profile_versions(size: int) -> int:
    """How often each of the 20 fields is set for ``size`` writes: 50 for 1,000 (the 49 older
    values each field keeps then are most of the 50 the gateway keeps per field)."""
    return max(2, size // PROFILE_FIELDS)


def patch_profile(client: httpx.Client, subject: str, size: int) -> None:
    """20 fields (the four built-ins and 16 custom ones), each set ``profile_versions`` times."""
    for version in range(profile_versions(size)):
        updates = [{"field_key": "name", "value": f"Name {version}"},
                   {"field_key": "email", "value": f"user{version}@example.com"},
                   {"field_key": "timezone", "value": ["Europe/Berlin", "Asia/Tokyo"][version % 2]},
                   {"field_key": "language", "value": ["fr", "pt-BR"][version % 2]}]
        updates += [{"field_key": f"custom_{n}", "value": f"value {n}.{version}"}
                    for n in range(PROFILE_FIELDS - len(updates))]
        response = client.patch(f"{API}/profiles", json={"subject_id": subject, "updates": updates})
        if response.status_code != 200:
            raise RuntimeError(f"PATCH /profiles: {response.status_code} {response.text[:200]}")


CASES = [
    # The floor: the same route on a subject with nothing, i.e. HTTP, authentication and routing.
    Case("truth: a subject with no claims (the floor)", "/claims/subject/{subject}/truth",
         lambda client, subject, size: None, lambda body, size: body["slot_count"] == 0),
    Case("truth: slots x 10 versions (100 x 10)", "/claims/subject/{subject}/truth",
         lambda client, subject, size: post_claims(client, subject, *slot_versions(size)),
         lambda body, size: body["slot_count"] == slot_versions(size)[0]),
    Case("truth: a slot per claim (1,000 slots)", "/claims/subject/{subject}/truth",
         lambda client, subject, size: post_claims(client, subject, size, 1),
         lambda body, size: body["slot_count"] == size),
    # Profiles: the claims column counts profile writes here (20 fields x 50 values for 1,000).
    Case("GET /profiles: 20 fields, each set 50 times", "/profiles?subject_id={subject}", patch_profile,
         lambda body, size: len(body["data"]) == PROFILE_FIELDS),
    Case("GET /profiles format=full with the history (980 older values)",
         "/profiles?subject_id={subject}&format=full&include_history=true", patch_profile,
         lambda body, size: len(body["data"]["name"]["history"]) == profile_versions(size) - 1),
]


# -- running a gateway ------------------------------------------------------------------








def storage_for(backend: str, workdir: Path, redis_url: str, prefix: str) -> dict[str, Any]:
    if backend == "redis":
        return {"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix}}
    return {"backend": "sqlite", "sqlite": {"path": str(workdir / "gateway.db")}}


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- measuring --------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def time_case(client: httpx.Client, case: Case, subject: str, size: int, requests: int,
              warmup: int) -> dict[str, Any]:
    path = API + case.path.format(subject=subject)
    first = client.get(path)
    first.raise_for_status()
    if not case.check(first.json(), size):
        raise RuntimeError(f"{case.label}: unexpected answer {first.text[:300]}")
    timings = []
    for i in range(-warmup, requests):
        began = time.perf_counter()
        response = client.get(path)
        response.json()
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"{case.label}: {response.status_code} {response.text[:200]}")
        if i >= 0:
            timings.append(elapsed * 1000)
    return {"p50": statistics.median(timings), "p99": percentile(timings, 0.99), "mean": statistics.fmean(timings),
            "bytes": len(first.content), "requests": requests}


def run_backend(backend: str, size: int, requests: int, warmup: int, redis_url: str) -> list[tuple[Case, dict]]:
    prefix = f"mnxbench:{secrets.token_hex(4)}:"
    with tempfile.TemporaryDirectory(prefix="subject-api-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config = {"server": {"port": port}, "storage": storage_for(backend, workdir, redis_url, prefix),
                  "memory": {"vectors": {"edge": {"path": str(workdir / "index")}}},
                  "projects": [{"id": "bench", "keys": [{"key": KEY}]}]}
        config_path = workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_up(f"http://127.0.0.1:{port}/health")
            measured = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-mnexium-key": KEY},
                              timeout=30) as client:
                subjects = [f"bench-subject-{n}" for n in range(len(CASES))]
                for case, subject in zip(CASES, subjects):
                    case.seed(client, subject, size)
                for case, subject in zip(CASES, subjects):
                    measured.append((case, time_case(client, case, subject, size, requests, warmup)))
            return measured
        finally:
            stop(gateway)
            if backend == "redis":
                drop_prefix(redis_url, prefix)


def table(rows: list[tuple[str, Case, dict[str, Any]]], size: int, smoke: bool) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {when} on {results.machine_description()}, `{results.command_line()}`"
             + (" (smoke: tiny sizes, not results)" if smoke else "") + ":", "",
             "| endpoint | backend | claims per subject | requests | p50 ms | p99 ms | mean ms | response bytes |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for backend, case, figures in rows:
        lines.append(f"| {case.label} | {backend} | {size:,} | {figures['requests']:,} | {figures['p50']:.3f} | "
                     f"{figures['p99']:.3f} | {figures['mean']:.3f} | {figures['bytes']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=1000, help="claims per subject")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--redis-url", default=os.environ.get("MNX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--print-only", action="store_true", help="print the table, leave the README alone")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, SQLite only, README left alone")
    args = parser.parse_args()
    size, requests, warmup = (50, 50, 10) if args.smoke else (args.claims, args.requests, args.warmup)
    backends = ["sqlite"] if args.smoke else ["sqlite", "redis"]
    rows = []
    for backend in backends:
        if backend == "redis" and not redis_answers(args.redis_url):
            print(f"Redis at {args.redis_url} does not answer: the redis rows are skipped", file=sys.stderr)
            continue
        rows += [(backend, case, figures) for case, figures in run_backend(backend, size, requests, warmup,
                                                                             args.redis_url)]
    section = table(rows, size, args.smoke)
    print(section)
    if not (args.smoke or args.print_only):
        results.write_readme(README, RESULTS_START, RESULTS_END, section)


if __name__ == "__main__":
    main()
