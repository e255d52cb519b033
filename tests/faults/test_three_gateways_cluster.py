"""Three gateway processes on one three-master Redis Cluster, under concurrent load, then one SIGKILLed.

Real processes (``python -m gateway serve``), a real Redis Cluster (tests/redis_cluster.py) for
the store, the job queue, the usage counters and the event bus, and the memory index on Redis's
query engine (``memory.vectors.backend: redis``, tests/redis_stack.py), shared by all three.
Turns go round-robin over the gateways from many client threads at once.

Phase 1, nothing fails; exactly:
* every answered turn is in its chat's history once (its user message and its answer), and
  nothing else is;
* each learn job ran once (one extraction request per turn reached the provider) and stored
  its one memory, none twice, whichever gateway ran it;
* every memory is found by a search on every gateway (the query engine's index, not a copy
  per process), and recalled into a turn by every gateway;
* a subscriber of the memory events on one gateway gets one ``memory.created`` per memory
  created on any gateway, with no id twice;
* on the project whose key may make ``LIMIT`` memory actions this month, ``3 * LIMIT`` turns
  fired at once get exactly ``LIMIT`` answers (the rest 429 ``usage_limit_exceeded``), the
  shared counter in the cluster holds exactly ``LIMIT``, and only the admitted turns were
  recorded and learned.

Phase 2, the same gateways, new subjects: gateway 2 is SIGKILLed while its learn job is
waiting for the extractor (gateway 2's extractor model is the fake's slow one, so its
in-flight extraction is visible at the provider). Every turn answered 200, before or after,
is in history exactly once and learned exactly once, by the survivors for the job the dead
process held (the queue's lease, ``learning.lease_seconds``, runs out and another gateway
claims it); a turn refused at connect is not recorded; nothing is learned twice; events
stay one per memory.

The extractor is the fake provider's ``extractor`` model: one memory "User said: <message>"
per user message, deterministic, and each run is one request the test can count. Messages
are made of words no other message uses, so versioning never merges or supersedes two of
them and each is found by a search for one of its words.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.faults.conftest import GatewayProcess, providers_with
from tests.redis_cluster import RedisClusterServers
from tests.redis_stack import redis_stack  # noqa: F401  (the query-engine Redis, session scope)
from tests.test_event_stream import Subscriber

LIMITED_WRITER = "mnx_live_test_key_limited_writer"
LIMITED_READER = "mnx_live_test_key_limited_reader"
LIMIT = 5
# Gateway 2 extracts slowly, so the test sees (at the provider) a job it holds when it is killed.
FAST_EXTRACTOR, SLOW_EXTRACTOR = "extractor-sleep-0.2", "extractor-sleep-1.5"
LEASE_SECONDS = 4
TURN_HEADERS = {"x-openai-key": PROVIDER_KEY}
LEARNED = "User said: "


def words(n: int) -> str:
    """Three letters-only words that no other ``n`` produces (no digits: a tokenizer may split them)."""
    letters = "bcdfghjklmnpqrstvwxz"
    out = []
    for k in range(3):
        value, word = n * 3 + k, ""
        for _ in range(3):
            value, digit = divmod(value, len(letters))
            word += letters[digit] + "aeiou"[(digit + k) % 5]
        out.append("q" + word)
    return " ".join(out)


_message_numbers = itertools.count()


def new_message() -> str:
    return "Remember " + words(next(_message_numbers))


@dataclass
class Turn:
    gateway: int
    project_key: str
    subject: str
    chat: str
    message: str
    status: int | None = None  # None: no answer (connection refused or cut)
    body: Any = None
    refused_at_connect: bool = False


class Cluster3:
    """The three gateways, and the client side of the load."""

    def __init__(self, gateways: list[GatewayProcess]) -> None:
        self.gateways = gateways
        self._next = itertools.count()
        self._lock = threading.Lock()

    def pick(self) -> int:
        with self._lock:
            return next(self._next) % len(self.gateways)

    def url(self, index: int) -> str:
        return self.gateways[index].url

    def send(self, turn: Turn, client: httpx.Client) -> Turn:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": turn.message}],
                "mnx": {"subject_id": turn.subject, "chat_id": turn.chat, "history": True, "log": True,
                        "learn": True, "recall": False}}
        try:
            response = client.post(self.url(turn.gateway) + "/v1/chat/completions", json=body,
                                   headers={"x-mnexium-key": turn.project_key, **TURN_HEADERS})
        except httpx.ConnectError:
            turn.refused_at_connect = True
            return turn
        except httpx.TransportError:  # sent, then the process died: no answer
            return turn
        turn.status, turn.body = response.status_code, response.json()
        return turn


def run_chat(cluster: Cluster3, key: str, subject: str, chat: str, count: int, done: list[Turn],
             pause: float = 0.0) -> None:
    """One user's chat: ``count`` turns one after another, each to the next gateway in turn."""
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            done.append(cluster.send(Turn(cluster.pick(), key, subject, chat, new_message()), client))
            time.sleep(pause)


