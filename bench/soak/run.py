#!/usr/bin/env python3
"""Soak test: does the gateway stay healthy through minutes of mixed traffic?

Why. The other benchmarks measure seconds of one kind of request. What they cannot see
is what only shows after minutes of everything at once: memory or file descriptors that
grow with every request, a connection pool that runs dry under concurrency, a learn
queue that falls behind and never drains, an error one request in ten thousand gets.

How. For each storage backend (SQLite in a fresh temporary directory; Redis under a
unique key prefix in db 15, deleted afterwards) the script starts two processes of its
own: the test suite's fake provider (``python -m tests.fake_upstream``) and the real
gateway (``python -m gateway serve --config <generated yaml>``), learning on with the
heuristic extractor. Then ``--concurrency`` asyncio workers (one shared httpx client)
each loop over a weighted mix of requests (see ``MIX``) on a pool of subjects of their
own: chat completions with history + recall + learn whose user messages state facts
("I live in Berlin"), the same streamed, Anthropic Messages (a Claude model forwarded
natively, a gpt model translated by LiteLLM), Responses, Gemini generateContent, and
the REST API (memories, state, history, prompts, subject erasure). Every response is
checked: a 2xx status and the answer the request should get (the fake's echo of the
last user message, a complete stream, the state value just written...). Anything else
is an error, counted by kind and kept as a sample.

Traffic runs ``--warmup`` seconds unmeasured, then ``--minutes`` measured. At the end
of the warm-up, every ``--sample-every`` seconds and at the end of the traffic, the
gateway process's RSS (VmRSS in /proc/<pid>/status), open file descriptors
(/proc/<pid>/fd), threads and CPU time are sampled, with the learn-queue backlog
(counted read-only in the store: see ``QueueProbe``); the RSS slope is a least-squares
fit in MB per minute. After the traffic the queue gets up to ``--drain`` seconds to
empty, then GET /api/v1/jobs reports what is left and whether any job failed.

A run fails (exit 1) when any request failed, the gateway died or logged an ERROR, a
background job failed, open fds grew by more than ``--max-fd-growth`` (20), or, on runs
of at least 5 measured minutes, the RSS slope over the second half of the samples
exceeds ``--max-rss-slope`` (5 MB/min). The queue backlog is reported, not judged: it
measures whether learning keeps up with back-to-back clients on this machine.
bench/soak/README.md explains the thresholds.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/soak/run.py --minutes 10 --backend both --out /tmp/soak.json

``--smoke`` (what tests/test_bench_smoke.py runs): SQLite, 2 workers, 3 measured seconds, README left alone.

Prints markdown tables and writes them into bench/soak/README.md (``--no-readme``
to leave it alone). Traffic stays on 127.0.0.1, on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable

import httpx
import redis
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.learn.run import free_port  # noqa: E402
from bench.overhead.run import BenchError, Child, wait_ready  # noqa: E402
from bench.processes import START_TIMEOUT_SECONDS  # noqa: E402

README = HERE / "README.md"
RESULTS_START = "<!-- soak-results:start -->"
RESULTS_END = "<!-- soak-results:end -->"

HOST = "127.0.0.1"
KEY = "mnx_soak_key"
PROJECT_ID = "soak"
PROJECT = {"x-mnexium-key": KEY}  # the project key, on every request
OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY = "sk-fake", "sk-ant-fake", "goog-fake"
TURNS_PER_CHAT = 10  # a subject moves to a fresh chat_id after this many turns: replay stays short
MIN_GATED_MINUTES = 5.0  # the RSS slope only fails a run at least this long

# What users say. Statements teach the heuristic extractor a fact; the values come from
# short lists, so versioning supersedes or skips instead of piling up memories: the data
# set per subject is bounded, and RSS growth means a leak, not more data.
STATEMENTS = [
    ("I live in {}", ["Berlin", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima"]),
    ("My favorite fruit is {}", ["mango", "blueberry", "kiwi", "papaya", "cherry", "fig"]),
    ("I work at {} as a designer", ["Acme", "Globex", "Initech", "Umbrella"]),
    ("I have a dog named {}", ["Rex", "Miso", "Luna", "Pepper"]),
    ("I'm {} years old", ["29", "34", "41", "52"]),
    ("I really enjoy {}", ["hiking", "chess", "pottery", "sailing", "baking"]),
    ("I'm allergic to {}", ["peanuts", "shellfish", "pollen"]),
]
QUESTIONS = ["What is my favorite fruit?", "Where do I live?", "What do you know about me?",
             "How old am I?", "What is my dog called?"]
REST_FACTS = ["User prefers dark mode", "User keeps three beehives", "User drinks tea in the morning",
              "User's favorite color is teal", "User speaks Portuguese", "User plays the cello"]
SEARCHES = ["favorite fruit", "dog", "where does the user live", "allergic", "tea", "work"]


class Failure(Exception):
    """A response that is not what its request should get. ``signature`` groups alike ones."""

    def __init__(self, signature: str, detail: str = "") -> None:
        super().__init__(signature)
        self.signature, self.detail = signature, detail


def require(condition: Any, what: str, body: Any = None) -> None:
    if not condition:
        raise Failure(f"unexpected answer: {what}", repr(body)[:400])


# -- the record of one run ----------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies (measured phase only), request counts, and every error of the run."""
    keep_samples: int = 25
    measuring: bool = False
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    warmup_requests: int = 0
    errors: Counter = field(default_factory=Counter)  # (kind, signature) -> count, warm-up included
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def ok(self, kind: str, ms: float) -> None:
        if self.measuring:
            self.latencies[kind].append(ms)
        else:
            self.warmup_requests += 1

    def error(self, kind: str, signature: str, detail: str) -> None:
        first_of_its_kind = (kind, signature) not in self.errors
        self.errors[(kind, signature)] += 1
        if first_of_its_kind or len(self.error_samples) < self.keep_samples:
            self.error_samples.append({"kind": kind, "signature": signature, "detail": detail[:600],
                                       "phase": "measured" if self.measuring else "warm-up",
                                       "at_s": round(time.monotonic() - self.started, 1)})


