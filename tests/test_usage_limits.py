"""Usage limits (contract §2, gateway/usage_limits.py): requests per minute, memory actions per
month and tokens per day, per project and per key name, on both backends; the 429 in every
surface's shape and through both SDKs; windows rolling over; exactly ``limit`` successes
under concurrency, across gateways and processes."""

from __future__ import annotations

import asyncio
import calendar
import multiprocessing
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from mnexium import Mnexium, ProcessOptions, ProviderConfig, RateLimitError  # type: ignore[import-untyped]

from gateway.auth import Principal
from gateway.config import parse_config
from gateway.store.base import Charge
from gateway.usage_limits import UsageLimiter, UsageLimitExceeded
from tests.conftest import KEY, KEY_B, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, require_redis

KEY_CI = "mnx_live_test_key_project_a_ci"
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def limited(start_gateway, storage: dict[str, Any], **limits: Any):
    """A gateway whose project-a (keys "main" and "ci") has ``limits``."""
    projects = [
        {"id": "project-a", "limits": limits, "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                                        {"name": "ci", "key": KEY_CI, "scopes": ["*"]}]},
        {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]},
    ]
    return start_gateway(storage, projects=projects)


def chat(gateway, key: str = KEY, **mnx: Any) -> httpx.Response:
    body = {**CHAT, "mnx": {"subject_id": "usage-subject", **mnx}}
    return httpx.post(gateway.api + "/chat/completions", json=body, timeout=30,
                      headers={"x-mnexium-key": key, "x-openai-key": PROVIDER_KEY})


def assert_refused(response: httpx.Response, current: int, limit: int, window_seconds: float) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    # The REST shape has the code in "error"; /chat/completions, OpenAI's, in "error.code" (and the
    # counts also in the error object); both carry "message", "current" and "limit" at the top.
    code = body["error"] if isinstance(body["error"], str) else body["error"]["code"]
    assert (code, body["current"], body["limit"]) == ("usage_limit_exceeded", current, limit)
    assert body["message"]
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds


def test_requests_per_minute_per_project(start_gateway, storage):
    gateway = limited(start_gateway, storage, requests_per_minute=3)
    with gateway.rest() as rest, gateway.rest(KEY_CI) as ci, gateway.rest(KEY_B) as other:
        assert [rest.get("/chat/history/list", params={"subject_id": "s"}).status_code,
                ci.get("/prompts").status_code, rest.get("/prompts").status_code] == [200, 200, 200]
        assert_refused(rest.get("/prompts"), current=3, limit=3, window_seconds=60)
        assert_refused(ci.get("/prompts"), current=3, limit=3, window_seconds=60)
        # Another project has its own counts (and no limits).
        assert all(other.get("/prompts").status_code == 200 for _ in range(5))


def test_requests_per_minute_per_key(start_gateway, storage):
    gateway = limited(start_gateway, storage, keys={"ci": {"requests_per_minute": 2}})
    with gateway.rest() as rest, gateway.rest(KEY_CI) as ci:
        assert [ci.get("/prompts").status_code for _ in range(2)] == [200, 200]
        refused = ci.get("/prompts")
        assert_refused(refused, current=2, limit=2, window_seconds=60)
        assert "'ci'" in refused.json()["message"]
        # The project's other key is not limited.
        assert all(rest.get("/prompts").status_code == 200 for _ in range(5))


def test_a_stored_keys_limit_by_its_name(start_gateway, storage):
    """A key made at run time (`mnx-gateway keys create --name batch`) is limited by its name."""
    gateway = limited(start_gateway, storage, keys={"batch": {"requests_per_minute": 2}})

    async def make_key() -> str:
        from gateway.keys.store import KeyStore
        from gateway.store.redis import RedisDocumentStore
        from gateway.store.sqlite import SqliteDocumentStore

        store: Any = (SqliteDocumentStore(storage["sqlite"]["path"]) if storage["backend"] == "sqlite"
                      else RedisDocumentStore(storage["redis"]["url"], storage["redis"]["key_prefix"]))
        try:
            key, _ = await KeyStore(store).create("project-a", name="batch")
        finally:
            await store.close()
        return key

    with gateway.rest(asyncio.run(make_key())) as batch, gateway.rest() as rest:
        assert [batch.get("/prompts").status_code for _ in range(2)] == [200, 200]
        refused = batch.get("/prompts")
        assert_refused(refused, current=2, limit=2, window_seconds=60)
        assert "'batch'" in refused.json()["message"]
        assert rest.get("/prompts").status_code == 200