# --- what the gateways stored ---------------------------------------------------------------------

def get(url: str, path: str, key: str = KEY, **params: Any) -> Any:
    response = httpx.get(url + "/api/v1" + path, params=params, headers={"x-mnexium-key": key}, timeout=15)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def history(url: str, key: str, subject: str, chat: str) -> list[dict[str, Any]]:
    return get(url, "/chat/history/read", key, chat_id=chat, subject_id=subject, limit=1000)["messages"]


def memories(url: str, key: str, subject: str) -> list[dict[str, Any]]:
    return get(url, "/memories", key, subject_id=subject, limit=500)["data"]


def unfinished_jobs(url: str, key: str) -> list[dict[str, Any]]:
    return get(url, "/jobs", key)["data"]


def extractions(provider) -> list[tuple[str, str]]:
    """(extractor model, user message) of every extraction request the provider got: one per job run."""
    found = []
    for request in list(provider.requests):
        model = str(request["body"].get("model", ""))
        if request["path"].endswith("/chat/completions") and model.startswith("extractor"):
            turn = json.loads(request["body"]["messages"][-1]["content"])
            found += [(model, said) for said in turn["user"]]
    return found


def check_history(url: str, turns: list[Turn]) -> None:
    """Each answered turn's message and answer are in its chat exactly once; nothing refused at
    connect is; what else is there (a turn cut by the kill) is there at most once, whole."""
    chats: dict[tuple[str, str, str], list[Turn]] = {}
    for turn in turns:  # in the order each chat's turns were sent
        chats.setdefault((turn.project_key, turn.subject, turn.chat), []).append(turn)
    for (key, subject, chat), group in chats.items():
        stored = history(url, key, subject, chat)
        if all(turn.status == 200 for turn in group):  # a chat's turns go one after another: in that order
            assert [m["content"] for m in stored] == [text for turn in group
                                                      for text in (turn.message, "echo: " + turn.message)], stored
        contents = Counter(m["content"] for m in stored)
        assert max(contents.values(), default=1) == 1, [c for c, n in contents.items() if n > 1]
        for turn in group:
            recorded = contents[turn.message] + contents["echo: " + turn.message]
            if turn.status == 200:
                assert recorded == 2, (chat, turn.message, stored)
            elif turn.refused_at_connect or turn.status is not None:
                assert recorded == 0, (chat, turn.message, turn.status)
            else:  # cut by the kill: recorded whole or not at all
                assert recorded in (0, 2), (chat, turn.message, stored)
        sent = {t.message for t in group} | {"echo: " + t.message for t in group}
        assert set(contents) <= sent, set(contents) - sent


def learned_texts(url: str, key: str, subjects: set[str]) -> list[tuple[str, str, str]]:
    """(subject, id, text) of every active memory of ``subjects``."""
    return [(s, m["id"], m["text"]) for s in sorted(subjects) for m in memories(url, key, s)]


def search_hits(url: str, key: str, subject: str, query: str) -> list[str]:
    data = get(url, "/memories/search", key, subject_id=subject, q=query)
    return [hit["id"] for hit in data["data"]]


def counters(cluster: RedisClusterServers, prefix: str, project: str) -> dict[str, int]:
    """The usage counters the gateways share in the cluster (by counter name, url-quoted)."""
    found = {}
    base = f"{prefix}{{{project}}}:~counters:"
    for port in cluster.ports:
        node = redis.Redis(port=port, decode_responses=True)
        try:
            for key in node.scan_iter(match=base + "*", count=1000):
                found[key[len(base):]] = int(node.get(key) or 0)
        finally:
            node.close()
    return found