def error_signature(response: httpx.Response) -> str:
    """``HTTP 500 internal_error``: the status and the error code in whichever envelope."""
    code = ""
    try:
        error = response.json().get("error")
        if isinstance(error, str):
            code = error
        elif isinstance(error, dict):  # OpenAI {code, type}, Anthropic {type}, Google {status}
            code = next((v for v in (error.get("code"), error.get("type"), error.get("status")) if isinstance(v, str)),
                        "")
    except (ValueError, AttributeError):
        pass
    return f"HTTP {response.status_code} {code}".strip()


# -- one worker and its requests -------------------------------------------------------


@dataclass
class Worker:
    index: int
    client: httpx.AsyncClient
    recorder: Recorder
    rng: random.Random
    subjects: list[str]
    turns: Counter = field(default_factory=Counter)
    state_version: int = 0

    def subject(self) -> str:
        return self.rng.choice(self.subjects)

    def next_chat(self, subject: str) -> str:
        """The chat this subject's next turn goes to (a fresh one every TURNS_PER_CHAT turns)."""
        turn = self.turns[subject]
        self.turns[subject] += 1
        return f"{subject}-chat{turn // TURNS_PER_CHAT}"

    def current_chat(self, subject: str) -> str:
        return f"{subject}-chat{max(0, self.turns[subject] - 1) // TURNS_PER_CHAT}"

    def utterance(self) -> str:
        if self.rng.random() < 0.2:
            return self.rng.choice(QUESTIONS)
        template, values = self.rng.choice(STATEMENTS)
        return template.format(self.rng.choice(values))

    def turn(self) -> tuple[str, str, str]:
        """(subject, chat id, user text) of a new conversational turn."""
        subject = self.subject()
        return subject, self.next_chat(subject), self.utterance()

    async def call(self, kind: str, method: str, path: str, check: Callable[[Any], None] | None = None,
                   **request: Any) -> Any:
        """One request, timed and checked; returns the JSON body, or None after recording an error."""
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, **request)
            if not 200 <= response.status_code < 300:
                raise Failure(error_signature(response), response.text[:600])
            body = response.json()
            if check:
                check(body)
        except Exception as exc:  # noqa: BLE001 - every failure is a result here
            self._record_failure(kind, exc)
            return None
        self.recorder.ok(kind, (time.perf_counter() - started) * 1000)
        return body

    async def call_stream(self, kind: str, path: str, check: Callable[[str], None], **request: Any) -> None:
        """One streamed request, read to its last byte, then checked as text."""
        started = time.perf_counter()
        try:
            async with self.client.stream("POST", path, **request) as response:
                raw = await response.aread()
            if not 200 <= response.status_code < 300:
                raise Failure(error_signature(response), raw.decode(errors="replace")[:600])
            check(raw.decode())
        except Exception as exc:  # noqa: BLE001
            self._record_failure(kind, exc)
            return
        self.recorder.ok(kind, (time.perf_counter() - started) * 1000)

    def _record_failure(self, kind: str, exc: Exception) -> None:
        if isinstance(exc, Failure):
            self.recorder.error(kind, exc.signature, exc.detail)
        elif isinstance(exc, (KeyError, IndexError, TypeError, ValueError)):  # a 2xx body of another shape
            self.recorder.error(kind, f"unexpected answer shape: {type(exc).__name__}", repr(exc)[:600])
        else:
            self.recorder.error(kind, type(exc).__name__, f"{type(exc).__name__}: {exc}"[:600])


def mnx(subject: str, chat_id: str) -> dict[str, Any]:
    return {"subject_id": subject, "chat_id": chat_id, "history": True, "recall": True, "learn": True}


def echoes(text: str) -> Callable[..., None]:
    """A check that the assistant's text (taken from the surface's own shape by the caller) is the
    fake provider's echo of the user's text."""
    def check(answer: str, body: Any = None) -> None:
        require(answer == f"echo: {text}", f"assistant text {answer!r}", body)
    return check


async def op_chat(w: Worker) -> None:
    subject, chat_id, text = w.turn()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "mnx": mnx(subject, chat_id)}
    check = echoes(text)
    await w.call("chat", "POST", "/v1/chat/completions", lambda b: check(b["choices"][0]["message"]["content"], b),
                 json=body, headers={**PROJECT, "x-openai-key": OPENAI_KEY})


def sse_data(raw: str) -> list[str]:
    return [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]