def test_memory_actions_per_month(start_gateway, storage):
    gateway = limited(start_gateway, storage, keys={"ci": {"memory_actions_per_month": 4}})
    month_left = _seconds_to_next_month()
    with gateway.rest() as rest, gateway.rest(KEY_CI) as ci:
        created = ci.post("/memories", json={"subject_id": "usage-subject", "text": "likes tea"})
        assert created.status_code in (200, 201), created.text  # 1: memory.create
        assert ci.get("/memories", params={"subject_id": "usage-subject"}).status_code == 200  # 2: memory.list
        # A turn that neither recalls nor learns is no memory action.
        assert chat(gateway, KEY_CI).status_code == 200
        assert chat(gateway, KEY_CI, recall=True, learn=True).status_code == 200  # 3 and 4: search, create
        forwarded = len(gateway.forwarded())
        assert_refused(chat(gateway, KEY_CI, recall=True, learn=False), current=4, limit=4,
                       window_seconds=month_left + 5)
        assert len(gateway.forwarded()) == forwarded  # refused before forwarding
        assert_refused(ci.post("/memories", json={"subject_id": "usage-subject", "text": "likes coffee"}),
                       current=4, limit=4, window_seconds=month_left + 5)
        # Nothing of the refused calls was stored (read with the key that has no limit).
        texts = [m["text"] for m in rest.get("/memories", params={"subject_id": "usage-subject"}).json()["data"]]
        assert "likes coffee" not in texts and "likes tea" in texts
        # Other routes still answer for the limited key.
        assert ci.get("/prompts").status_code == 200


def test_tokens_per_day_counted_after_each_answer(start_gateway, storage):
    gateway = limited(start_gateway, storage, tokens_per_day=20)
    assert chat(gateway).status_code == 200  # 15 tokens (the fake provider's usage)
    assert chat(gateway).status_code == 200  # 15 < 20 before it: allowed, 30 after
    forwarded = len(gateway.forwarded())
    assert_refused(chat(gateway), current=30, limit=20, window_seconds=86_400)
    assert len(gateway.forwarded()) == forwarded
    # Tokens limit proxied turns only: the REST API still answers.
    with gateway.rest() as rest:
        assert rest.get("/memories", params={"subject_id": "usage-subject"}).status_code == 200


def test_tokens_of_a_streamed_turn_count(start_gateway, storage):
    gateway = limited(start_gateway, storage, tokens_per_day=10)
    client = gateway.openai()
    stream = client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "echo: hello"
    assert_refused(chat(gateway), current=15, limit=10, window_seconds=86_400)


