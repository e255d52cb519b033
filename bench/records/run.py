#!/usr/bin/env python3
"""Records benchmark (issue 20): insert, query, search and chat recall at 100,000 records of one type.

A gateway runs as ``python -m gateway serve`` with a config this script writes (storage: SQLite,
then Redis under a random key prefix deleted afterwards; the memories' embedded Qdrant Edge index
in a temporary directory; BM25 only, no dense embedder; the OpenAI provider pointed at the test
suite's fake, ``python -m tests.fake_upstream``, which answers ``echo: <last user message>``).
For each backend, in this order:

1. **Seeding.** The type ``order`` is defined (``title`` string, ``note`` text, ``status`` enum
   of 5 values, ``customer`` string, ``amount`` number, ``placed`` datetime), then ``--records``
   records (100,000) are posted through ``POST /records/order/batch``, 500 per call, on one
   connection: the first "records/s" row. The data is deterministic (fixed seed): each of
   ``records / 10`` customers (10,000) holds exactly 10 records; owners are spread uniformly over
   1,000 subjects (about 100 records each, private, as an owned record is by default); amounts
   uniform in 1-1,000 (cents); ``placed`` uniform over 2025; titles are an adjective, a material
   and a product from real-word lists (40 x 30 x 60); notes are 12 words: a product and 11 of
   2,000 made-up words (``kalimo``, ``dovesu``...) drawn with a Zipf distribution, so BM25 has
   common and rare terms to weigh. The returned record ids are kept, so that every answer below
   can be checked against what was stored.
2. **Queries**, each ``--requests`` (500) timed requests after ``--warmup`` (50) untimed, one at a
   time on one keep-alive connection, each from sending to the parsed JSON (the client's own
   httpx and JSON parsing included, as in bench/subject_api), the value varied request by request
   (200 different ones, cycled):
   * the floor: equality on a customer no record has: the route, authentication, the plan and one
     index lookup, nothing to read or send (what the rows below add is their records);
   * equality on an indexed field: ``{"where": {"customer": "cust-01234"}}``: its 10 records;
   * a half-open range walked in order: ``{"where": {"placed": {"$gte": <t>}}, "order_by":
     "placed", "limit": 20}``: the 20 records placed first from ``t`` on;
   * a bounded range: ``{"where": {"amount": {"$gte": a, "$lt": a + w}}, "limit": 100}``, ``w``
     such that about 25 records match (0.25 at 100,000 records).
   Every answer is compared with what the seeded data says (the record ids, or the ``placed``
   values in order): a wrong answer stops the run.
3. **Search** (``POST /records/order/search``, ``limit`` 10), timed the same way: queries of 2-3
   words taken from one seeded record (a title word and its one or two rarest note words, as someone
   looking for that record would ask). Each must return records, the first holding at least half of
   the query's words; how often the record the words came from is among the 10 hits is reported.
4. **Recall in a chat turn.** Non-streamed ``POST /v1/chat/completions`` as one subject (the owner
   of about 100 records), history, log, learning, memory recall and the system prompt off, the
   user asking about one of that subject's records by its title ("Any news about my blue walnut
   lamp?", 20 such questions, cycled); turns with ``mnx.records = {"recall": true, "tables":
   ["order"]}`` alternate request by request with the same turns without ``mnx.records``, so that
   drift on a shared machine hits both alike. Before timing, each question is sent once with
   recall and once without: the fake provider prints what it received (``--show-requests``, into
   its log) and the run checks that with recall the forwarded system message holds records, all
   of them the subject's own, and that without it holds none. Reported: p50/p99 of both and the
   p50 difference (target: under 1 ms).
5. **Inserts under load**, last (so that the query and search rows run at exactly ``--records``
   records): wrk with bench/overhead/post.lua posting the same body over and over (each call
   creates records: the body carries no id): single records ``POST /records/order`` at c=1 and
   c=8, and batches of 100 ``POST /records/order/batch`` at c=1 and c=8; ``--warmup-seconds``
   (2 s) unmeasured, then ``--duration`` (10 s). Their records have a customer, amounts, dates and
   words of their own, so they match none of the queries above. Reported: records/s, wrk's p50/p99
   per call, and the gateway process's CPU per record (from /proc). Target: 2,000 records/s.

Usage (from the repository root, with the venv that has the gateway installed, and wrk):

    .venv/bin/python bench/records/run.py [--records 100000] [--requests 500] [--warmup 50]
        [--duration 10] [--backends sqlite,redis] [--redis-url redis://127.0.0.1:6379/15] [--print-only]

``--smoke`` (what tests/test_bench_smoke.py runs): 600 records, 30 requests per row, inserts as
sequential requests from this process instead of wrk, SQLite only, README left alone.
``--print-only``: print the table, leave the README alone. Otherwise the table goes into
bench/README.md between the records-results markers.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.overhead.run import LUA, group_cpu_seconds  # noqa: E402
from bench.processes import BenchError, free_port, json_answer, stop, wait_up  # noqa: E402
from bench.subject_api.run import drop_prefix, percentile, redis_answers, storage_for  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- records-results:start -->"
RESULTS_END = "<!-- records-results:end -->"
KEY = "mnx_bench_records_key"
PROVIDER_KEY = "sk-fake"
API = "/api/v1"
TYPE = "order"
SEED = 20
SEED_BATCH = 500  # records per POST /records/{type}/batch while seeding (the route's maximum)
LOAD_BATCH = 100  # records per batch call under wrk
VARIANTS = 200  # distinct values each timed row cycles through
RECALL_QUESTIONS = 20
# The fake provider prints what the gateway forwarded; the records recall stage's system message starts so
# (gateway/pipeline/records.py PREAMBLE).
RECORDS_PREAMBLE = "Records from the application's database"

# -- the data ---------------------------------------------------------------------------------

STATUSES = ("new", "paid", "shipped", "delivered", "returned")
ADJECTIVES = ("blue", "red", "green", "amber", "black", "white", "small", "large", "round", "square", "vintage",
              "modern", "rustic", "polished", "matte", "bright", "quiet", "heavy", "light", "folding", "compact",
              "deluxe", "classic", "slim", "tall", "wide", "soft", "sturdy", "portable", "handmade", "striped",
              "golden", "silver", "crimson", "ivory", "olive", "teal", "coral", "navy", "scarlet")
MATERIALS = ("walnut", "oak", "pine", "bamboo", "copper", "brass", "steel", "iron", "glass", "ceramic", "marble",
             "granite", "leather", "linen", "cotton", "wool", "silk", "velvet", "canvas", "rattan", "wicker",
             "porcelain", "clay", "concrete", "cork", "felt", "jute", "maple", "cherry", "birch")
PRODUCTS = ("lamp", "lantern", "chair", "table", "desk", "shelf", "cabinet", "mirror", "vase", "bowl", "plate",
            "mug", "kettle", "teapot", "clock", "rug", "cushion", "blanket", "curtain", "basket", "stool", "bench",
            "bed", "wardrobe", "dresser", "sofa", "ottoman", "planter", "candle", "frame", "tray", "jar", "bottle",
            "pitcher", "skillet", "wok", "knife", "spoon", "ladle", "grinder", "blender", "toaster", "radio",
            "speaker", "headphones", "keyboard", "monitor", "backpack", "wallet", "belt", "scarf", "glove",
            "umbrella", "tent", "hammock", "bicycle", "helmet", "skateboard", "guitar", "easel")
NOTE_WORDS = 2000
NOTE_LENGTH = 12
YEAR_START = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp())
YEAR_SECONDS = 365 * 86400


def made_up_words(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct pronounceable words no dictionary (or stopword list) holds."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < count:
        words["".join(rng.choice(syllables) for _ in range(rng.choice((2, 3, 3))))] = None
    return list(words)


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Dataset:
    """The seeded records, as sent (``records``) and as the gateway named them (``ids``, same order)."""

    records: list[dict[str, Any]]
    customers: int
    owners: int
    ids: list[str] = field(default_factory=list)


def make_dataset(size: int, owners: int) -> Dataset:
    rng = random.Random(SEED)
    vocabulary = made_up_words(NOTE_WORDS, rng)
    zipf = [1 / (rank + 1) for rank in range(NOTE_WORDS)]
    customers = max(1, size // 10)
    # Every customer exactly 10 times (a shuffled deal), so an equality query has exactly 10 hits.
    dealt = [i % customers for i in range(size)]
    rng.shuffle(dealt)
    records = []
    for position in range(size):
        product = rng.choice(PRODUCTS)
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {product}"
        words = rng.choices(vocabulary, weights=zipf, k=NOTE_LENGTH - 1)
        words.insert(rng.randrange(len(words) + 1), rng.choice(PRODUCTS))
        note = " ".join(words).capitalize() + "."
        records.append({"owner_id": f"subject-{rng.randrange(owners):04d}", "data": {
            "title": title, "note": note, "status": rng.choice(STATUSES),
            "customer": f"cust-{dealt[position]:05d}", "amount": round(rng.uniform(1, 1000), 2),
            "placed": iso(YEAR_START + rng.randrange(YEAR_SECONDS))}})
    return Dataset(records, customers, owners)


SCHEMA = {"type_name": TYPE, "display_name": "Order", "description": "A shop's orders (bench/records)",
          "fields": {"title": {"type": "string", "required": True}, "note": "text",
                     "status": {"type": "enum", "values": list(STATUSES)}, "customer": "string",
                     "amount": "number", "placed": "datetime"}}
# What the load rows insert: matched by none of the timed queries (another customer, a negative amount,
# a date before the seeded year, words nobody searches).
LOAD_RECORD = {"owner_id": "load-subject", "data": {
    "title": "loadtest widget", "note": "Inserted under load by the records benchmark.", "status": "new",
    "customer": "load-customer", "amount": -1, "placed": "2020-01-01T00:00:00Z"}}


# -- the processes --------------------------------------------------------------------------


@contextmanager
def fake_provider(workdir: Path) -> Iterator[tuple[int, Path]]:
    """The test suite's fake provider, printing what it receives into a log: (port, log path)."""
    port = free_port()
    log_path = workdir / "provider.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", "--port", str(port),
                                    "--show-requests"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/", process)
        yield port, log_path
    finally:
        stop(process)


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen
    log_path: Path

    def cpu_seconds(self) -> float:
        return group_cpu_seconds({self.process.pid})[self.process.pid]

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


