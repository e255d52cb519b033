"""A subject's erasure is final: nothing queued, running or in flight before it writes the
subject's data back afterwards, on both backends (gateway/erasure.py).

The finding this keeps closed: ``DELETE /subjects/{id}`` right after 300 ``learn: "force"``
turns left 28 queued jobs holding the subject's words, and seconds later 29 memories
were back. Each test erases while a different kind of work is under way: jobs waiting in
the queue, a job inside its write (an embedding call in progress), a turn still waiting
for the provider. Then it checks, and checks again a little later, that nothing of the
subject exists; and that the SQLite file no longer holds the erased words.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import KEY, PROVIDER_KEY, edge_memory, wait_until

SUBJECT = "erase-me"
TEXT = "My favorite mountain is Aconcagua"


def _turn(gateway, text: str = TEXT, *, model: str = "gpt-4o-mini", chat_id: str = "erase-chat",
          **mnx: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                      json={"model": model, "messages": [{"role": "user", "content": text}],
                            "mnx": {"subject_id": SUBJECT, "chat_id": chat_id, "learn": "force", "log": True,
                                    "history": True, **mnx}})


def _erase(gateway) -> dict[str, Any]:
    with gateway.rest() as rest:
        response = rest.delete(f"/subjects/{SUBJECT}")
    assert response.status_code == 200, response.text
    return response.json()["erased"]


def _left(gateway) -> dict[str, Any]:
    """Everything the REST API still shows of the subject."""
    with gateway.rest() as rest:
        return {
            "memories": rest.get("/memories", params={"subject_id": SUBJECT, "include_deleted": "true",
                                                      "include_superseded": "true"}).json()["data"],
            "chats": rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"],
            "jobs": [job for job in rest.get("/jobs").json()["data"] if job["subject_id"] == SUBJECT],
            "found": rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "mountain"},
                              headers={"x-openai-key": PROVIDER_KEY}).json()["data"],
        }


def _stays_erased(gateway, seconds: float = 2.0) -> None:
    nothing = {"memories": [], "chats": [], "jobs": [], "found": []}
    assert _left(gateway) == nothing
    time.sleep(seconds)  # long enough for any job that escaped to have written
    assert _left(gateway) == nothing


def test_queued_learn_jobs_do_not_bring_the_subject_back(start_gateway, storage):
    # Each extraction takes 1 s, so most of these turns' jobs are still queued at the erasure.
    gateway = start_gateway(storage, learning={"extractor": {"provider": "litellm", "model": "extractor-sleep-1"},
                                               "poll_seconds": 0.1})
    for number in range(12):
        assert _turn(gateway, f"{TEXT}, note {number}", chat_id=f"erase-chat-{number}").status_code == 200
    erased = _erase(gateway)
    _stays_erased(gateway)
    assert erased.get("jobs", 0) >= 5, erased  # most were still queued, and were deleted


def test_a_job_writing_when_the_erasure_starts_finishes_before_it_and_is_erased(start_gateway, storage, tmp_path,
                                                                                 provider):
    # The embedding call inside the job's write takes 2 s: the erasure has to wait for it.
    gateway = start_gateway(storage, memory={**edge_memory(tmp_path / "index"), "embedder": {
        "provider": "litellm", "model": "openai/sleep-2", "dimensions": 32}})
    assert _turn(gateway).status_code == 200
    assert wait_until(lambda: any(r["path"].endswith("/embeddings") for r in provider.requests), timeout=10)
    started = time.monotonic()
    _erase(gateway)
    assert time.monotonic() - started >= 0.8  # it waited for the writer inside its write
    _stays_erased(gateway)


def test_a_turn_answered_after_the_erasure_records_nothing(start_gateway, storage):
    gateway = start_gateway(storage)
    answer: dict[str, httpx.Response] = {}
    chat = threading.Thread(target=lambda: answer.setdefault("response", _turn(gateway, model="sleep-1.5")))
    chat.start()
    time.sleep(0.5)  # the turn is waiting for the provider
    _erase(gateway)
    chat.join()
    assert answer["response"].status_code == 200  # the caller still gets its answer...
    _stays_erased(gateway)                         # ...but the erased subject is not written again


def test_a_turn_after_the_erasure_is_recorded_as_usual(start_gateway, storage):
    gateway = start_gateway(storage)
    _erase(gateway)
    assert _turn(gateway).status_code == 200
    with gateway.rest() as rest:
        assert len(rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"]) == 1
    assert wait_until(lambda: _left(gateway)["memories"])


def test_the_erased_words_are_gone_from_the_sqlite_file(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    assert _turn(gateway).status_code == 200
    assert wait_until(lambda: _left(gateway)["memories"])
    _erase(gateway)
    database = Path(storage_sqlite["sqlite"]["path"])
    files = [database, database.with_name(database.name + "-wal")]
    raw = b"".join(file.read_bytes() for file in files if file.exists())
    assert b"Aconcagua" not in raw
