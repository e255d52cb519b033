"""Learning from conversations (mnx.learn) under memory policies, through real chat traffic."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import pytest
import yaml

from gateway.config import parse_config
from gateway.jobs.queue import Job
from gateway.memory import statements
from gateway.memory.learning import LEARN_JOB, learn_payload
from gateway.memory_policies import combine
from gateway.services import Services
from plugins.extractors import heuristic_memories
from tests.gateway_process import free_port, serve
from tests.conftest import KEY, PROVIDER_KEY, edge_memory, wait_until

SUBJECT = "learner"


def turn(gateway, text: str, *, stream: bool = False, model: str = "gpt-4o-mini", chat_id: str = "learn-chat",
         **mnx: Any) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": SUBJECT, "chat_id": chat_id, "history": False, "learn": True, **mnx}}
    with httpx.Client(timeout=30) as client:
        response = client.post(gateway.url + "/v1/chat/completions", json=body,
                               headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
        response.read()
    return response


def memories(gateway, subject: str = SUBJECT, **params: Any) -> list[dict[str, Any]]:
    with gateway.rest() as rest:
        return rest.get("/memories", params={"subject_id": subject, **params}).json()["data"]


def jobs(gateway) -> list[dict[str, Any]]:
    with gateway.rest() as rest:
        return rest.get("/jobs").json()["data"]


def learned(gateway, count: int, **params: Any) -> list[dict[str, Any]]:
    assert wait_until(lambda: len(memories(gateway, **params)) >= count and not jobs(gateway)), (
        memories(gateway, **params), jobs(gateway))
    return memories(gateway, **params)


def settle(gateway) -> None:
    """Wait until no learn job is left (so "nothing was learned" is not just "not yet")."""
    assert wait_until(lambda: not jobs(gateway))


# --- the heuristic extractor (the offline default) ------------------------------------------

SHOULD_LEARN = [
    ("My favorite fruit is blueberry.", "User's favorite fruit is blueberry", "preference"),
    ("My new favorite fruit is strawberry!", "User's new favorite fruit is strawberry", "preference"),
    ("I love hiking with my dog on weekends", "User loves hiking with their dog on weekends", "preference"),
    ("I really enjoy Italian food", "User enjoys Italian food", "preference"),
    ("I don't like spicy food", "User does not like spicy food", "preference"),
    ("My name is Priya", "User's name is Priya", "fact"),
    ("I'm 34 years old", "User is 34 years old", "fact"),
    ("I am a nurse at the city hospital", "User is a nurse at the city hospital", "fact"),
    ("I'm allergic to peanuts", "User is allergic to peanuts", "fact"),
    ("I live in Lisbon with my partner", "User lives in Lisbon with their partner", "fact"),
    ("I work at Acme as a designer", "User works at Acme as a designer", "fact"),
    ("I have two cats named Miso and Tofu", "User has two cats named Miso and Tofu", "fact"),
    ("I keep three beehives in the garden", "User keeps three beehives in the garden", "fact"),
    ("I'll be in Berlin for the conference", "User will be in Berlin for the conference", "event"),
    ("My sister's name is Ana", "User's sister's name is Ana", "fact"),
    ("I'm going to Japan next month", "User is going to Japan next month", "event"),
    ("I plan to run a marathon in the spring", "User plans to run a marathon in the spring", "event"),
    ("Actually, I usually drink tea in the morning", "User usually drinks tea in the morning", "preference"),
]
SHOULD_NOT_LEARN = [
    "Hello there!", "hi", "Thanks a lot, that was helpful.", "What is my favorite fruit?",
    "Can you recommend a good book?", "How do I bake bread", "Is it going to rain tomorrow?",
    "I have a question about my order", "I'm not sure", "Ok", "Tell me a joke", "Please summarize this article",
    "I'm looking for a restaurant nearby", "Good morning, how are you?",
    # Greetings and errands: "Hi, I'm <Name>" introduces someone, these tell nothing lasting.
    "Hi, I'm fine", "Hi, I'm Fine.", "Hi, I'm not sure", "Hey, I'm OK", "Hello! I'm sorry.",
    "I'm going to the store", "Hi, I'm going to the store.", "I'm going to try that", "I'm about to leave",
    "Hey, how are you", "Thanks, I love it",
]
# One message, several statements (a greeting in front introduces the user by name).
SHOULD_LEARN_ALL = [
    ("Hi, I'm Alice.", ["User's name is Alice"]),
    ("Hi, I'm Alice and I love tea.", ["User's name is Alice", "User loves drinking tea"]),
    ("Hello! I\u2019m Bob Smith.", ["User's name is Bob Smith"]),
    ("Hey, I am Priya and I live in Lisbon", ["User's name is Priya", "User lives in Lisbon"]),
    ("Hi, I love pizza", ["User loves eating pizza"]),
    ("I don't like coffee", ["User does not like drinking coffee"]),
    ("I prefer green tea over coffee", ["User prefers drinking green tea over coffee"]),
    ("I'm going to the dentist tomorrow", ["User is going to the dentist tomorrow"]),
]


@pytest.mark.parametrize("sentence, text, kind", SHOULD_LEARN)
def test_the_heuristic_extractor_learns_first_person_statements(sentence, text, kind):
    found = heuristic_memories(sentence)
    assert [(m.text, m.kind) for m in found] == [(text, kind)]
    assert found[0].is_temporal == (kind == "event")


@pytest.mark.parametrize("message, texts", SHOULD_LEARN_ALL)
def test_the_heuristic_extractor_learns_introductions_and_joined_statements(message, texts):
    assert [m.text for m in heuristic_memories(message)] == texts


@pytest.mark.parametrize("sentence", SHOULD_NOT_LEARN)
def test_the_heuristic_extractor_ignores_greetings_questions_and_requests(sentence):
    assert heuristic_memories(sentence) == []


# --- learning through chat traffic ------------------------------------------------------------

def test_learning_from_a_turn_and_superseding_through_chat_traffic(gateway):
    assert turn(gateway, "Hi! My favorite fruit is blueberry.").status_code == 200
    [first] = learned(gateway, 1)
    assert first["text"] == "User's favorite fruit is blueberry"
    assert (first["source_type"], first["kind"], first["confidence"]) == ("inferred", "preference", 0.7)
    with gateway.rest() as rest:
        origin = rest.get(f"/memories/{first['id']}").json()["data"]["origin"]
        history = rest.get("/chat/history/read", params={"chat_id": "learn-chat", "subject_id": SUBJECT}).json()
    assert origin["chat_id"] == "learn-chat" and origin["request_type"] == "chat"
    assert origin["message_ids"] and len(origin["message_ids"]) == len(history["messages"])

    # Seed 003: the new favourite supersedes the old; only it is recalled afterwards.
    turn(gateway, "my new favorite fruit is strawberry", stream=True)
    assert wait_until(lambda: [m["text"] for m in memories(gateway)] == ["User's new favorite fruit is strawberry"])
    with gateway.rest() as rest:
        old = rest.get("/memories/superseded", params={"subject_id": SUBJECT}).json()["data"]
    assert [m["id"] for m in old] == [first["id"]]
    turn(gateway, "which fruit do I like best?", recall=True, learn=False, chat_id="later")
    system = gateway.forwarded()[-1]["body"]["messages"][0]["content"]
    assert "strawberry" in system and "blueberry" not in system


def test_an_introduction_is_learned_and_recalled_by_what_a_later_question_asks(gateway):
    """The README's example, on the offline defaults (heuristic extractor, lexical search)."""
    assert turn(gateway, "Hi, I'm Alice and I love tea.").status_code == 200
    assert sorted(m["text"] for m in learned(gateway, 2)) == ["User loves drinking tea", "User's name is Alice"]
    turn(gateway, "What do I like to drink?", recall=True, learn=False, chat_id="later")
    system = gateway.forwarded()[-1]["body"]["messages"][0]["content"]
    assert "User loves drinking tea" in system