@contextmanager
def gateway(backend: str, workdir: Path, provider_port: int, redis_url: str) -> Iterator[Gateway]:
    prefix = f"mnxbench:records:{secrets.token_hex(4)}:"
    port = free_port()
    config = {"server": {"port": port, "log_level": "warning", "access_log": False},
              "storage": storage_for(backend, workdir, redis_url, prefix),
              "memory": {"vectors": {"edge": {"path": str(workdir / f"index-{backend}")}}},
              "projects": [{"id": "bench", "keys": [{"key": KEY, "scopes": ["*"]}]}],
              "providers": {"openai": {"api_base": f"http://127.0.0.1:{provider_port}/v1", "api_key": PROVIDER_KEY}},
              "defaults": {"learn": False, "log": False, "history": False, "system_prompt": False}}
    config_path = workdir / f"gateway-{backend}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"gateway-{backend}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    running = Gateway(port, process, log_path)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", process)
        yield running
    except BaseException:
        print(f"gateway log ({log_path}):\n{running.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop(process)
        if backend == "redis":
            drop_prefix(redis_url, prefix)


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    backend: str
    records: int | str  # records of the type when measured
    requests: int
    p50: float | None = None  # ms
    p99: float | None = None
    per_second: float | None = None  # records/s
    cpu_us_per_record: float | None = None
    target: str = ""
    note: str = ""


def time_posts(client: httpx.Client, path: str, bodies: list[Any], check: Callable[[int, Any], None],
               requests: int, warmup: int) -> list[float]:
    """POST ``bodies`` in turn (cycled), one at a time; each answer checked by ``check(body index, json)``
    outside the timed span; the timed ones' milliseconds, from sending to the parsed JSON."""
    encoded = [json.dumps(body).encode() for body in bodies]
    headers = {"content-type": "application/json"}
    timings = []
    for i in range(-warmup, requests):
        n = i % len(bodies)
        began = time.perf_counter()
        response = client.post(path, content=encoded[n], headers=headers)
        parsed = response.json()
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise BenchError(f"POST {path}: HTTP {response.status_code} {response.text[:300]}")
        check(n, parsed)
        if i >= 0:
            timings.append(elapsed * 1000)
    return timings


def seed(client: httpx.Client, dataset: Dataset) -> float:
    """Define the type and post every record in batches; the seconds the records took."""
    json_answer(client.post(f"{API}/records/schemas", json=SCHEMA), 201)
    started = time.perf_counter()
    for start in range(0, len(dataset.records), SEED_BATCH):
        chunk = dataset.records[start:start + SEED_BATCH]
        made = json_answer(client.post(f"{API}/records/{TYPE}/batch", json={"records": chunk}), 201)["records"]
        if len(made) != len(chunk) or any(m["data"]["customer"] != c["data"]["customer"]
                                          for m, c in zip(made, chunk)):
            raise BenchError(f"batch at {start}: the answer does not list the records sent, in order")
        dataset.ids += [m["record_id"] for m in made]
    return time.perf_counter() - started


def query_rows(client: httpx.Client, dataset: Dataset, backend: str, requests: int, warmup: int) -> list[Row]:
    rng = random.Random(SEED + 1)
    size = len(dataset.records)
    path = f"{API}/records/{TYPE}/query"
    rows = []

    # The floor: the same route and plan on a customer nobody is: HTTP, authentication, parsing and one index
    # lookup, no record to read or send.
    def check_empty(n: int, body: Any) -> None:
        if body["records"]:
            raise BenchError(f"customer nobody-{n}: {len(body['records'])} records, expected none")

    timings = time_posts(client, path, [{"where": {"customer": f"nobody-{n}"}} for n in range(VARIANTS)],
                         check_empty, requests, warmup)
    rows.append(timed_row('the floor: equality matching no record: `{"customer": "nobody-n"}`', backend, size,
                          timings, ""))

    # Equality on an indexed string field: each customer's 10 records.
    customers = [f"cust-{n:05d}" for n in rng.sample(range(dataset.customers), min(VARIANTS, dataset.customers))]
    expected_ids = {}
    for i, record in enumerate(dataset.records):
        expected_ids.setdefault(record["data"]["customer"], set()).add(dataset.ids[i])

    def check_customer(n: int, body: Any) -> None:
        got = {r["record_id"] for r in body["records"]}
        if got != expected_ids[customers[n]]:
            raise BenchError(f"customer {customers[n]}: {len(got)} records, expected "
                             f"{len(expected_ids[customers[n]])} (or other ids)")

    timings = time_posts(client, path, [{"where": {"customer": c}} for c in customers], check_customer,
                         requests, warmup)
    rows.append(timed_row('equality on an indexed string: `{"customer": c}`, 10 hits', backend, size, timings,
                          "p50 < 2 ms"))

    # A half-open range walked in the field's order, first page of 20.
    placed = sorted(r["data"]["placed"] for r in dataset.records)
    starts = [iso(YEAR_START + rng.randrange(YEAR_SECONDS * 9 // 10)) for _ in range(VARIANTS)]
    firsts = [placed[bisect.bisect_left(placed, start):][:20] for start in starts]

    def check_placed(n: int, body: Any) -> None:
        got = [r["data"]["placed"] for r in body["records"]]
        if got != firsts[n]:
            raise BenchError(f"placed >= {starts[n]} by placed: got {got[:3]}..., expected {firsts[n][:3]}...")

    timings = time_posts(client, path, [{"where": {"placed": {"$gte": s}}, "order_by": "placed", "limit": 20}
                                        for s in starts], check_placed, requests, warmup)
    rows.append(timed_row('range in order: `{"placed": {"$gte": t}}`, order_by placed, limit 20', backend, size,
                          timings, "p50 < 2 ms"))

    # A bounded numeric range, about 25 hits.
    width = round(999 * 25 / size, 2)
    lows = [round(rng.uniform(1, 1000 - width), 2) for _ in range(VARIANTS)]
    highs = [round(low + width, 2) for low in lows]
    by_amount = sorted((r["data"]["amount"], dataset.ids[i]) for i, r in enumerate(dataset.records))
    amounts = [amount for amount, _ in by_amount]
    in_range = [{record_id for _, record_id in by_amount[bisect.bisect_left(amounts, low):
                                                         bisect.bisect_left(amounts, high)]}
                for low, high in zip(lows, highs)]
    if max(len(ids) for ids in in_range) > 100:
        raise BenchError("an amount range holds more than 100 records: the check needs all of them on one page")

    def check_amount(n: int, body: Any) -> None:
        got = {r["record_id"] for r in body["records"]}
        if got != in_range[n]:
            raise BenchError(f"amount in [{lows[n]}, {highs[n]}): {len(got)} records, expected {len(in_range[n])}")

    timings = time_posts(client, path, [{"where": {"amount": {"$gte": low, "$lt": high}}, "limit": 100}
                                        for low, high in zip(lows, highs)], check_amount, requests, warmup)
    mean_hits = statistics.fmean(len(ids) for ids in in_range)
    rows.append(timed_row(f'bounded range: `{{"amount": {{"$gte": a, "$lt": a + {width:g}}}}}`, '
                          f'{mean_hits:.0f} hits on average', backend, size, timings, "p50 < 2 ms"))
    return rows


def search_row(client: httpx.Client, dataset: Dataset, backend: str, requests: int, warmup: int) -> Row:
    rng = random.Random(SEED + 2)
    sources = rng.sample(range(len(dataset.records)), min(VARIANTS, len(dataset.records)))
    # How many notes hold each word: a query takes a title word and the record's one or two rarest note
    # words, as someone looking for that record would (the commonest made-up words are in most notes).
    frequency: dict[str, int] = {}
    for record in dataset.records:
        for word in set(record["data"]["note"].rstrip(".").lower().split()):
            frequency[word] = frequency.get(word, 0) + 1
    queries = []
    for index in sources:
        data = dataset.records[index]["data"]
        note_words = sorted({w for w in data["note"].rstrip(".").lower().split() if w not in PRODUCTS},
                            key=lambda word: (frequency[word], word))
        words = [rng.choice(data["title"].split()), *note_words[:rng.choice((1, 2))]]
        queries.append(" ".join(words))
    found_source: dict[int, bool] = {}  # by query sent: was the record its words came from among the hits

    def check(n: int, body: Any) -> None:
        hits = body["records"]
        if not hits or hits[0]["similarity"] < 0.5 or any(h["type_name"] != TYPE for h in hits):
            raise BenchError(f"search {queries[n]!r}: no record holding half of its words first: {hits[:1]}")
        found_source[n] = found_source.get(n, False) or dataset.ids[sources[n]] in {h["record_id"] for h in hits}

    timings = time_posts(client, f"{API}/records/{TYPE}/search", [{"query": q, "limit": 10} for q in queries],
                         check, requests, warmup)
    share = sum(found_source.values()) / len(found_source)
    return timed_row("search: 2-3 words of one record's title and note, limit 10", backend, len(dataset.records),
                     timings, "p50 < 3 ms",
                     note=f"the record the words came from among the 10 hits for {share:.0%} of the queries")


def recall_rows(client: httpx.Client, dataset: Dataset, backend: str, requests: int, warmup: int,
                provider_log: Path) -> list[Row]:
    """Chat turns with records recall and without, alternating; checked through the fake provider's log."""
    counts: dict[str, int] = {}
    for record in dataset.records:
        counts[record["owner_id"]] = counts.get(record["owner_id"], 0) + 1
    subject = max(sorted(counts), key=lambda owner: counts[owner])
    own = [i for i, r in enumerate(dataset.records) if r["owner_id"] == subject]
    own_ids = {dataset.ids[i] for i in own}
    questions = [f"Any news about my {dataset.records[i]['data']['title']}?" for i in own[:RECALL_QUESTIONS]]
    mnx = {"subject_id": subject, "history": False, "log": False, "learn": False, "recall": False,
           "system_prompt": False}
    with_records = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}],
                     "mnx": {**mnx, "records": {"recall": True, "tables": [TYPE]}}} for q in questions]
    without = [{**body, "mnx": mnx} for body in with_records]

    def forwarded_records(body: dict[str, Any]) -> list[str]:
        """Send one turn; the record ids in the system message the provider received."""
        before = provider_log.read_text(errors="replace").count("--> ")
        reply = json_answer(client.post("/v1/chat/completions", json=body))
        if reply["choices"][0]["message"]["content"] != "echo: " + body["messages"][0]["content"]:
            raise BenchError(f"chat turn: not the provider's echo: {reply}")
        deadline = time.monotonic() + 5
        while True:  # the fake prints the request once it has answered it
            blocks = provider_log.read_text(errors="replace").split("--> ")
            if len(blocks) - 1 > before:
                break
            if time.monotonic() > deadline:
                raise BenchError("the fake provider logged no request for the check turn")
            time.sleep(0.02)
        block = blocks[-1]
        if RECORDS_PREAMBLE not in block:
            return []
        return [json.loads(line)["record_id"] for line in block.splitlines() if line.startswith("{")]

    for with_body, without_body in zip(with_records, without):
        recalled = forwarded_records(with_body)
        if not recalled or not set(recalled) <= own_ids:
            raise BenchError(f"recall for {with_body['messages'][0]['content']!r}: forwarded records {recalled} "
                             f"(expected some, all owned by {subject})")
        if forwarded_records(without_body):
            raise BenchError("a turn without mnx.records forwarded records")

    pair = [body for two in zip(with_records, without) for body in two]  # with, without, with, without...
    timings = time_posts(client, "/v1/chat/completions", pair, lambda n, body: None, 2 * requests, 2 * warmup)
    on, off = timings[0::2], timings[1::2]
    added = statistics.median(on) - statistics.median(off)
    size = len(dataset.records)
    return [timed_row("chat turn without records (fake provider)", backend, size, off, ""),
            timed_row(f'chat turn with `mnx.records` recall (subject owning {len(own)} records)', backend, size,
                      on, ""),
            Row("records recall adds (p50 with - p50 without)", backend, size, requests, p50=added,
                target=f"< 1 ms: {'met' if added < 1 else 'MISSED'}")]