async def op_chat_stream(w: Worker) -> None:
    subject, chat_id, text = w.turn()
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}],
            "mnx": mnx(subject, chat_id)}

    def check(raw: str) -> None:
        data = sse_data(raw)
        require(data and data[-1] == "[DONE]", "stream does not end with [DONE]", raw[-300:])
        chunks = [json.loads(d) for d in data[:-1]]
        said = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
        echoes(text)(said, raw[-300:])

    await w.call_stream("chat.stream", "/v1/chat/completions", check, json=body,
                        headers={**PROJECT, "x-openai-key": OPENAI_KEY})


async def op_messages(w: Worker) -> None:
    """Anthropic Messages: a Claude model (native, half of them streamed) or a gpt model (LiteLLM)."""
    subject, chat_id, text = w.turn()
    claude = w.rng.random() < 0.6
    body = {"model": "claude-soak" if claude else "gpt-4o-mini", "max_tokens": 64,
            "messages": [{"role": "user", "content": text}], "mnx": mnx(subject, chat_id)}
    headers = {**PROJECT, "x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01",
               "x-openai-key": OPENAI_KEY}
    check = echoes(text)
    if claude and w.rng.random() < 0.5:
        def check_events(raw: str) -> None:
            events = [json.loads(d) for d in sse_data(raw)]
            require(events and events[-1].get("type") == "message_stop", "stream does not end with message_stop",
                    raw[-300:])
            check("".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta"),
                  raw[-300:])
        await w.call_stream("messages.claude.stream", "/v1/messages", check_events,
                            json={**body, "stream": True}, headers=headers)
        return
    await w.call("messages.claude" if claude else "messages.gpt", "POST", "/v1/messages",
                 lambda b: check(b["content"][0]["text"], b), json=body, headers=headers)


async def op_responses(w: Worker) -> None:
    subject, chat_id, text = w.turn()
    body = {"model": "gpt-4o-mini", "input": text, "mnx": mnx(subject, chat_id)}
    check = echoes(text)
    await w.call("responses", "POST", "/v1/responses", lambda b: check(b["output"][0]["content"][0]["text"], b),
                 json=body, headers={**PROJECT, "x-openai-key": OPENAI_KEY})


async def op_gemini(w: Worker) -> None:
    subject, chat_id, text = w.turn()
    headers = {**PROJECT, "x-goog-api-key": GOOGLE_KEY, "x-mnx-subject-id": subject, "x-mnx-chat-id": chat_id,
               "x-mnx-history": "true", "x-mnx-recall": "true", "x-mnx-learn": "true"}
    check = echoes(text)
    await w.call("gemini", "POST", "/v1beta/models/gemini-2.0-flash:generateContent",
                 lambda b: check(b["candidates"][0]["content"]["parts"][0]["text"], b),
                 json={"contents": [{"role": "user", "parts": [{"text": text}]}]}, headers=headers)


async def op_memories(w: Worker) -> None:
    subject = w.subject()
    action = w.rng.choice(("create", "search", "list"))
    if action == "create":
        await w.call("memories.create", "POST", "/api/v1/memories",
                     lambda b: require(b.get("subject_id") == subject and ("id" in b), "memory answer", b),
                     json={"subject_id": subject, "text": w.rng.choice(REST_FACTS)}, headers=PROJECT)
    elif action == "search":
        await w.call("memories.search", "GET", "/api/v1/memories/search",
                     lambda b: require(isinstance(b.get("data"), list), "search answer", b),
                     params={"subject_id": subject, "q": w.rng.choice(SEARCHES), "limit": 5}, headers=PROJECT)
    else:
        await w.call("memories.list", "GET", "/api/v1/memories",
                     lambda b: require(isinstance(b.get("data"), list), "list answer", b),
                     params={"subject_id": subject, "limit": 20}, headers=PROJECT)


async def op_state(w: Worker) -> None:
    """PUT a value, then GET it back: the subject is this worker's, so it must be the same."""
    subject = w.subject()
    w.state_version += 1
    value = {"step": w.state_version, "worker": w.index, "note": "soak"}
    headers = {**PROJECT, "x-subject-id": subject}
    if await w.call("state.put", "PUT", "/api/v1/state/soak-task", lambda b: require(b.get("ok"), "put answer", b),
                    json={"value": value}, headers=headers) is None:
        return
    await w.call("state.get", "GET", "/api/v1/state/soak-task",
                 lambda b: require(b.get("value") == value, "read back another value", b), headers=headers)


async def op_history(w: Worker) -> None:
    subject = w.subject()
    if await w.call("history.list", "GET", "/api/v1/chat/history/list",
                    lambda b: require(isinstance(b.get("chats"), list), "list answer", b),
                    params={"subject_id": subject}, headers=PROJECT) is None:
        return
    await w.call("history.read", "GET", "/api/v1/chat/history/read",
                 lambda b: require(isinstance(b.get("messages"), list), "read answer", b),
                 params={"chat_id": w.current_chat(subject), "subject_id": subject}, headers=PROJECT)