def test_a_stream_that_reports_no_usage_is_counted_by_estimate(start_gateway, storage_sqlite):
    """OpenAI's Chat Completions stream usage only when the client asks (stream_options); a stream
    without it must not be free under a token limit."""
    gateway = limited(start_gateway, storage_sqlite, tokens_per_day=10)
    client = gateway.openai()
    stream = client.chat.completions.create(**CHAT, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "echo: hello"
    # Estimated (about four characters a token of the forwarded body and the answer): past 10.
    response = chat(gateway)
    assert response.status_code == 429 and response.json()["current"] > 10


def test_tokens_count_on_every_surface_streamed_or_not(start_gateway, storage_sqlite):
    """Each surface's own usage shape (Anthropic, Gemini, Responses; whole answers and streams): 15
    tokens a turn from the fake provider, so six turns reach a limit of 90 exactly."""
    gateway = limited(start_gateway, storage_sqlite, tokens_per_day=90)
    anthropic_headers = {"x-mnexium-key": KEY, "x-api-key": "sk-ant-test"}
    gemini_headers = {"authorization": f"Bearer {KEY}", "x-goog-api-key": "google-test"}
    openai_headers = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}
    hello = [{"role": "user", "content": "hi"}]
    for stream in (False, True):
        answers = [
            httpx.post(gateway.url + "/v1/messages", headers=anthropic_headers, timeout=30,
                       json={"model": "claude-3-5-haiku", "max_tokens": 10, "messages": hello, "stream": stream}),
            httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:"
                       + ("streamGenerateContent?alt=sse" if stream else "generateContent"),
                       headers=gemini_headers, timeout=30,
                       json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            httpx.post(gateway.api + "/responses", headers=openai_headers, timeout=30,
                       json={"model": "gpt-4o-mini", "input": "hi", "stream": stream}),
        ]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert_refused(chat(gateway), current=90, limit=90, window_seconds=86_400)


def test_the_429_in_each_surfaces_shape_and_through_both_sdks(start_gateway, storage_sqlite):
    gateway = limited(start_gateway, storage_sqlite, requests_per_minute=1)
    with gateway.rest() as rest:
        assert rest.get("/prompts").status_code == 200
    gateway.provider.requests.clear()

    # OpenAI SDK: its RateLimitError, the code and counts in the error object.
    with pytest.raises(openai.RateLimitError) as raised:
        gateway.openai().chat.completions.create(**CHAT)
    assert raised.value.code == "usage_limit_exceeded"
    body = raised.value.body
    assert isinstance(body, dict) and (body["current"], body["limit"]) == (1, 1)
    assert int(raised.value.response.headers["retry-after"]) >= 1

    # Anthropic's envelope.
    anthropic = httpx.post(gateway.url + "/v1/messages", timeout=30,
                           json={"model": "claude-3-5-haiku", "max_tokens": 10,
                                 "messages": [{"role": "user", "content": "hi"}]},
                           headers={"x-mnexium-key": KEY, "x-api-key": "sk-ant-test"})
    assert anthropic.status_code == 429 and anthropic.headers["retry-after"]
    assert anthropic.json()["type"] == "error"
    assert {k: anthropic.json()["error"][k] for k in ("type", "code", "current", "limit")} == {
        "type": "rate_limit_error", "code": "usage_limit_exceeded", "current": 1, "limit": 1}

    # Gemini's: RESOURCE_EXHAUSTED, the reason and counts in its ErrorInfo.
    gemini = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent", timeout=30,
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                        headers={"authorization": f"Bearer {KEY}", "x-goog-api-key": "google-test"})
    assert gemini.status_code == 429 and gemini.headers["retry-after"]
    error = gemini.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["reason"] == "usage_limit_exceeded"
    assert error["details"][0]["metadata"] == {"current": "1", "limit": "1"}

    # The mnexium SDK: RateLimitError(current, limit), from the REST API and from a chat turn.
    sdk = Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0, openai=ProviderConfig(api_key=PROVIDER_KEY))
    try:
        with pytest.raises(RateLimitError) as limited_rest:
            sdk.subject("usage-subject").memories.list()
        assert (limited_rest.value.current, limited_rest.value.limit) == (1, 1)
        with pytest.raises(RateLimitError) as limited_chat:
            sdk.process(ProcessOptions(content="hi", subject_id="usage-subject", learn=False))
        assert (limited_chat.value.current, limited_chat.value.limit) == (1, 1)
    finally:
        sdk.close()
    assert gateway.forwarded() == []