def timed_row(measure: str, backend: str, size: int, timings: list[float], target: str, note: str = "") -> Row:
    p50 = statistics.median(timings)
    verdict = ""
    if target:
        limit = float(re.search(r"< ([\d.]+) ms", target).group(1))  # type: ignore[union-attr]
        verdict = f": {'met' if p50 < limit else 'MISSED'}"
    return Row(measure, backend, size, len(timings), p50=p50, p99=percentile(timings, 0.99),
               target=target + verdict, note=note)


# -- inserts under load ---------------------------------------------------------------------

_WRK_RESULT = re.compile(r"BENCH_RESULT (.*)")


def wrk(url: str, body_file: Path, connections: int, seconds: float, tag: str) -> dict[str, int]:
    """One wrk run with bench/overhead/post.lua posting the body in ``body_file`` over and over."""
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
            "-s", str(LUA), url, "--", tag, str(connections // threads), f"@{body_file}",
            "content-type: application/json", f"x-mnexium-key: {KEY}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    match = _WRK_RESULT.search(done.stdout)
    if done.returncode != 0 or not match:
        raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    result = {k: int(float(v)) for k, v in (pair.split("=") for pair in match.group(1).split())}
    errors = {k: v for k, v in result.items() if k.startswith("err_") and v}
    if errors or not result["requests"]:
        raise BenchError(f"wrk {url}: {result['requests']} requests, errors {errors} (err_status: non-2xx)")
    return result


def count_records(client: httpx.Client) -> int:
    return int(json_answer(client.get(f"{API}/records/{TYPE}", params={"limit": 1}))["total"])


def insert_rows(client: httpx.Client, gw: Gateway, backend: str, workdir: Path, args: argparse.Namespace,
                smoke: bool) -> list[Row]:
    rows = []
    single = (f"{API}/records/{TYPE}", LOAD_RECORD, 1)
    batch = (f"{API}/records/{TYPE}/batch", {"records": [LOAD_RECORD] * LOAD_BATCH}, LOAD_BATCH)
    cells = [(single, 1), (batch, 1)] if smoke else [(single, 1), (single, 8), (batch, 1), (batch, 8)]
    for (path, body, per_call), connections in cells:
        # One call by hand first: it must create its records.
        made = json_answer(client.post(path, json=body), 201)
        if len(made.get("records", [made])) != per_call:
            raise BenchError(f"POST {path} did not create {per_call} records: {str(made)[:300]}")
        before_count = count_records(client)
        cpu_before = gw.cpu_seconds()
        if smoke:  # sequential requests from this process: no wrk needed
            calls = 3 if per_call > 1 else 30
            timings = []
            started = time.perf_counter()
            for _ in range(calls):
                began = time.perf_counter()
                json_answer(client.post(path, json=body), 201)
                timings.append((time.perf_counter() - began) * 1000)
            seconds = time.perf_counter() - started
            p50, p99, connections = statistics.median(timings), percentile(timings, 0.99), 1
        else:
            body_file = workdir / "load-body.json"
            body_file.write_text(json.dumps(body, separators=(",", ":")) + "\n")
            url = f"http://127.0.0.1:{gw.port}{path}"
            wrk(url, body_file, connections, args.warmup_seconds, f"warm-{connections}")
            before_count = count_records(client)
            cpu_before = gw.cpu_seconds()
            result = wrk(url, body_file, connections, args.duration, f"load-{connections}")
            calls, seconds = result["requests"], result["duration_us"] / 1e6
            p50, p99 = result["p50_us"] / 1000, result["p99_us"] / 1000
        cpu = gw.cpu_seconds() - cpu_before
        stored = count_records(client) - before_count
        if stored < calls * per_call:  # wrk counts answered calls; calls cut at the end may still add a few
            raise BenchError(f"{calls} calls of {per_call} records answered, yet the type grew by {stored}")
        rate = calls * per_call / seconds
        label = "one record per call, `POST /records/order`" if per_call == 1 else \
            f"batches of {per_call}, `POST /records/order/batch`"
        rows.append(Row(f"insert under load: {label}, {connections} connection{'s' if connections > 1 else ''}",
                        backend, before_count, calls, p50=p50, p99=p99, per_second=rate,
                        cpu_us_per_record=cpu * 1e6 / stored,
                        target=f"≥ 2,000 records/s: {'met' if rate >= 2000 else 'MISSED'}"))
    return rows


# -- one backend ----------------------------------------------------------------------------


def run_backend(backend: str, dataset: Dataset, args: argparse.Namespace, workdir: Path, provider_port: int,
                provider_log: Path) -> list[Row]:
    dataset.ids = []
    with gateway(backend, workdir, provider_port, args.redis_url) as gw, \
            httpx.Client(base_url=f"http://127.0.0.1:{gw.port}",
                         headers={"x-mnexium-key": KEY}, timeout=60) as client:
        cpu_before = gw.cpu_seconds()
        seconds = seed(client, dataset)
        size = len(dataset.records)
        cpu = gw.cpu_seconds() - cpu_before
        if count_records(client) != size:
            raise BenchError(f"seeded {size} records, the type holds {count_records(client)}")
        rows = [Row(f"seeding: batches of {SEED_BATCH}, `POST /records/order/batch`, 1 connection", backend,
                    f"0 → {size:,}", -(-size // SEED_BATCH), per_second=size / seconds,
                    cpu_us_per_record=cpu * 1e6 / size,
                    target=f"≥ 2,000 records/s: {'met' if size / seconds >= 2000 else 'MISSED'}",
                    note=f"{size:,} records in {seconds:.1f} s")]
        print(f"  {backend}: seeded {size:,} records in {seconds:.1f} s ({size / seconds:,.0f}/s)", flush=True)
        rows += query_rows(client, dataset, backend, args.requests, args.warmup)
        rows.append(search_row(client, dataset, backend, args.requests, args.warmup))
        rows += recall_rows(client, dataset, backend, args.requests, args.warmup, provider_log)
        for row in rows[1:]:
            print(f"  {backend}: {row.measure}: p50 {row.p50:.3f} ms", flush=True)
        rows += insert_rows(client, gw, backend, workdir, args, args.smoke)
        return rows


def table(rows: list[Row], args: argparse.Namespace, size: int) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    loader = "sequential requests from this process" if args.smoke else \
        f"wrk ({args.warmup_seconds:g} s warm-up, {args.duration:g} s measured)"
    lines = [f"Run {when} on {results.machine_description()}, `{results.command_line()}`"
             + (" (smoke: tiny sizes, not results)" if args.smoke else "")
             + f"; {size:,} seeded records of one type; timed requests one at a time on one keep-alive connection "
               f"(send to parsed JSON) after {args.warmup} untimed; inserts under load by {loader}:", "",
             "| measure | backend | records of the type | requests | records/s | p50 ms | p99 ms "
             "| gateway CPU µs/record | target |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]

    def cell(value: float | None, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    for row in rows:
        target = row.target + (f" ({row.note})" if row.note else "")
        records = row.records if isinstance(row.records, str) else f"{row.records:,}"
        lines.append(f"| {row.measure} | {row.backend} | {records} | {row.requests:,} | "
                     f"{cell(row.per_second, ',.0f')} | {cell(row.p50, '.3f')} | {cell(row.p99, '.3f')} | "
                     f"{cell(row.cpu_us_per_record, ',.0f')} | {target} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records of the type seeded")
    parser.add_argument("--owners", type=int, default=1000, help="subjects the records are spread over")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per query/search/recall row")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each of those")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds wrk measures each insert row")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="seconds of wrk before each measurement")
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--redis-url", default=os.environ.get("MNX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--print-only", action="store_true", help="print the table, leave the README alone")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, SQLite only, no wrk, README left alone")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.owners, args.requests, args.warmup, args.backends = 600, 20, 30, 5, "sqlite"
    elif shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    dataset = make_dataset(args.records, args.owners)
    workdir = Path(tempfile.mkdtemp(prefix="bench-records-"))
    rows: list[Row] = []
    failed = False
    try:
        with fake_provider(workdir) as (provider_port, provider_log):
            for backend in backends:
                if backend == "redis" and not redis_answers(args.redis_url):
                    print(f"Redis at {args.redis_url} does not answer: the redis rows are skipped", file=sys.stderr)
                    continue
                rows += run_backend(backend, dataset, args, workdir, provider_port, provider_log)
    except BenchError as error:
        failed = True
        print(f"benchmark failed: {error} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        if not (failed or args.keep_dir):
            shutil.rmtree(workdir, ignore_errors=True)
    section = table(rows, args, args.records)
    print(section)
    if not (args.smoke or args.print_only):
        results.write_readme(README, RESULTS_START, RESULTS_END, section)
    used = resource.getrusage(resource.RUSAGE_SELF)
    print(f"(client CPU {used.ru_utime + used.ru_stime:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