async def op_prompts(w: Worker) -> None:
    """Replace the subject's own default prompt (a fixed id, so prompts do not pile up), then resolve it."""
    subject = w.subject()
    text = f"Be brief with {subject} (v{w.rng.randrange(1000)})."
    prompt = {"id": f"sp-{subject}", "name": "soak", "prompt_text": text, "scope": "subject", "scope_id": subject,
              "is_default": True}
    if await w.call("prompts.create", "POST", "/api/v1/prompts", lambda b: require(b.get("ok"), "create answer", b),
                    json=prompt, headers=PROJECT) is None:
        return
    await w.call("prompts.resolve", "GET", "/api/v1/prompts/resolve",
                 lambda b: require(text in b.get("prompt_text", ""), "resolved text lacks the new prompt", b),
                 params={"subject_id": subject, "combined": "true"}, headers=PROJECT)


async def op_erase(w: Worker) -> None:
    """Erase one of this worker's subjects (it is between requests, so none is in use); it is reused after."""
    subject = w.subject()
    await w.call("subjects.erase", "DELETE", f"/api/v1/subjects/{subject}",
                 lambda b: require(b.get("ok") and b.get("subject_id") == subject, "erase answer", b),
                 headers=PROJECT)
    w.turns[subject] += TURNS_PER_CHAT - w.turns[subject] % TURNS_PER_CHAT  # start a fresh chat


@dataclass(frozen=True)
class Op:
    weight: int  # % of operations
    name: str
    run: Callable[[Worker], Awaitable[None]]


MIX = [
    Op(35, "chat completions, history + recall + learn", op_chat),
    Op(20, "chat completions streamed, the same", op_chat_stream),
    Op(10, "messages: claude native (half streamed) 60%, gpt via LiteLLM 40%", op_messages),
    Op(5, "responses", op_responses),
    Op(5, "gemini generateContent", op_gemini),
    Op(10, "REST memories: create / search / list", op_memories),
    Op(5, "state PUT then GET", op_state),
    Op(5, "history list then read", op_history),
    Op(3, "prompts: replace the subject's, then resolve", op_prompts),
    Op(2, "subject erasure", op_erase),
]


async def worker_loop(w: Worker, stop: asyncio.Event) -> None:
    weights = [op.weight for op in MIX]
    while not stop.is_set():
        op = w.rng.choices(MIX, weights)[0]
        await op.run(w)


# -- the gateway process, sampled ------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MB), open file descriptors, threads and CPU seconds so far of one process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat[stat.rindex(")") + 2:].split()[11:13]
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads,
            "cpu_s": round((int(utime) + int(stime)) / CLK_TCK, 2)}


