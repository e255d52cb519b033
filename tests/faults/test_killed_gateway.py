"""A gateway process SIGKILLed in the middle of background work, then started again.

Faults injected: ``kill -9`` of a gateway subprocess (no shutdown code runs, nothing is
flushed) at the worst moments a crash can hit:

* while a learn job is half-way through its writes (one memory stored, the next one's
  embedding in flight), on Redis: once the dead process's lease expires the job runs
  again and stores each memory exactly once, because memory ids derive from the job id;
* while ``DELETE /subjects/{id}`` waits for a learn job that is writing that subject's
  memory: after the restart nothing of the subject may come back, no learn job for it may
  be left to run, and the erasure can simply be repeated.

And the same erasure without the crash: it answers only once the writer has finished, and
what the writer stored is erased too.

tests/test_learning.py covers a kill before any write, on SQLite. Slowness comes from the
fake provider: ``extractor`` answers at once, embeddings of model ``sleep-<secs>`` wait.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import httpx
import pytest

from gateway.memory.learning import memory_id_for
from tests.conftest import KEY, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, require_redis, wait_until
from tests.faults.conftest import history_of, jobs_of, memories_of, providers_with, until_stable

PROJECT = [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]}]


def embedding_requests(provider, model: str) -> int:
    return len([r for r in provider.requests if r["path"].endswith("/embeddings") and r["body"].get("model") == model])


def chat(url: str, subject: str, *texts: str, learn: Any = True) -> httpx.Response:
    response = httpx.post(url + "/v1/chat/completions", timeout=30,
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t} for t in texts],
                                "mnx": {"subject_id": subject, "chat_id": f"{subject}-chat", "learn": learn}})
    assert response.status_code == 200, response.text
    return response


def embedded_memory(provider, tmp_path, model: str) -> dict[str, Any]:
    """A dense embedder at the fake (its ``sleep-<secs>`` model is slow), and an index of the test's own."""
    return {"embedder": {"provider": "litellm", "model": f"openai/{model}", "dimensions": 32},
            "vectors": {"edge": {"path": str(tmp_path / f"memories-{secrets.token_hex(3)}")}}}


@pytest.fixture
def shared_storage():
    """The shared Redis, under a prefix of the test's own. (The same test on SQLite passes too; it
    is left out for time: the learner's exactly-once logic is the same on both, and
    tests/test_learning.py covers SQLite's re-run after a restart.)"""
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    drop_redis_prefix(prefix)


def test_a_gateway_killed_half_way_through_a_learn_job_stores_each_memory_exactly_once_after_restart(
        provider, tmp_path, gateway_process, start_gateway, shared_storage):
    embedder = "sleep-3"
    sections = {
        "providers": providers_with(provider.url, read=10, api_key="sk-configured"),
        "memory": embedded_memory(provider, tmp_path, embedder),
        # Longer than the job's first run (one 3 s embedding of both texts), so only the crash makes
        # it run again.
        "learning": {"extractor": {"provider": "litellm", "model": "extractor"}, "lease_seconds": 8,
                     "poll_seconds": 0.2},
    }
    first = gateway_process({"storage": shared_storage, "projects": PROJECT, **sections}).start()
    chat(first.url, "bees", "I keep honeybees", "I grow lavender for them")
    [job] = [j for j in jobs_of(first.url) if j["kind"] == "learn"]
    # The job has extracted its two memories and is embedding them (one call for both, then each is
    # stored): killed there, it has paid for work it must do again. (A run killed after storing part of
    # its memories: tests/faults/test_event_durability.py's learn job, re-run without a duplicate.)
    # (The first learn job of a process is slow to start under load: LiteLLM's first call.)
    assert wait_until(lambda: embedding_requests(provider, embedder) >= 1, timeout=60)
    assert memories_of(first.url, "bees") == []  # within the 3 s the embedding takes
    first.kill()

    second = restarted(start_gateway, shared_storage, sections)
    assert wait_until(lambda: len(memories_of(second.url, "bees")) >= 2 and not jobs_of(second.url), timeout=40)
    assert until_stable(lambda: len(memories_of(second.url, "bees")) == 2, seconds=1)
    stored = memories_of(second.url, "bees", include_deleted="true")
    assert sorted((m["id"], m["text"]) for m in stored) == sorted([
        (memory_id_for(job["id"], 0), "User said: I keep honeybees"),
        (memory_id_for(job["id"], 1), "User said: I grow lavender for them")])
    # The turn itself was recorded once, before the crash.
    assert [m["role"] for m in history_of(second.url, "bees-chat")] == ["user", "user", "assistant"]