async def test_windows_roll_over(store):
    """With the clock in hand: a minute's requests and a month's memory actions start again with
    the next window, and Retry-After counts down to it."""
    config = parse_config({"projects": [{"id": "p1", "keys": [{"name": "main", "key": KEY}], "limits": {
        "requests_per_minute": 2, "memory_actions_per_month": 1}}]})
    # In the future: the store forgets a counter once its window has ended by the real clock.
    year = datetime.now(UTC).year + 2
    now = [datetime(year, 1, 31, 23, 59, 30, tzinfo=UTC).timestamp()]
    limiter = UsageLimiter(store, config.projects, clock=lambda: now[0])
    principal = Principal("p1", "main", frozenset({"*"}))
    await limiter.admit(principal, "/memories", proxy=False)
    await limiter.admit(principal, "/prompts", proxy=False)
    with pytest.raises(UsageLimitExceeded) as raised:
        await limiter.admit(principal, "/prompts", proxy=False)
    assert (raised.value.extra, raised.value.headers) == ({"current": 2, "limit": 2}, {"Retry-After": "30"})
    now[0] += 30  # February 1st, 00:00:00: a new minute and a new month
    await limiter.admit(principal, "/memories", proxy=False)
    with pytest.raises(UsageLimitExceeded) as raised:
        await limiter.admit(principal, "/memories", proxy=False)
    assert raised.value.extra == {"current": 1, "limit": 1}
    assert raised.value.headers == {"Retry-After": str(calendar.monthrange(year, 2)[1] * 86_400)}  # to March 1st


def test_concurrent_requests_on_two_gateways_get_exactly_the_limit(start_gateway, storage):
    """Two gateways sharing one store, 30 requests at once through both: exactly 11 pass."""
    first = limited(start_gateway, storage, memory_actions_per_month=11)
    second = limited(start_gateway, storage, memory_actions_per_month=11)

    def call(index: int) -> int:
        gateway = (first, second)[index % 2]
        return httpx.get(gateway.api + "/memories", params={"subject_id": "race"}, timeout=30,
                         headers={"x-mnexium-key": KEY}).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(call, range(30)))
    assert sorted(statuses) == [200] * 11 + [429] * 19


def _charge_many(storage: dict[str, Any], tries: int, results: Any) -> None:
    """One process's share of the race: its own store connection, ``tries`` charges of 1."""
    from gateway.store.redis import RedisDocumentStore
    from gateway.store.sqlite import SqliteDocumentStore

    async def run() -> int:
        store: Any = (SqliteDocumentStore(storage["path"]) if "path" in storage
                      else RedisDocumentStore(storage["url"], storage["prefix"], cluster=storage["cluster"]))
        later = time.time() + 60
        admitted = 0
        for _ in range(tries):
            admitted += (await store.charge("p1", [Charge("race", 1, 40, later)])).refused is None
        await store.close()
        return admitted

    results.put(asyncio.run(run()))


@pytest.mark.parametrize("backend", ["sqlite", "redis", "redis-cluster"])
def test_concurrent_charges_from_four_processes_admit_exactly_the_limit(backend, tmp_path, request):
    cluster = request.getfixturevalue("redis_cluster") if backend == "redis-cluster" else None
    storage: dict[str, Any]
    if cluster is not None:
        storage = {"url": cluster.url, "prefix": f"mnxtest:{secrets.token_hex(6)}:", "cluster": True}
    elif backend == "redis":
        require_redis()
        storage = {"url": REDIS_URL, "prefix": f"mnxtest:{secrets.token_hex(6)}:", "cluster": False}
    else:
        storage = {"path": str(tmp_path / "race.db")}
        from gateway.store.sqlite import SqliteDocumentStore

        asyncio.run(SqliteDocumentStore(storage["path"]).close())  # the file and its schema, made once
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_charge_many, args=(storage, 25, results)) for _ in range(4)]
    try:
        for process in processes:
            process.start()
        admitted = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
        if cluster is not None:
            cluster.drop_prefix(storage["prefix"])
        elif backend == "redis":
            drop_redis_prefix(storage["prefix"])
    assert sum(admitted) == 40


def _seconds_to_next_month() -> float:
    now = datetime.now(UTC)
    following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return following.timestamp() - now.timestamp()