def machine_ticks() -> list[int]:
    """The machine's CPU ticks since boot: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def machine_load(before: list[int], after: list[int]) -> dict[str, float]:
    """Between two readings, in % of all cores: busy (not idle, iowait or steal) and steal (taken by the
    hypervisor for other guests: on a shared VM it caps throughput and inflates latency)."""
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta) or 1
    idle, iowait, steal = delta[3], delta[4], delta[7]
    return {"busy_pct": round(100 * (total - idle - iowait - steal) / total, 1),
            "steal_pct": round(100 * steal / total, 1)}


async def jobs_via_api(client: httpx.AsyncClient) -> dict[str, Any]:
    """The project's unfinished jobs as a client sees them (GET /api/v1/jobs, at most 1000): how many,
    and those that already failed at least once (a ``last_error``), with a few of their errors."""
    try:
        response = await client.get("/api/v1/jobs", params={"limit": 1000}, headers=PROJECT, timeout=120)
        body = response.json()
        if response.status_code != 200:
            return {"count": None, "error": error_signature(response)}
    except (httpx.HTTPError, ValueError) as exc:
        return {"count": None, "error": f"{type(exc).__name__}: {exc}"}
    failed = [job for job in body["data"] if job.get("last_error")]
    return {"count": body["count"], "failed": len(failed),
            "failed_samples": [{k: job.get(k) for k in ("kind", "attempts", "last_error")} for job in failed[:5]]}


class QueueProbe:
    """Counts the project's queued jobs straight from the store, read-only and exact: a SELECT COUNT
    on the SQLite file, a ZCARD on Redis. GET /api/v1/jobs cannot do this during the run: it stops at
    1000 jobs, and on Redis it reads each job with two sequential round trips, which under this load
    took over 30 s for 1000 jobs and would stall the sampling."""

    def __init__(self, backend: str, workdir: Path, redis_url: str, prefix: str) -> None:
        self.backend, self.path = backend, workdir / "gateway.db"
        self.redis = redis.Redis.from_url(redis_url) if backend == "redis" else None
        self.key = f"{prefix}{{jobs}}:p:{PROJECT_ID}"  # gateway/jobs/redis_queue.py: the project's jobs

    def count(self) -> int | None:
        try:
            if self.redis is not None:
                return int(self.redis.zcard(self.key))
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)) as db:
                return db.execute("SELECT COUNT(*) FROM jobs WHERE project_id = ?", (PROJECT_ID,)).fetchone()[0]
        except (redis.RedisError, sqlite3.Error):
            return None

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def take_sample(gateway_pid: int, upstream_pid: int, probe: QueueProbe, t0: float, label: str) -> dict[str, Any]:
    sample = {"label": label, "t_s": round(time.monotonic() - t0, 1), **proc_sample(gateway_pid)}
    sample["upstream_cpu_s"] = proc_sample(upstream_pid)["cpu_s"]
    sample["jobs"] = probe.count()
    return sample


def slope_per_minute(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of ``key`` over time, per minute (None with fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    ts = [s["t_s"] / 60 for s in samples]
    ys = [s[key] for s in samples]
    mean_t, mean_y = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mean_t) ** 2 for t in ts)
    return None if var == 0 else sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys)) / var


def trend(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [s[key] for s in samples]
    half = samples[len(samples) // 2:]
    slope, slope_half = slope_per_minute(samples, key), slope_per_minute(half, key)
    return {"start": values[0], "end": values[-1], "max": max(values), "growth": round(values[-1] - values[0], 1),
            "slope_per_min": None if slope is None else round(slope, 2),
            "slope_per_min_second_half": None if slope_half is None else round(slope_half, 2)}


# -- one backend: processes, traffic, measurements --------------------------------------


def gateway_config(backend: str, workdir: Path, ports: dict[str, int], redis_url: str, prefix: str) -> dict:
    upstream = f"http://{HOST}:{ports['upstream']}"
    storage: dict[str, Any] = {"backend": backend}
    if backend == "sqlite":
        storage["sqlite"] = {"path": str(workdir / "gateway.db")}
    else:
        storage["redis"] = {"url": redis_url, "key_prefix": prefix}
    return {
        "server": {"host": HOST, "port": ports["gateway"], "log_level": "warning", "access_log": False},
        "storage": storage,
        "projects": [{"id": PROJECT_ID, "keys": [{"name": "soak", "key": KEY, "scopes": ["*"]}]}],
        "providers": {
            "openai": {"api_base": f"{upstream}/v1", "api_key": OPENAI_KEY},
            "anthropic": {"api_base": upstream, "api_key": ANTHROPIC_KEY},
            "gemini": {"api_base": f"{upstream}/v1beta", "api_key": GOOGLE_KEY},
        },
        "defaults": {"learn": True, "recall": False},
        "memory": {"vectors": {"backend": "edge", "edge": {"path": str(workdir / "memories")}}},
        "learning": {"extractor": {"provider": "heuristic"}},
    }


def start_processes(backend: str, workdir: Path, redis_url: str, prefix: str) -> tuple[Child, Child, int]:
    """The fake provider and the gateway, each ready; returns them and the gateway's port."""
    ports = {"upstream": free_port(), "gateway": free_port()}
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(backend, workdir, ports, redis_url, prefix),
                                          sort_keys=False))
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PYTHONDONTWRITEBYTECODE": "1"}
    upstream = Child("fake upstream", [sys.executable, "-m", "tests.fake_upstream", "--port", str(ports["upstream"])],
                     env, workdir / "upstream.log")
    gateway = Child("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                    env, workdir / "gateway.log")
    upstream.start()
    wait_ready(upstream, ports["upstream"], None, START_TIMEOUT_SECONDS)
    gateway.start()
    wait_ready(gateway, ports["gateway"], "/health", START_TIMEOUT_SECONDS)
    return upstream, gateway, ports["gateway"]


def drop_redis_prefix(redis_url: str, prefix: str) -> int:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i:i + 1000])
    client.close()
    return len(keys)


async def drain(probe: QueueProbe, seconds: float) -> float:
    """Wait until the learn queue is empty or ``seconds`` pass; returns the seconds waited."""
    started = time.monotonic()
    while probe.count() != 0 and time.monotonic() - started < seconds:
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


async def wait_or_die(stop: asyncio.Event, gateway: Child, seconds: float) -> bool:
    """Sleep ``seconds`` unless stopped; False if the gateway process died meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        if not gateway.alive():
            return False
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return gateway.alive()


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(gateway: Child, upstream: Child, probe: QueueProbe, recorder: Recorder, stop: asyncio.Event,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The measured window: a sample at its start, every --sample-every seconds and at its end."""
    gateway_pid, upstream_pid = gateway.popen.pid, upstream.popen.pid
    recorder.measuring = True
    t0, ticks0, cpu0 = time.monotonic(), machine_ticks(), cpu_seconds_self()
    deadline = t0 + args.minutes * 60
    samples = [take_sample(gateway_pid, upstream_pid, probe, t0, "start")]
    alive, k = True, 1
    while alive:
        at = min(t0 + k * args.sample_every, deadline)
        alive = await wait_or_die(stop, gateway, at - time.monotonic())
        if not alive or at >= deadline:
            break
        samples.append(take_sample(gateway_pid, upstream_pid, probe, t0, "run"))
        k += 1
    recorder.measuring = False
    measured_s = time.monotonic() - t0
    if alive:
        samples.append(take_sample(gateway_pid, upstream_pid, probe, t0, "end"))
    return {"samples": samples, "measured_s": measured_s, "alive": alive, "t0": t0,
            "machine": machine_load(ticks0, machine_ticks()), "loadgen_cpu_s": cpu_seconds_self() - cpu0}


