#!/usr/bin/env python3
"""Dashboard benchmark: the server time of each dashboard page, and the page's weight.

A dashboard page is the REST calls its script makes (gateway/dashboard/dashboard.js): the
subjects page is ``GET /subjects``, a subject's memories page ``GET /memories?subject_id=``, and
so on (``PAGES``). A gateway runs as ``python -m gateway serve`` (SQLite, the embedded Qdrant Edge
index) in front of the fake provider (``python -m tests.fake_upstream``); one subject is given
``--memories`` memories through ``POST /memories`` (distinct made-up notes, and a share of
"favorite X" facts stated twice, so the subject has superseded memories too), a chat of 20 turns,
a profile field, 20 state keys, a prompt and a memory policy. Then one client, on one keep-alive connection,
loads each page ``--requests`` times (after ``--warmup`` untimed loads): a load sends the page's
calls one after another (the script sends some at once: this is the slower sum) and is timed
from the first request sent to the last JSON body parsed. p50 and p99 in milliseconds, per page.

The page weight is the bytes of the page, its script and its stylesheet as served (and gzipped,
for what a compressing proxy would send). Targets (issue 25): each page under 20 ms p50 with
10,000 memories in the subject; the page under 300 KB.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/dashboard/run.py [--memories 10000] [--requests 200] [--warmup 20] [--print-only]

``--smoke`` (what tests/test_bench_smoke.py runs): 300 memories, 20 loads per page, README left
alone. Prints a markdown table and writes it into bench/README.md between the dashboard-results markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.processes import free_port, json_answer, stop, wait_up  # noqa: E402
from bench.subject_api.run import percentile  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- dashboard-results:start -->"
RESULTS_END = "<!-- dashboard-results:end -->"
KEY = "mnx_live_dashboard_bench"
SUBJECT = "bench-subject"
CHAT = "bench-chat"
TARGET_MS = 20.0
WEIGHT_LIMIT = 300 * 1024
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vo", "ni", "pel", "dra", "qui", "zo", "fen", "bar", "til"]
# One "favorite" fact stated twice (the second supersedes the first) per this many memories.
SUPERSEDED_EVERY = 20
# Agent state keys of the subject (the state tab lists them).
STATE_KEYS = 20


@dataclass(frozen=True)
class Page:
    label: str
    # The page's REST calls: (path, query), relative to /api/v1.
    calls: list[tuple[str, dict[str, Any]]]
    # Headers every call of the page sends besides the key (the state routes take the subject in one).
    headers: dict[str, str] = field(default_factory=dict)


PAGES = [
    Page("sign-in (keys/self)", [("/keys/self", {})]),
    Page("subjects", [("/subjects", {"limit": 100})]),
    Page("subject: memories", [("/memories", {"subject_id": SUBJECT, "limit": 50})]),
    # The latest superseded memories and the memories that replaced them, in one call.
    Page("subject: superseded timeline", [("/memories/superseded", {
        "subject_id": SUBJECT, "limit": 50, "include_successors": "true"})]),
    Page("subject: profile", [("/profiles", {"subject_id": SUBJECT, "format": "full"})]),
    Page("subject: claims", [(f"/claims/subject/{SUBJECT}/truth", {})]),
    Page("subject: records", [("/records/schemas", {})]),
    # The subject's state keys (without values; a value is read when its key is clicked).
    Page("subject: state", [("/state", {"limit": 100})], headers={"x-subject-id": SUBJECT}),
    Page("subject: chats", [("/chat/history/list", {"subject_id": SUBJECT, "limit": 100})]),
    Page("chat", [("/chat/history/read", {"chat_id": CHAT, "subject_id": SUBJECT, "limit": 1000}),
                  ("/memories/recalls", {"chat_id": CHAT, "limit": 200}),
                  ("/audit/requests", {"chat_id": CHAT, "limit": 100})]),
    Page("memory search", [("/memories/search", {"subject_id": SUBJECT, "q": "favorite kalo",
                                                 "min_score": 0.3, "limit": 50, "explain": "true"})]),
    Page("prompts", [("/prompts", {}), ("/prompts/resolve", {"subject_id": SUBJECT, "combined": "true"})]),
    Page("memory policies", [("/memory/policies", {}),
                             ("/memory/policies/resolve", {"subject_id": SUBJECT, "combined": "true"})]),
    Page("jobs", [("/jobs", {"limit": 1000})]),
]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def memory_texts(count: int, seed: int = 25) -> list[str]:
    """Distinct notes, and every SUPERSEDED_EVERY-th pair a favorite stated twice."""
    rng = random.Random(seed)
    texts = []
    while len(texts) < count:
        n = len(texts)
        if n % SUPERSEDED_EVERY == 0 and n + 1 < count:
            thing = f"{word(rng)}{n}"
            texts += [f"User's favorite {thing} is {word(rng)}", f"User's favorite {thing} is {word(rng)}"]
        else:
            texts.append(f"User noted {n}: {' '.join(word(rng) for _ in range(6))}")
    return texts[:count]


def seed(client: httpx.Client, memories: int) -> None:
    texts = memory_texts(memories)
    started = time.monotonic()

    def post(chunk: list[str]) -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60) as own:
            previous: dict[str, str] = {}  # a favorite's first statement's id, by what the favorite is of
            for text in chunk:
                body = {"subject_id": SUBJECT, "text": text}
                topic = text.rsplit(" is ", 1)[0] if text.startswith("User's favorite") else None
                if topic in previous:  # named explicitly: whatever versioning decides, it is superseded
                    body["supersedes"] = previous[topic]
                created = json_answer(own.post("/api/v1/memories", json=body), 200, 201)
                if topic is not None:
                    previous[topic] = created["id"]

    # Four clients, each a contiguous run of the texts whose length is a multiple of SUPERSEDED_EVERY,
    # so both statements of a favorite go through one client, in order.
    workers = 4
    size = -(-len(texts) // (workers * SUPERSEDED_EVERY)) * SUPERSEDED_EVERY
    chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, chunks))
    print(f"seeded {len(texts):,} memories in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for turn in range(20):
        json_answer(client.post("/v1/chat/completions", headers={"x-openai-key": "sk-fake"}, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"turn {turn}: tell me more"}],
            "mnx": {"subject_id": SUBJECT, "chat_id": CHAT, "learn": False, "history": False}}))
    json_answer(client.patch("/api/v1/profiles", json={"subject_id": SUBJECT, "updates": [
        {"field_key": "name", "value": "Bench"}]}))
    json_answer(client.post("/api/v1/prompts", json={"name": "bench", "prompt_text": "Be brief."}), 200, 201)
    for n in range(STATE_KEYS):
        json_answer(client.put(f"/api/v1/state/bench/{n:03d}", headers={"x-subject-id": SUBJECT},
                               json={"value": {"step": n, "note": "x" * 200}}))
    json_answer(client.post("/api/v1/memory/policies", json={"name": "bench", "policy_text": "Keep facts."}), 201)
    superseded = json_answer(client.get("/api/v1/memories/superseded", params={
        "subject_id": SUBJECT, "limit": 50, "include_successors": "true"}))
    counted = json_answer(client.get("/api/v1/subjects", params={"q": SUBJECT}))["data"][0]["memories"]
    print(f"subject: {counted:,} active memories; the timeline shows {superseded['count']} superseded and "
          f"{len(superseded['successors'])} successors", file=sys.stderr)


def time_page(client: httpx.Client, page: Page, requests: int, warmup: int) -> dict[str, Any]:
    calls = page.calls
    timings = []
    for i in range(-warmup, requests):
        started = time.perf_counter()
        for path, query in calls:
            json_answer(client.get("/api/v1" + path, params=query, headers=page.headers))
        if i >= 0:
            timings.append((time.perf_counter() - started) * 1000)
    return {"calls": len(calls), "p50": statistics.median(timings), "p99": percentile(timings, 0.99)}


def page_weight(client: httpx.Client) -> dict[str, int]:
    weights = {}
    for path in ("/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
        weights[path] = len(response.content)
        weights[path + " gzip"] = len(gzip.compress(response.content))
    return weights


def run(memories: int, requests: int, warmup: int) -> tuple[list[tuple[Page, dict[str, Any]]], dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        workdir = Path(tmp)
        port, upstream_port = free_port(), free_port()
        config = {"server": {"port": port}, "storage": {"backend": "sqlite", "sqlite": {"path": str(workdir / "g.db")}},
                  "memory": {"vectors": {"edge": {"path": str(workdir / "index")}}},
                  "providers": {"openai": {"api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-fake"}},
                  "defaults": {"learn": False},
                  "projects": [{"id": "bench", "keys": [{"key": KEY}]}]}
        config_path = workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
        upstream = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port)],
                                    cwd=ROOT, **quiet)  # type: ignore[call-overload]
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                                   cwd=ROOT, **quiet)  # type: ignore[call-overload]
        try:
            wait_up(f"http://127.0.0.1:{port}/health", gateway)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-mnexium-key": KEY},
                              timeout=60) as client:
                seed(client, memories)
                measured = [(page, time_page(client, page, requests, warmup)) for page in PAGES]
                return measured, page_weight(client)
        finally:
            stop(gateway)
            stop(upstream)


def table(rows: list[tuple[Page, dict[str, Any]]], weights: dict[str, int], memories: int, requests: int,
          smoke: bool) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {when} on {results.machine_description()}, `{results.command_line()}`"
             + (" (smoke: tiny sizes, not results)" if smoke else "") + ":", "",
             "| page | memories in the subject | REST calls | loads | p50 ms | p99 ms | under 20 ms p50 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for page, figures in rows:
        lines.append(f"| {page.label} | {memories:,} | {figures['calls']} | {requests:,} | {figures['p50']:.2f} | "
                     f"{figures['p99']:.2f} | {'yes' if figures['p50'] < TARGET_MS else 'NO'} |")
    plain = sum(v for k, v in weights.items() if not k.endswith(" gzip"))
    zipped = sum(v for k, v in weights.items() if k.endswith(" gzip"))
    parts = ", ".join(f"`{k}` {v:,}" for k, v in weights.items() if not k.endswith(" gzip"))
    lines += ["", f"Page weight: {plain:,} bytes ({parts}); {zipped:,} gzipped; "
                  f"{'under' if plain < WEIGHT_LIMIT else 'OVER'} the 300 KB limit."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10_000, help="memories in the subject")
    parser.add_argument("--requests", type=int, default=200, help="timed loads per page")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--print-only", action="store_true", help="print the table, leave the README alone")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, README left alone")
    args = parser.parse_args()
    memories, requests, warmup = (300, 20, 5) if args.smoke else (args.memories, args.requests, args.warmup)
    rows, weights = run(memories, requests, warmup)
    section = table(rows, weights, memories, requests, args.smoke)
    print(section)
    if not (args.smoke or args.print_only):
        results.write_readme(README, RESULTS_START, RESULTS_END, section)


if __name__ == "__main__":
    main()