def gateway_config(storage: dict[str, Any], vectors: dict[str, Any], provider_url: str,
                   extractor: str) -> dict[str, Any]:
    return {
        "storage": storage,
        "memory": {"vectors": vectors},
        "learning": {"extractor": {"provider": "litellm", "model": extractor},
                     # Short, so the dead gateway's job is claimed again within the test; longer than
                     # one job (batch 1: one job per claim, so a lease covers one job, not sixteen).
                     "lease_seconds": LEASE_SECONDS, "poll_seconds": 0.2, "batch": 1},
        # The configured key runs the jobs another gateway's caller started (their key is not shared).
        # The fake provider is a thread of the test process, which the client threads keep busy:
        # a connect timeout of its own (not the 1 s default here) so a slow accept is no 502.
        "providers": providers_with(provider_url, read=15, connect=10, api_key="sk-configured"),
        "projects": [
            {"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]},
            {"id": "limited", "keys": [{"name": "writer", "key": LIMITED_WRITER, "scopes": ["*"]},
                                       {"name": "reader", "key": LIMITED_READER, "scopes": ["*"]}],
             "limits": {"keys": {"writer": {"memory_actions_per_month": LIMIT}}}},
        ],
    }


@pytest.fixture
def three_gateways(tmp_path, provider, storage_redis_cluster, redis_stack):  # noqa: F811
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    index = f"mnx_three_{secrets.token_hex(6)}"
    vectors = {"backend": "redis", "lexical": "plain",
               "redis": {"url": redis_stack, "key_prefix": prefix + "vectors:", "index": index}}
    gateways = []
    for number, extractor in enumerate([FAST_EXTRACTOR, FAST_EXTRACTOR, SLOW_EXTRACTOR]):
        workdir = tmp_path / f"gateway{number}"
        workdir.mkdir()
        gateways.append(GatewayProcess(gateway_config(storage_redis_cluster, vectors, provider.url, extractor),
                                       workdir))
    try:
        # Started together: each costs seconds of imports, which overlap.
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(GatewayProcess.start, gateways))
        yield Cluster3(gateways)
    finally:
        for number, gateway in enumerate(gateways):
            gateway.stop()
            # Shown by pytest only when the test failed: what each gateway logged.
            print(f"--- gateway {number} log (tail) ---\n{gateway.log()[-4000:]}")
        stack = redis.Redis.from_url(redis_stack)
        with contextlib.suppress(redis.ResponseError):
            stack.execute_command("FT.DROPINDEX", index, "DD")
        keys = list(stack.scan_iter(match=prefix + "*", count=1000))
        if keys:
            stack.delete(*keys)
        stack.close()