async def drive(gateway: Child, upstream: Child, port: int, probe: QueueProbe, args: argparse.Namespace,
                backend: str) -> dict[str, Any]:
    """Warm-up, the measured window, then stop the traffic and let the learn queue drain."""
    recorder, stop = Recorder(), asyncio.Event()
    limits = httpx.Limits(max_connections=args.concurrency + 4, max_keepalive_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits, timeout=args.timeout) as client:
        workers = [Worker(i, client, recorder, random.Random(f"{args.seed}-{backend}-{i}"),
                          [f"soak-w{i}-s{j}" for j in range(args.subjects_per_worker)])
                   for i in range(args.concurrency)]
        tasks = [asyncio.create_task(worker_loop(w, stop)) for w in workers]
        if await wait_or_die(stop, gateway, args.warmup):
            window = await measure(gateway, upstream, probe, recorder, stop, args)
        else:
            window = {"samples": [], "measured_s": 0.0, "alive": False, "t0": time.monotonic(),
                      "machine": None, "loadgen_cpu_s": 0.0}
        stop.set()
        await asyncio.gather(*tasks)
        run = {"recorder": recorder, **window, "drain_s": 0.0, "jobs_left_after_drain": None}
        if window["alive"] and gateway.alive():
            run["drain_s"] = await drain(probe, args.drain)
            run["jobs_after_drain"] = await jobs_via_api(client)
            run["jobs_left_after_drain"] = run["jobs_after_drain"]["count"]
            run["jobs_left_after_drain_in_store"] = probe.count()
            run["samples"].append(take_sample(gateway.popen.pid, upstream.popen.pid, probe, window["t0"],
                                              "after drain"))
    run["gateway_died"] = not window["alive"] or not gateway.alive()
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(values: list[float], seconds: float) -> dict[str, Any]:
    if not values:
        return {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None}
    return {"requests": len(values), "rps": round(len(values) / seconds, 1),
            "p50_ms": round(percentile(values, 0.50), 2), "p99_ms": round(percentile(values, 0.99), 2)}


