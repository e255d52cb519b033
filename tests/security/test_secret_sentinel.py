"""Provider keys appear nowhere the gateway writes: not in stores, logs, job rows, errors,
or any REST read.

Two sentinel keys go through a gateway whose provider echoes every key it receives in
its 401s (as some do): the operator's configured key and a caller's own key. Learning
runs an LLM extractor that fails that way on every attempt; chats hit the same echo on
the native and LiteLLM paths. Then every place a key could have landed is searched for
either sentinel: the SQLite file and its write-ahead log byte by byte (or every Redis
key the gateway wrote), every log record, every error answer, the jobs' ``last_error``,
and every REST read. The finding this keeps closed: a provider 401 echoing ``Bearer
sk-...`` put the key into ``GET /jobs`` (readable with a read-only key), the log and the
SQLite WAL, and the caller's key was reused on every retry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import KEY, REDIS_URL, wait_until

# Not shaped like any provider's key: only redaction by value can catch them.
OPERATOR_KEY = "operator-SENTINEL-7f3a9c2e"
CALLER_KEY = "caller-SENTINEL-91b2d4aa"
READ_ONLY_KEY = "mnx_live_read_only_key_for_sentinel"
SENTINELS = (OPERATOR_KEY, CALLER_KEY)


def _leaks(text: str) -> list[str]:
    return [sentinel for sentinel in SENTINELS if sentinel in text]


@pytest.fixture
def echoing_gateway(start_gateway, storage, provider):
    return start_gateway(
        storage,
        projects=[{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                               {"name": "reader", "key": READ_ONLY_KEY, "scopes": ["read"]}]}],
        providers={"openai": {"api_base": provider.url + "/v1", "api_key": OPERATOR_KEY},
                   "anthropic": {"api_base": provider.url, "api_key": OPERATOR_KEY},
                   "gemini": {"api_base": provider.url + "/v1beta"}},
        learning={"extractor": {"provider": "litellm", "model": "extractor-echo-key-401"},
                  "retry_base_seconds": 0.2, "poll_seconds": 0.1},
    )


def _turn(gateway, model: str, caller_key: str | None, **mnx) -> httpx.Response:
    headers = {"x-mnexium-key": KEY, **({"x-openai-key": caller_key} if caller_key else {})}
    return httpx.post(gateway.url + "/v1/chat/completions", headers=headers, timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "I live in Lisbon and my favorite fruit is fig"}],
        "mnx": {"subject_id": "sentinel-subject", "chat_id": "sentinel-chat", **mnx}})


def _stored_text(gateway) -> str:
    storage = gateway.config.storage
    if storage.backend == "sqlite":
        database = Path(storage.sqlite.path)
        files = [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]
        return "".join(file.read_bytes().decode("latin-1") for file in files if file.exists())
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    texts = []
    for key in client.scan_iter(match=storage.redis.key_prefix + "*", count=1000):
        kind = client.type(key)
        read = {"string": client.get, "hash": client.hgetall,
                "zset": lambda name: client.zrange(name, 0, -1, withscores=True), "set": client.smembers,
                "list": lambda name: client.lrange(name, 0, -1)}.get(kind, lambda name: "")
        value = read(key)
        texts.append(f"{key} {value}")
    return "\n".join(texts)


def _rest_reads(gateway) -> list[str]:
    """Every REST read a read-only key can make about the subject and the project."""
    reads = [("/jobs", {}), ("/memories", {"subject_id": "sentinel-subject", "include_deleted": "true",
                                            "include_superseded": "true"}),
             ("/memories/search", {"subject_id": "sentinel-subject", "q": "Lisbon"}),
             ("/memories/superseded", {"subject_id": "sentinel-subject"}),
             ("/memories/recalls", {"chat_id": "sentinel-chat"}),
             ("/chat/history/list", {"subject_id": "sentinel-subject"}),
             ("/chat/history/read", {"subject_id": "sentinel-subject", "chat_id": "sentinel-chat"}),
             ("/prompts", {}), ("/memory/policies", {}),
             ("/memory/policies/resolve", {"subject_id": "sentinel-subject"})]
    with gateway.rest(READ_ONLY_KEY) as rest:
        return [f"{path}: {rest.get(path, params=params).text}" for path, params in reads]


def test_no_key_is_kept_in_stores_logs_job_errors_answers_or_reads(echoing_gateway, caplog):
    caplog.set_level(logging.DEBUG)
    gateway = echoing_gateway
    answers = []
    # Learning from a turn made with the caller's key: the extractor's provider echoes it (401),
    # then the operator's configured key on every retry.
    learned = _turn(gateway, "gpt-4o-mini", CALLER_KEY, learn=True)
    assert learned.status_code == 200
    assert wait_until(lambda: any(job["attempts"] >= 3
                                  for job in gateway.rest(READ_ONLY_KEY).get("/jobs").json()["data"]),
                      timeout=15)
    # Chats whose provider echoes the key: configured and caller's, native and through LiteLLM.
    for model, caller_key in (("gpt-echo-key-401", None), ("gpt-echo-key-401", CALLER_KEY),
                              ("claude-echo-key-401", None)):
        failed = _turn(gateway, model, caller_key, learn=False)
        assert failed.status_code == 401, failed.text
        answers.append(failed.text)
        assert "Incorrect API key provided" in failed.text  # the provider's message still reaches the caller

    jobs = gateway.rest(READ_ONLY_KEY).get("/jobs").json()["data"]
    assert jobs and all("[redacted]" in job["last_error"] for job in jobs), jobs
    assert not _leaks(str(jobs))
    assert not _leaks("\n".join(answers))
    assert not _leaks("\n".join(_rest_reads(gateway)))
    assert not _leaks(caplog.text + "".join(str(record.__dict__) for record in caplog.records))
    assert not _leaks(_stored_text(gateway))

    # The caller's key paid for the first extraction only; every retry used the configured key.
    extractions = [request["headers"]["authorization"] for request in gateway.forwarded()
                   if request["body"].get("model") == "extractor-echo-key-401"]
    assert extractions[0] == f"Bearer {CALLER_KEY}"
    assert len(extractions) >= 3 and set(extractions[1:]) == {f"Bearer {OPERATOR_KEY}"}