def test_three_gateways_on_one_redis_cluster_lose_and_duplicate_nothing_even_when_one_is_killed(
        three_gateways, provider, storage_redis_cluster, redis_cluster):
    cluster = three_gateways
    started = time.monotonic()
    events = Subscriber(SimpleNamespace(api=cluster.url(0) + "/api/v1"))
    limited_events = Subscriber(SimpleNamespace(api=cluster.url(1) + "/api/v1"), key=LIMITED_READER)
    with events, limited_events:
        # --- phase 1: load, nothing fails ----------------------------------------------------------
        subjects = ["alice", "bruno", "chen"]
        open_turns: list[Turn] = []
        limited_turns: list[Turn] = []
        with ThreadPoolExecutor(16) as pool:
            jobs = [pool.submit(run_chat, cluster, KEY, subject, f"{subject}-chat-{c}", 3, open_turns)
                    for subject in subjects for c in range(2)]
            # 3 x LIMIT turns at once on the limited key, each in a chat of its own.
            jobs += [pool.submit(run_chat, cluster, LIMITED_WRITER, "lim", f"lim-chat-{i}", 1, limited_turns)
                     for i in range(3 * LIMIT)]
            for job in jobs:
                job.result()
        assert [t.status for t in open_turns] == [200] * 18, [(t.status, t.body) for t in open_turns]
        for turn in open_turns:
            assert turn.body["choices"][0]["message"]["content"] == "echo: " + turn.message
        admitted = [t for t in limited_turns if t.status == 200]
        refused = [t for t in limited_turns if t.status != 200]
        assert len(admitted) == LIMIT, [(t.status, t.body) for t in limited_turns]
        for turn in refused:
            assert turn.status == 429 and turn.body["error"]["code"] == "usage_limit_exceeded", turn.body
            assert turn.body["error"]["limit"] == LIMIT and turn.body["error"]["current"] == LIMIT, turn.body
        # The one counter the three gateways share holds the admitted turns' actions, no more.
        prefix = storage_redis_cluster["redis"]["key_prefix"]
        [(name, count)] = counters(redis_cluster, prefix, "limited").items()
        assert "writer" in name and "memory_actions_per_month" in name and count == LIMIT, (name, count)
        assert counters(redis_cluster, prefix, "project-a") == {}

        # Learning: all jobs done, on whichever gateway.
        assert wait_until(lambda: not unfinished_jobs(cluster.url(0), KEY)
                          and not unfinished_jobs(cluster.url(0), LIMITED_READER), timeout=30, interval=0.2), (
            unfinished_jobs(cluster.url(0), KEY), unfinished_jobs(cluster.url(0), LIMITED_READER))
        # Each ran once: one extraction per turn, on the provider's side.
        phase1_messages = [t.message for t in open_turns + admitted]
        ran = Counter(said for _, said in extractions(provider))
        assert ran == Counter(phase1_messages), ran
        assert {model for model, _ in extractions(provider)} == {FAST_EXTRACTOR, SLOW_EXTRACTOR}, "one gateway idle"

        # Histories, read through each gateway in turn.
        for index in range(3):
            check_history(cluster.url(index), open_turns + limited_turns)
        # Memories: exactly one per learned turn, the same from every gateway.
        expected = sorted([(t.subject, LEARNED + t.message) for t in open_turns]
                          + [("lim", LEARNED + t.message) for t in admitted])
        stored = learned_texts(cluster.url(0), KEY, set(subjects)) + learned_texts(cluster.url(0), LIMITED_READER,
                                                                                   {"lim"})
        assert sorted((s, text) for s, _, text in stored) == expected
        assert len({memory_id for _, memory_id, _ in stored}) == len(stored)
        for index in (1, 2):
            assert sorted(learned_texts(cluster.url(index), KEY, set(subjects))
                          + learned_texts(cluster.url(index), LIMITED_READER, {"lim"})) == sorted(stored)

        # Searchable from every gateway: a word of its own finds each memory first.
        for subject, memory_id, text in stored:
            key = LIMITED_READER if subject == "lim" else KEY
            word = text.split()[-1]
            for index in range(3):
                assert search_hits(cluster.url(index), key, subject, word)[:1] == [memory_id], (index, text)
        # And recalled into a turn by every gateway.
        for index in range(3):
            subject, _, text = stored[index]
            asked = f"What did I say about {text.split()[-2]}?"
            response = httpx.post(cluster.url(index) + "/v1/chat/completions", timeout=30,
                                  headers={"x-mnexium-key": KEY, **TURN_HEADERS},
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": asked}],
                                        "mnx": {"subject_id": subject, "recall": True, "learn": False,
                                                "log": False, "history": False}})
            assert response.status_code == 200, response.text
            [forwarded] = [r for r in list(provider.requests)
                           if r["body"].get("model") == "gpt-4o-mini" and asked in json.dumps(r["body"])]
            assert text in json.dumps(forwarded["body"]), (index, text)

        # Events: one memory.created per memory, to one subscriber on one gateway.
        open_ids = sorted(m for s, m, _ in stored if s != "lim")
        created = events.wait_for(lambda frames: len(frames) >= len(open_ids), timeout=10)
        assert until_quiet(events, len(open_ids))
        assert sorted(f.data["id"] for f in events.events()) == open_ids
        assert {f.event for f in events.events()} == {"memory.created"}
        assert len({f.id for f in created}) == len(created)
        limited_events.wait_for(lambda frames: len(frames) >= LIMIT, timeout=10)
        assert sorted(f.data["id"] for f in limited_events.events()) == sorted(
            m for s, m, _ in stored if s == "lim")
        phase1 = time.monotonic() - started

        # --- phase 2: gateway 2 is killed while it holds a learn job ------------------------------
        before = len(extractions(provider))
        killed_subjects = ["dara", "emil", "fumi"]
        load_turns: list[Turn] = []
        with ThreadPoolExecutor(6) as pool:
            jobs = [pool.submit(run_chat, cluster, KEY, subject, f"{subject}-chat-{c}", 6, load_turns, 0.05)
                    for subject in killed_subjects for c in range(2)]
            # Gateway 2's extraction request has arrived: it sleeps 1.5 s at the provider, so the
            # job is claimed by gateway 2 and not finished when the kill lands.
            assert wait_until(lambda: sum(1 for model, _ in extractions(provider)[before:]
                                          if model == SLOW_EXTRACTOR) >= 1, timeout=20, interval=0.005)
            in_flight = [said for model, said in extractions(provider)[before:] if model == SLOW_EXTRACTOR][-1]
            cluster.gateways[2].kill()
            answered_before_kill = sum(1 for t in load_turns if t.status == 200)
            for job in jobs:
                job.result()
        assert answered_before_kill >= 1
        answered = [t for t in load_turns if t.status == 200]
        # The survivors answered every turn sent to them (12 each); a turn sent to the dead one got a 200 or nothing.
        assert [t.status for t in load_turns if t.gateway != 2] == [200] * 24, [
            (t.gateway, t.status, t.body) for t in load_turns]
        assert all(t.status in (200, None) for t in load_turns), [(t.status, t.body) for t in load_turns]
        assert any(t.refused_at_connect for t in load_turns), "no turn was sent to the dead gateway"

        survivors = [0, 1]
        # The dead gateway's job is claimed again once its lease ran out, and every job finishes.
        assert wait_until(lambda: not unfinished_jobs(cluster.url(0), KEY), timeout=LEASE_SECONDS + 20,
                          interval=0.2), unfinished_jobs(cluster.url(0), KEY)
        reruns = [model for model, said in extractions(provider)[before:] if said == in_flight]
        assert reruns == [SLOW_EXTRACTOR, FAST_EXTRACTOR], reruns  # on the dead gateway, then on a survivor
        for index in survivors:
            check_history(cluster.url(index), open_turns + limited_turns + load_turns)

        # Learned: each answered turn exactly once; an unanswered one at most once, and only if recorded.
        after = learned_texts(cluster.url(1), KEY, set(killed_subjects))
        texts = Counter(text for _, _, text in after)
        assert max(texts.values()) == 1, [t for t, n in texts.items() if n > 1]
        for turn in answered:
            assert texts[LEARNED + turn.message] == 1, turn.message
        assert texts[LEARNED + in_flight] == 1, in_flight  # the job the dead gateway held
        recorded = {m["content"] for t in load_turns for m in history(cluster.url(0), KEY, t.subject, t.chat)}
        for turn in load_turns:
            if turn.status != 200:
                assert texts[LEARNED + turn.message] <= int(turn.message in recorded), turn.message
        assert set(texts) <= {LEARNED + t.message for t in load_turns}
        assert sorted(after) == sorted(learned_texts(cluster.url(0), KEY, set(killed_subjects)))
        # Phase 1's memories are all still there, once.
        assert sorted(learned_texts(cluster.url(0), KEY, set(subjects))) == sorted(
            (s, m, t) for s, m, t in stored if s != "lim")
        for subject, memory_id, text in after:
            for index in survivors:
                assert search_hits(cluster.url(index), KEY, subject, text.split()[-1])[:1] == [memory_id]

        # Events: still one per memory, none twice.
        all_ids = sorted(open_ids + [m for _, m, _ in after])
        events.wait_for(lambda frames: len(frames) >= len(all_ids), timeout=10)
        assert until_quiet(events, len(all_ids))
        assert sorted(f.data["id"] for f in events.events()) == all_ids
        assert len({f.id for f in events.events()}) == len(all_ids)
    print(f"\nphase 1 {phase1:.1f} s, total {time.monotonic() - started:.1f} s; phase 2: "
          f"{len(answered)}/{len(load_turns)} turns answered, {len(after)} memories")


def until_quiet(subscriber: Subscriber, count: int, seconds: float = 1.0) -> bool:
    """The subscriber holds ``count`` events and still does ``seconds`` later (no late duplicate)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(subscriber.events()) != count:
            return False
        time.sleep(0.05)
    return len(subscriber.events()) == count