def log_errors(log_path: Path, keep: int = 8) -> dict[str, Any]:
    """The gateway's log (warning level): ERROR lines counted, and the most frequent distinct
    ERROR messages and exception lines (the last line of each traceback), with their counts."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return {"count": 0, "top": []}
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    distinct: Counter = Counter()
    in_traceback = False
    for line in lines:
        if " ERROR " in line or " CRITICAL " in line:
            distinct[re.sub(r"^\S+ \S+ ", "", line)[:300]] += 1  # without the timestamp, so repeats collapse
        elif line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t")):
            distinct[line[:300]] += 1  # the exception that ended the traceback
            in_traceback = False
    return {"count": len(errors), "top": [{"count": c, "line": text} for text, c in distinct.most_common(keep)]}


def summarize(backend: str, run: dict[str, Any], args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    recorder: Recorder = run["recorder"]
    seconds = max(run["measured_s"], 1e-9)
    every = [ms for values in recorder.latencies.values() for ms in values]
    errors_by_kind = Counter()
    for (kind, _), count in recorder.errors.items():
        errors_by_kind[kind] += count
    samples = [s for s in run["samples"] if s["label"] != "after drain"]
    result = {
        "backend": backend,
        "measured_minutes": round(run["measured_s"] / 60, 2),
        "overall": latency_summary(every, seconds),
        "warmup_requests": recorder.warmup_requests,
        "errors": sum(recorder.errors.values()),
        "errors_by_kind": dict(errors_by_kind),
        "errors_by_signature": [{"kind": k, "signature": s, "count": c} for (k, s), c in recorder.errors.most_common()],
        "error_samples": recorder.error_samples,
        "by_kind": {kind: latency_summary(values, seconds) for kind, values in sorted(recorder.latencies.items())},
        "rss_mb": trend(samples, "rss_mb") if samples else None,
        "fds": trend(samples, "fds") if samples else None,
        "threads": trend(samples, "threads") if samples else None,
        "jobs": trend(samples, "jobs") if samples and all(x["jobs"] is not None for x in samples) else None,
        "samples": run["samples"],
        "gateway_died": run["gateway_died"],
        "jobs_at_end_of_traffic": samples[-1]["jobs"] if samples else None,
        "jobs_left_after_drain": run["jobs_left_after_drain"],
        "jobs_left_after_drain_in_store": run.get("jobs_left_after_drain_in_store"),
        "jobs_after_drain": run.get("jobs_after_drain"),
        "drain_s": run["drain_s"],
        **cpu_use(samples, run),
        "gateway_log_errors": log_errors(log_path),
    }
    result["failures"] = verdict(result, args)
    return result


def cpu_use(samples: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """CPU over the measured window, in % of one core: the gateway, the fake provider, this load
    generator, and everything else the machine ran (other jobs on a shared host); and the steal."""
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    if first is None or last["t_s"] <= first["t_s"] or not run["machine"]:
        return {"cpu_pct_of_one_core": None, "steal_pct_of_machine": None}
    seconds = last["t_s"] - first["t_s"]
    pct = {"gateway": 100 * (last["cpu_s"] - first["cpu_s"]) / seconds,
           "fake_provider": 100 * (last["upstream_cpu_s"] - first["upstream_cpu_s"]) / seconds,
           "load_generator": 100 * run["loadgen_cpu_s"] / run["measured_s"]}
    machine_busy = run["machine"]["busy_pct"] * (os.cpu_count() or 1)
    pct["other"] = max(0.0, machine_busy - sum(pct.values()))
    return {"cpu_pct_of_one_core": {k: round(v, 1) for k, v in pct.items()},
            "steal_pct_of_machine": run["machine"]["steal_pct"]}


def verdict(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Why this backend's run failed (empty: it passed)."""
    reasons = []
    if r["gateway_died"]:
        reasons.append("the gateway process died")
    if r["errors"]:
        reasons.append(f"{r['errors']} failed requests")
    failed_jobs = (r["jobs_after_drain"] or {}).get("failed")
    if failed_jobs:
        reasons.append(f"{failed_jobs} background jobs failed (a last_error in GET /api/v1/jobs)")
    if r["gateway_log_errors"]["count"]:
        reasons.append(f"the gateway logged {r['gateway_log_errors']['count']} ERROR lines")
    fds = r["fds"]
    if fds and fds["growth"] > args.max_fd_growth:
        reasons.append(f"open fds grew by {fds['growth']:g} (limit {args.max_fd_growth})")
    rss = r["rss_mb"]
    slope = rss and rss["slope_per_min_second_half"]
    if slope is not None and r["measured_minutes"] >= MIN_GATED_MINUTES and slope > args.max_rss_slope:
        reasons.append(f"RSS slope over the second half {slope:.1f} MB/min (limit {args.max_rss_slope:g})")
    return reasons


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"soak-{backend}-"))
    prefix = f"mnxsoak:{secrets.token_hex(6)}:"
    children: list[Child] = []
    keep = args.keep_dir
    try:
        if backend == "redis":
            redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
        upstream, gateway, port = start_processes(backend, workdir, args.redis_url, prefix)
        children = [upstream, gateway]
        probe = QueueProbe(backend, workdir, args.redis_url, prefix)
        print(f"[{backend}] gateway pid {gateway.popen.pid} on port {port}; warm-up {args.warmup:g} s, "
              f"then {args.minutes:g} min at concurrency {args.concurrency} (logs in {workdir})", flush=True)
        try:
            run = asyncio.run(drive(gateway, upstream, port, probe, args, backend))
        finally:
            probe.close()
        result = summarize(backend, run, args, workdir / "gateway.log")
        keep = keep or bool(result["failures"])
        if run["gateway_died"]:
            result["gateway_log_tail"] = gateway.log_tail(40)
        return result
    finally:
        for child in reversed(children):
            child.stop()
        if backend == "redis":
            try:
                dropped = drop_redis_prefix(args.redis_url, prefix)
                print(f"[{backend}] deleted {dropped} keys under {prefix}", flush=True)
            except redis.RedisError as error:
                print(f"[{backend}] could not delete keys under {prefix}: {error}", file=sys.stderr)
        if keep:
            print(f"[{backend}] logs and data kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# -- report ------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ",.1f") -> str:
    return "—" if value is None else format(value, spec)


def api_count(count: int | None) -> str:
    """GET /api/v1/jobs lists at most 1000 jobs: 1000 means "1000 or more"."""
    return "—" if count is None else f"{count:,}+" if count >= 1000 else f"{count:,}"


def summary_table(runs: list[dict[str, Any]]) -> str:
    rows = ["| backend | minutes | req/s | requests | errors | p50 ms | p99 ms | gateway CPU "
            "| RSS MB start → end (max) "
            "| RSS MB/min (2nd half) | fds start → end (max) | threads start → end | jobs at end / after drain "
            "| verdict |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in runs:
        rss, fds, thr, o = r["rss_mb"] or {}, r["fds"] or {}, r["threads"] or {}, r["overall"]
        cpu = r["cpu_pct_of_one_core"] or {}
        rows.append(
            f"| {r['backend']} | {r['measured_minutes']:g} | {fmt(o['rps'])} | {o['requests']:,} | {r['errors']:,} "
            f"| {fmt(o['p50_ms'], '.2f')} | {fmt(o['p99_ms'], '.2f')} | {fmt(cpu.get('gateway'), '.0f')}% "
            f"| {fmt(rss.get('start'))} → {fmt(rss.get('end'))} ({fmt(rss.get('max'))}) "
            f"| {fmt(rss.get('slope_per_min'), '+.2f')} ({fmt(rss.get('slope_per_min_second_half'), '+.2f')}) "
            f"| {fmt(fds.get('start'), 'd')} → {fmt(fds.get('end'), 'd')} ({fmt(fds.get('max'), 'd')}) "
            f"| {fmt(thr.get('start'), 'd')} → {fmt(thr.get('end'), 'd')} "
            f"| {fmt(r['jobs_at_end_of_traffic'], ',d')} / {api_count(r['jobs_left_after_drain'])} "
            f"| {'pass' if not r['failures'] else 'FAIL'} |")
    return "\n".join(rows)


def kinds_table(runs: list[dict[str, Any]]) -> str:
    """Per request kind: requests, errors, p50 and p99 on each backend."""
    kinds = sorted({k for r in runs for k in r["by_kind"]} | {k for r in runs for k in r["errors_by_kind"]})
    header = "| kind | " + " | ".join(f"{r['backend']} requests | {r['backend']} errors | {r['backend']} p50 ms "
                                      f"| {r['backend']} p99 ms" for r in runs) + " |"
    rows = [header, "| --- |" + " ---: | ---: | ---: | ---: |" * len(runs)]
    for kind in kinds:
        cells = []
        for r in runs:
            s = r["by_kind"].get(kind, {"requests": 0, "p50_ms": None, "p99_ms": None})
            cells.append(f"{s['requests']:,} | {r['errors_by_kind'].get(kind, 0):,} | {fmt(s['p50_ms'], '.2f')} "
                         f"| {fmt(s['p99_ms'], '.2f')}")
        rows.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def notes(runs: list[dict[str, Any]]) -> str:
    """Per backend: the queue and the CPU, then why it failed and its errors."""
    lines = []
    for r in runs:
        jobs, cpu = r["jobs"] or {}, r["cpu_pct_of_one_core"] or {}
        lines.append(f"- {r['backend']}: learn queue {fmt(jobs.get('start'), 'd')} → {fmt(jobs.get('end'), 'd')} "
                     f"jobs (max {fmt(jobs.get('max'), 'd')}, {fmt(jobs.get('slope_per_min'), '+,.0f')}/min), "
                     f"{api_count(r['jobs_left_after_drain'])} left after {r['drain_s']:g} s of drain "
                     f"(GET /api/v1/jobs); CPU in % of one core: gateway {fmt(cpu.get('gateway'), '.0f')}, "
                     f"fake provider {fmt(cpu.get('fake_provider'), '.0f')}, load generator "
                     f"{fmt(cpu.get('load_generator'), '.0f')}, other processes {fmt(cpu.get('other'), '.0f')}; "
                     f"steal {fmt(r['steal_pct_of_machine'], '.0f')}% of the machine; "
                     f"{r['warmup_requests']:,} warm-up requests.")
        for reason in r["failures"]:
            lines.append(f"- {r['backend']}: {reason}")
        for e in r["errors_by_signature"][:8]:
            lines.append(f"  - {e['count']:,} × {e['kind']}: `{e['signature']}`")
        for job in (r["jobs_after_drain"] or {}).get("failed_samples", []):
            lines.append(f"  - failed job ({job['kind']}, {job['attempts']} attempts): "
                         f"`{str(job['last_error'])[:200]}`")
        log = r["gateway_log_errors"]
        if log["count"]:
            lines.append(f"  - gateway log: {log['count']:,} ERROR lines; most frequent:")
            lines.extend(f"    - {t['count']:,} × `{t['line'][:200]}`" for t in log["top"][:4])
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    a = report["args"]
    head = (f"Run {report['finished']} on {report['machine']}, commit {report['git_commit']}; "
            f"{a['warmup']:g} s warm-up then {a['minutes']:g} min at concurrency {a['concurrency']} "
            f"({a['subjects_per_worker']} subjects per worker), samples every {a['sample_every']:g} s.\n\n"
            f"```\n{report['command']}\n```")
    return "\n\n".join((head, summary_table(report["runs"]), kinds_table(report["runs"]),
                        notes(report["runs"]))) + "\n"


# -- main -------------------------------------------------------------------------------


def git_commit() -> str:
    """The checked-out commit (read-only git plumbing), with "+dirty" when tracked files differ."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff-index", "--quiet", "HEAD", "--"], cwd=ROOT).returncode != 0
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes per backend (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers sending requests (default 16)")
    parser.add_argument("--backend", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--out", type=Path, help="write the full results as JSON here")
    parser.add_argument("--warmup", type=float, default=20.0, help="unmeasured seconds of traffic first (default 20)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="at most this many seconds for the learn queue to empty after the traffic (default 60)")
    parser.add_argument("--subjects-per-worker", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    parser.add_argument("--max-fd-growth", type=int, default=20, help="fail above this fd growth (default 20)")
    parser.add_argument("--max-rss-slope", type=float, default=5.0,
                        help=f"fail above this RSS slope in MB/min, on runs of >= {MIN_GATED_MINUTES:g} min "
                             "(default 5)")
    parser.add_argument("--redis-url", default=os.environ.get("MNX_SOAK_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--seed", default="soak", help="seed of the workers' random choices")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/soak/README.md alone")
    parser.add_argument("--keep-dir", action="store_true", help="keep each backend's temporary directory")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds' check that the whole mix runs: SQLite only, 2 workers, 1 s warm-up, "
                             "3 s measured, README left alone")
    args = parser.parse_args()
    if args.smoke:
        args.backend, args.concurrency, args.subjects_per_worker, args.no_readme = "sqlite", 2, 1, True
        args.minutes, args.warmup, args.sample_every, args.drain = 0.05, 1.0, 1.0, 10.0
    if args.minutes <= 0 or args.concurrency < 1 or args.subjects_per_worker < 1 or args.sample_every <= 0:
        parser.error("minutes, concurrency, subjects-per-worker and sample-every must be positive")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    backends = ["sqlite", "redis"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": results.machine_description(), "cpu_count": os.cpu_count(), "git_commit": git_commit(),
        "command": results.command_line(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": [{"weight": op.weight, "operation": op.name} for op in MIX], "runs": []}
    try:
        for backend in backends:
            report["runs"].append(run_backend(backend, args))
    except (BenchError, redis.RedisError, OSError) as error:
        print(f"\nsoak failed to run: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    report["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report["passed"] = not any(r["failures"] for r in report["runs"])
    section = render(report)
    print("\n" + section)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"(JSON written to {args.out})")
    if not args.no_readme:
        results.write_readme(README, RESULTS_START, RESULTS_END, section)
        print(f"(written to {README.relative_to(ROOT)})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