def restarted(start_gateway, storage: dict[str, Any], sections: dict[str, Any]):
    """The gateway again, on the same storage and index, once the killed process is gone. It
    runs in the test process (starting a subprocess costs seconds of imports): the same code
    on the same data, which is what a restart is."""
    return start_gateway(storage, **sections)


class PendingDelete(threading.Thread):
    """``DELETE /subjects/{id}`` sent in the background (it waits for writers); ``done`` when answered."""

    def __init__(self, url: str, subject: str) -> None:
        super().__init__(daemon=True)
        self.url, self.subject = url, subject
        self.response: httpx.Response | None = None
        self.failure: BaseException | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.response = httpx.delete(f"{self.url}/api/v1/subjects/{self.subject}", headers={"x-mnexium-key": KEY},
                                         timeout=30)
        except BaseException as error:
            self.failure = error
        self.elapsed = time.monotonic() - started


def test_a_gateway_killed_while_an_erasure_waits_for_a_writer_leaves_nothing_to_resurrect(
        provider, tmp_path, gateway_process, start_gateway):
    embedder = "sleep-3"
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "erasure.db")}}
    sections = {"providers": providers_with(provider.url, read=10, api_key="sk-configured"),
                "memory": embedded_memory(provider, tmp_path, embedder)}
    first = gateway_process({"storage": storage, "projects": PROJECT, **sections}).start()
    chat(first.url, "forget-me", "Remember the code word is pineapple-seven", learn="force")
    # The learn job is inside its write section, waiting 3 s for the memory's embedding.
    assert wait_until(lambda: embedding_requests(provider, embedder) >= 1, timeout=10)
    erasing = PendingDelete(first.url, "forget-me")
    erasing.start()
    time.sleep(0.7)
    assert erasing.is_alive(), "the erasure should still be waiting for the writer"
    first.kill()
    erasing.join(10)
    assert erasing.response is None  # the client never got an answer: it must retry

    second = restarted(start_gateway, storage, sections)
    assert [j for j in jobs_of(second.url) if j["subject_id"] == "forget-me"] == []
    response = httpx.delete(second.url + "/api/v1/subjects/forget-me", headers={"x-mnexium-key": KEY}, timeout=30)
    assert response.status_code == 200, response.text
    assert memories_of(second.url, "forget-me", include_deleted="true") == []
    assert history_of(second.url, "forget-me-chat", "forget-me") == []
    assert until_stable(lambda: memories_of(second.url, "forget-me", include_deleted="true") == []
                        and jobs_of(second.url) == [], seconds=4)


def test_an_erasure_answers_only_after_a_running_writer_finished_and_erases_what_it_wrote(
        provider, tmp_path, start_gateway, storage_sqlite):
    embedder = "sleep-1.5"
    gw = start_gateway(storage_sqlite, providers=providers_with(provider.url, read=10, api_key="sk-configured"),
                       memory=embedded_memory(provider, tmp_path, embedder), defaults={"learn": False})
    chat(gw.url, "forget-me-too", "Remember the code word is mango-nine", learn="force")
    assert wait_until(lambda: embedding_requests(provider, embedder) >= 1, timeout=10)
    erasing = PendingDelete(gw.url, "forget-me-too")
    erasing.start()
    erasing.join(30)
    assert erasing.failure is None and erasing.response is not None
    assert erasing.response.status_code == 200, erasing.response.text
    # It waited for the writer's embedding (1.5 s from when it was asked for), then erased its memory.
    assert erasing.elapsed >= 1.0, erasing.elapsed
    assert erasing.response.json()["erased"]["memories"] == 1, erasing.response.json()
    assert memories_of(gw.url, "forget-me-too", include_deleted="true") == []
    assert history_of(gw.url, "forget-me-too-chat", "forget-me-too") == []
    assert until_stable(lambda: memories_of(gw.url, "forget-me-too", include_deleted="true") == []
                        and jobs_of(gw.url) == [], seconds=2)