def test_what_teaches_nothing(gateway):
    turn(gateway, "My favorite color is green", learn=False)
    turn(gateway, "What is my favorite color?")
    turn(gateway, "Hello there!")
    failed = turn(gateway, "My favorite color is red", model="fail-500")
    assert failed.status_code == 500
    cut = turn(gateway, "My favorite color is blue", model="cut-stream", stream=True)
    assert cut.status_code == 200
    settle(gateway)
    assert memories(gateway, include_deleted="true") == []


def test_force_always_stores_a_memory(gateway):
    turn(gateway, "Remember the code word is pineapple-seven", learn="force")
    [forced] = learned(gateway, 1)
    assert (forced["text"], forced["kind"]) == ("Remember the code word is pineapple-seven", "note")
    turn(gateway, "x-mnx-learn works too", chat_id="hdr", learn=None)  # header form below
    with httpx.Client(timeout=30) as client:
        client.post(gateway.url + "/v1/chat/completions", headers={
            "x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-mnx-learn": "force", "x-mnx-subject-id": "hdr"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ok then"}]})
    assert [m["text"] for m in learned(gateway, 1, subject="hdr")] == ["ok then"]


# --- the LLM extractor, policies and failures -------------------------------------------------

def extractor_gateway(start_gateway, storage, model: str = "extractor", **learning: Any):
    return start_gateway(storage, learning={"extractor": {"provider": "litellm", "model": model}, **learning})


def answer(*memories: dict[str, Any]) -> str:
    full = [{"kind": "fact", "importance": 50, "confidence": 0.9, "tags": [], "visibility": "private",
             "is_temporal": False, "claims": [], **m} for m in memories]
    return json.dumps({"memories": full})


CANDIDATES = answer(
    {"text": "User is vegetarian", "kind": "preference", "importance": 80, "confidence": 0.95},
    {"text": "User had pasta today", "kind": "event", "importance": 20, "confidence": 0.9},
    {"text": "User might like jazz", "kind": "preference", "importance": 55, "confidence": 0.4},
    {"text": "User lives in Porto", "kind": "fact", "importance": 70, "confidence": 0.9,
     "claims": [{"predicate": "lives_in", "value": "porto"}]},
)


@pytest.mark.parametrize("config, kept", [
    ({}, {"User is vegetarian", "User had pasta today", "User might like jazz", "User lives in Porto"}),
    ({"include_kinds": ["preference"]}, {"User is vegetarian", "User might like jazz"}),
    ({"exclude_kinds": ["event"]}, {"User is vegetarian", "User might like jazz", "User lives in Porto"}),
    ({"confidence_min": 0.5}, {"User is vegetarian", "User had pasta today", "User lives in Porto"}),
    ({"importance_min": 60}, {"User is vegetarian", "User lives in Porto"}),
    ({"max_memories_per_turn": 2}, {"User is vegetarian", "User lives in Porto"}),
])
def test_policy_config_filters_what_is_stored(start_gateway, storage_sqlite, config, kept):
    gateway = extractor_gateway(start_gateway, storage_sqlite)
    with gateway.rest() as rest:
        assert rest.post("/memory/policies", json={"name": "p", "policy_text": "Keep dietary facts.",
                                                    "is_default": True, "config": config}).status_code == 201
    gateway.provider.extraction_answers.append(CANDIDATES)
    turn(gateway, "long chat about food and music")
    assert {m["text"] for m in learned(gateway, len(kept))} == kept
    extraction = [r for r in gateway.forwarded() if r["body"].get("model") == "extractor"][-1]["body"]
    assert "Keep dietary facts." in extraction["messages"][0]["content"]
    assert extraction["response_format"]["type"] == "json_schema"
    assert extraction["messages"][1]["content"].startswith('{"user": ["long chat about food and music"]')


def test_policy_resolution_and_override_precedence(start_gateway, storage_sqlite):
    gateway = extractor_gateway(start_gateway, storage_sqlite)
    with gateway.rest() as rest:
        rest.post("/memory/policies", json={"name": "project", "policy_text": "PROJECT RULES", "is_default": True,
                                            "config": {"include_kinds": ["fact"], "importance_min": 10}})
        rest.post("/memory/policies", json={"name": "subject", "policy_text": "SUBJECT RULES", "is_default": True,
                                            "scope": "subject", "scope_id": SUBJECT,
                                            "config": {"include_kinds": ["preference"]}})
        strict = rest.post("/memory/policies", json={"name": "strict", "policy_text": "ONLY THIS",
                                                     "config": {"importance_min": 75}}).json()["policy"]["id"]

    def run(chat_id: str, **mnx: Any) -> tuple[set[str], str]:
        gateway.provider.extraction_answers.append(CANDIDATES)
        turn(gateway, "tell me things", chat_id=chat_id, **mnx)
        settle(gateway)
        prompt = [r for r in gateway.forwarded() if r["body"].get("model") == "extractor"][-1]["body"]
        with gateway.rest() as rest:
            found = rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]
            for memory in found:
                rest.delete(f"/memories/{memory['id']}")
        return {m["text"] for m in found}, prompt["messages"][0]["content"]

    # Auto: project then subject; texts joined in that order, the subject's config wins.
    texts, prompt = run("auto")
    assert texts == {"User is vegetarian", "User might like jazz"}
    assert prompt.index("PROJECT RULES") < prompt.index("SUBJECT RULES")
    # An explicit id: that policy alone.
    texts, prompt = run("explicit", memory_policy=strict)
    assert texts == {"User is vegetarian"} and "ONLY THIS" in prompt and "PROJECT RULES" not in prompt
    # false: no policy at all, nothing filtered.
    texts, prompt = run("none", memory_policy=False)
    assert len(texts) == 4 and "RULES" not in prompt
    # A turn that reads no system prompt (so no policies with them): its job resolves them itself.
    texts, prompt = run("no-prompt", system_prompt=False)
    assert texts == {"User is vegetarian", "User might like jazz"}
    assert prompt.index("PROJECT RULES") < prompt.index("SUBJECT RULES")


def in_process_services(tmp_path, storage: dict[str, Any]) -> Services:
    return Services.build(parse_config({
        "storage": storage, "memory": edge_memory(tmp_path / "index"), "learning": {"poll_seconds": 60},
        "projects": [{"id": "p", "keys": [{"key": "mnx_live_p"}]}]}))


async def run_learn_job(services: Services, job_id: str, message: str, policy: dict[str, Any] | None = None) -> None:
    """The learn job of one turn of subject "ana" in project "p", run by hand (``policy``: what
    the turn read of the memory policies, as record_turn hands it over)."""
    payload = learn_payload(subject_id="ana", chat_id="c", learn=True, memory_policy=True,
                            new_messages=[{"role": "user", "content": message}],
                            answer={"role": "assistant", "content": "Noted."}, model="gpt-4o-mini",
                            request_type="chat", policy=policy)
    assert payload is not None
    now = time.time()
    await services.learner.handle(Job(job_id, "p", LEARN_JOB, payload, 1, "pending", None, now, now))


async def test_an_erasure_leaves_no_copy_of_the_subjects_words_in_the_texts_versioning_keeps(tmp_path,
                                                                                                storage_sqlite):
    """Versioning keeps what it read of each text (a job weighs its new memory against the
    subject's others, job after job); erasing a subject empties those caches in this process."""
    services = in_process_services(tmp_path, storage_sqlite)
    await services.start()
    try:
        said = ["I love quorbish tea.", "I love quorbish tea with lemon.", "I hate quorbish tea."]
        for n, message in enumerate(said):
            await run_learn_job(services, f"job_{n}", message)
        assert statements.values.cache_info().currsize > 0  # versioning weighed them against each other
        await services.erasure.erase("p", "ana")
        assert statements.values.cache_info().currsize == 0
        assert statements.negated.cache_info().currsize == 0
        comparer = services.memories._comparer
        assert comparer.key_terms.cache_info().currsize == 0 and comparer.topic_terms.cache_info().currsize == 0
    finally:
        await services.aclose()


@pytest.mark.parametrize("storage", ["sqlite", "redis"], indirect=True)
async def test_a_learn_job_follows_the_policies_that_applied_when_its_turn_was_answered(tmp_path, storage):
    """A turn reads the memory policies with its system prompts, and its job learns under those:
    a policy made after the answer does not reach back. A job without them (queued by a gateway
    from before this, or their texts too long to carry) resolves the policies when it runs."""
    services = in_process_services(tmp_path, storage)
    await services.start()
    try:
        turn_time_policy = combine(await services.policies.resolve("p", "ana", "c", default_only=True))
        assert turn_time_policy["has_policy"] is False
        # Then, before the job runs: a project default that keeps events only.
        await services.policies.create("p", {"name": "events only", "policy_text": "Only events.", "is_default": True,
                                             "config": {"include_kinds": ["event"]}})
        await run_learn_job(services, "job_turn_time", "I love green tea with honey.", turn_time_policy)
        await run_learn_job(services, "job_from_before", "I play the cello every Sunday.")
        # Policies with long texts do not ride in the job (every job row would be that much bigger):
        # the job reads them when it runs.
        long_policy = combine([{"id": "mp_long", "policy_text": "Keep everything. " * 300, "config": {}}])
        await run_learn_job(services, "job_long_policy", "I have a dog named Rex.", long_policy)
        page = await services.memories.page_for_subject("p", "ana", limit=10, offset=0)
        assert [doc["text"] for doc in page] == ["User loves green tea with honey"]
    finally:
        await services.aclose()


def test_learned_memories_are_private_unless_the_policy_lets_the_extractor_share_them(start_gateway, storage_sqlite):
    """An extractor (a model reading one user's words) may not make a memory reach every
    subject of the project on its own: "shared" and "public" from it need the policy's leave."""
    gateway = extractor_gateway(start_gateway, storage_sqlite)
    proposed = answer({"text": "User's team uses the blue build server", "visibility": "shared"},
                      {"text": "User's office is on floor 3", "visibility": "public"})
    gateway.provider.extraction_answers.append(proposed)
    turn(gateway, "first")
    assert {m["visibility"] for m in learned(gateway, 2)} == {"private"}
    with gateway.rest() as rest:
        for memory in memories(gateway):
            rest.delete(f"/memories/{memory['id']}")
        rest.post("/memory/policies", json={"name": "team facts", "policy_text": "Team facts may be shared.",
                                            "is_default": True, "config": {"learned_visibility": ["shared"]}})
    gateway.provider.extraction_answers.append(proposed)
    turn(gateway, "second")
    assert {m["text"]: m["visibility"] for m in learned(gateway, 2)} == {
        "User's team uses the blue build server": "shared", "User's office is on floor 3": "private"}


def test_a_broken_extractor_answer_stores_nothing_and_is_not_retried(start_gateway, storage_sqlite):
    gateway = extractor_gateway(start_gateway, storage_sqlite)
    gateway.provider.extraction_answers += ["not json at all", json.dumps({"memories": [{"kind": "fact"}]})]
    turn(gateway, "first")
    turn(gateway, "second")
    settle(gateway)
    assert memories(gateway) == []
    assert len([r for r in gateway.forwarded() if r["body"].get("model") == "extractor"]) == 2


def test_failing_jobs_are_kept_visible_and_retried(start_gateway, storage_sqlite):
    gateway = extractor_gateway(start_gateway, storage_sqlite, model="fail-503",
                                retry_base_seconds=0.2, poll_seconds=0.1)
    turn(gateway, "My favorite tea is oolong")
    # The first run used the caller's key and met the provider's 503; retries have no key of
    # the caller's any more (it is held for the first run only) and no configured one. (Waited
    # for as a whole: a job's attempts count up when a run starts, its last_error when it ends.)
    assert wait_until(lambda: bool(jobs(gateway)) and jobs(gateway)[0]["attempts"] >= 2
                      and "no openai API key" in (jobs(gateway)[0]["last_error"] or ""))
    [job] = jobs(gateway)
    assert job["status"] == "failed" and job["chat_id"] == "learn-chat"
    assert [r["headers"]["authorization"] for r in gateway.forwarded()
            if r["body"].get("model") == "fail-503"] == [f"Bearer {PROVIDER_KEY}"]
    assert memories(gateway) == []


# --- durability: a gateway killed mid-job finishes it after a restart --------------------------

def test_a_killed_gateway_finishes_its_learn_jobs_after_restart(provider, tmp_path):
    port = free_port()
    config = {
        "server": {"port": port},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}},
        "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
        "learning": {"extractor": {"provider": "litellm", "model": "extractor-sleep-3"}},
        "projects": [{"id": "default", "keys": [{"key": KEY}]}],
        "providers": {"openai": {"api_base": provider.url + "/v1", "api_key": "sk-configured"}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"

    first = serve(path, url)
    try:
        response = httpx.post(url + "/v1/chat/completions", timeout=10, headers={"x-mnexium-key": KEY,
                              "x-openai-key": PROVIDER_KEY}, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I keep honeybees"}],
            "mnx": {"subject_id": "kill", "learn": True}})
        assert response.status_code == 200
        # The extractor call is in flight (it takes 3 s) when the gateway dies.
        assert wait_until(lambda: any(r["body"].get("model") == "extractor-sleep-3" for r in provider.requests))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = serve(path, url)
    try:
        def stored() -> list[dict[str, Any]]:
            return httpx.get(url + "/api/v1/memories", headers={"x-mnexium-key": KEY},
                             params={"subject_id": "kill"}).json()["data"]
        assert wait_until(lambda: stored(), timeout=20)
        time.sleep(0.5)
        assert [m["text"] for m in stored()] == ["User said: I keep honeybees"]
        assert httpx.get(url + "/api/v1/jobs", headers={"x-mnexium-key": KEY}).json()["count"] == 0
    finally:
        second.terminate()
        second.wait()
