"""Memory versioning judged by the extraction model, in the extraction call itself
(gateway/memory/judgement.py): what the model is shown, what its verdict does, and where the
rules overrule it. Real stores (SQLite and Redis) and index; the provider is faked with respx."""

from __future__ import annotations

import json
import time
from typing import Any
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import respx

from gateway.config import VersioningConfig, parse_config
from gateway.jobs.queue import Job
from gateway.memory.changes import MemoryFields, NewMemory
from gateway.memory.claims import Claim, extract_claims
from gateway.memory.judgement import Verdict, reconcile, shown_memories
from gateway.memory.learning import LEARN_JOB, learn_payload
from gateway.memory.lexical import Lexicon
from gateway.memory.versioning import Candidate, Comparer, relation
from gateway.services import Services
from tests.conftest import edge_memory

OPENAI = "https://api.openai.com/v1/chat/completions"
PROJECT, OTHER_PROJECT = "p", "q"
SUBJECT, OTHER_SUBJECT = "ana", "bob"

# The model's answer, given what it was shown: {ref: text} -> the memories it returns.
Model = Callable[[dict[str, str]], list[dict[str, Any]]]


def memory(text: str, versioning: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """One extracted memory as the schema has it."""
    return {"text": text, "kind": "fact", "importance": 60, "confidence": 0.9, "tags": [], "visibility": "private",
            "is_temporal": False, "claims": [], "profile": [],
            **({"versioning": versioning} if versioning is not None else {}), **fields}


def ref_of(shown: dict[str, str], text: str) -> str:
    [ref] = [ref for ref, shown_text in shown.items() if shown_text == text]
    return ref


def build(tmp_path, storage: dict[str, Any], **versioning: Any) -> Services:
    return Services.build(parse_config({
        "storage": storage, "memory": {**edge_memory(tmp_path / "index"), "versioning": versioning},
        "learning": {"extractor": {"provider": "litellm", "model": "gpt-4o-mini", "api_key": "sk-extractor"},
                     "poll_seconds": 60},
        "projects": [{"id": PROJECT, "keys": [{"key": "mnx_live_p"}]},
                     {"id": OTHER_PROJECT, "keys": [{"key": "mnx_live_q"}]}]}))


class Scenario:
    """A gateway's services, a faked extraction model, and learn jobs run by hand."""

    def __init__(self, services: Services, router: respx.MockRouter) -> None:
        self.services = services
        self.model: Model = lambda shown: []
        self.route = router.post(OPENAI).mock(side_effect=self._answer)
        self.jobs = 0

    def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        turn = json.loads(body["messages"][1]["content"])
        answer = {"memories": self.model(turn.get("existing_memories", {}))}
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(answer)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    async def remember(self, text: str, subject: str = SUBJECT, project: str = PROJECT, **fields: Any) -> str:
        """A memory stored through POST /memories' path (no model in the loop)."""
        result, created = await self.services.memories.create(
            project, NewMemory(subject, text, MemoryFields(**fields)))
        assert created, result
        return str(result["id"])

    async def learn(self, message: str, model: Model, subject: str = SUBJECT) -> dict[str, Any]:
        """Run one learn job for ``message``; returns the request the model received."""
        self.model = model
        self.jobs += 1
        calls_before = self.route.call_count
        payload = learn_payload(subject_id=subject, chat_id="c", learn=True, memory_policy=True,
                                new_messages=[{"role": "user", "content": message}],
                                answer={"role": "assistant", "content": "Noted."}, model="gpt-4o-mini",
                                request_type="chat")
        assert payload is not None
        now = time.time()
        await self.services.learner.handle(Job(f"job_{self.jobs}", PROJECT, LEARN_JOB, payload, 1, "pending", None,
                                               now, now))
        # Judging costs no call of its own: one extraction call per learn job.
        assert self.route.call_count == calls_before + 1
        return json.loads(self.route.calls.last.request.content)

    async def active(self, subject: str = SUBJECT) -> dict[str, dict[str, Any]]:
        page = await self.services.memories.page_for_subject(PROJECT, subject, limit=100, offset=0)
        return {doc["text"]: doc for doc in page}

    async def get(self, memory_id: str) -> dict[str, Any]:
        return await self.services.memories.get(PROJECT, memory_id)


@pytest.fixture
async def scenario(tmp_path, storage) -> AsyncIterator[Scenario]:
    services = build(tmp_path, storage)
    await services.start()
    try:
        with respx.mock(assert_all_mocked=True) as router:
            yield Scenario(services, router)
    finally:
        await services.aclose()


async def test_the_model_is_shown_the_subjects_related_memories_by_reference_never_their_ids(scenario):
    mine = {await scenario.remember(text): text for text in
            ("User is single", "User has a cat named Luna", "User lives in Lisbon")}
    # Nobody else's: another subject's (even shared with the project), another project's.
    await scenario.remember("User is single and lives with a cat", subject=OTHER_SUBJECT, visibility="shared")
    await scenario.remember("User got a new cat", subject=OTHER_SUBJECT)
    await scenario.remember("User is married with a cat", project=OTHER_PROJECT)

    sent = await scenario.learn("I got married last month, and my cat Luna came to the wedding!", lambda shown: [])

    system, user = sent["messages"]
    shown = json.loads(user["content"])["existing_memories"]
    assert sorted(shown.values()) == sorted(mine.values())
    assert set(shown) == {"m1", "m2", "m3"}
    # The message's own words rank first: Luna's memory shares "cat" and "Luna".
    assert shown["m1"] == "User has a cat named Luna"
    raw = json.dumps(sent)
    assert not any(memory_id in raw for memory_id in mine) and "mem_" not in raw
    assert "existing_memories" in system["content"] and "duplicate_of" in system["content"]
    verdict = sent["response_format"]["json_schema"]["schema"]["properties"]["memories"]["items"]["properties"][
        "versioning"]
    assert verdict["properties"]["refs"]["items"]["enum"] == ["m1", "m2", "m3"]


async def test_a_subject_with_no_memories_is_asked_no_verdict(scenario):
    sent = await scenario.learn("I got married", lambda shown: [memory("User is married")])
    assert "existing_memories" not in json.loads(sent["messages"][1]["content"])
    assert "versioning" not in json.dumps(sent["response_format"])
    assert "versioning" not in (await scenario.active())["User is married"]


async def test_duplicate_of_skips_the_memory_and_reinforces_the_one_it_repeats(scenario):
    # Not one word in common: the rules alone keep both.
    remote = await scenario.remember("User works from home")
    await scenario.remember("User has a cat named Luna")

    def model(shown: dict[str, str]) -> list[dict[str, Any]]:
        return [memory("User is a remote worker",
                       {"relation": "duplicate_of", "refs": [ref_of(shown, "User works from home")]})]

    await scenario.learn("I'm a remote worker", model)
    assert set(await scenario.active()) == {"User works from home", "User has a cat named Luna"}
    assert (await scenario.get(remote))["reinforcement_count"] == 1


async def test_updates_supersedes_what_the_rules_alone_would_keep_beside_it(scenario):
    single = await scenario.remember("User is single")

    def model(shown: dict[str, str]) -> list[dict[str, Any]]:
        return [memory("User is married", {"relation": "updates", "refs": [ref_of(shown, "User is single")]})]

    await scenario.learn("I got married last month!", model)
    active = await scenario.active()
    assert set(active) == {"User is married"}
    married = active["User is married"]
    assert married["versioning"] == {"decided_by": "llm", "judgement": "updates"}
    old = await scenario.services.memories.get(PROJECT, single)
    assert (old["status"], old["superseded_by"]) == ("superseded", married["id"])


async def test_post_memories_extract_that_stores_is_judged_the_same_way_and_one_that_does_not_is_not(scenario):
    await scenario.remember("User is single")
    learner = scenario.services.learner

    def model(shown: dict[str, str]) -> list[dict[str, Any]]:
        if not shown:
            return [memory("User is married")]
        return [memory("User is married", {"relation": "updates", "refs": [ref_of(shown, "User is single")]})]

    scenario.model = model
    preview = await learner.extract_text(PROJECT, SUBJECT, "I got married!", context=[], force=False,
                                         memory_policy=True, store=False, caller_keys={})
    assert [m["text"] for m in preview["memories"]] == ["User is married"]
    assert "existing_memories" not in scenario.route.calls.last.request.content.decode()
    stored = await learner.extract_text(PROJECT, SUBJECT, "I got married!", context=[], force=False,
                                        memory_policy=True, store=True, caller_keys={})
    assert scenario.route.call_count == 2
    [married] = stored["memories"]
    active = await scenario.active()
    assert set(active) == {"User is married"} and active["User is married"]["id"] == married["memory_id"]
    assert active["User is married"]["versioning"] == {"decided_by": "llm", "judgement": "updates"}


async def test_new_keeps_a_similar_fact_beside_the_other(scenario):
    await scenario.remember("User has a cat named Luna")
    await scenario.learn("We adopted a dog, Rex!",
                         lambda shown: [memory("User has a dog named Rex", {"relation": "new", "refs": []})])
    active = await scenario.active()
    assert set(active) == {"User has a cat named Luna", "User has a dog named Rex"}
    assert active["User has a dog named Rex"]["versioning"] == {"decided_by": "llm", "judgement": "new"}


@pytest.mark.parametrize("made_up", ["m7", "mem_0123456789abcdef01234567", "the fruit one"])
async def test_a_reference_the_model_was_not_shown_leaves_the_decision_to_the_rules(scenario, made_up):
    blueberry = await scenario.remember("User's favorite fruit is blueberry")
    await scenario.learn("My favorite fruit is strawberry now",
                         lambda shown: [memory("User's favorite fruit is strawberry",
                                               {"relation": "duplicate_of", "refs": [made_up]})])
    # The rules: the same claim slot with another value supersedes.
    active = await scenario.active()
    assert set(active) == {"User's favorite fruit is strawberry"}
    assert active["User's favorite fruit is strawberry"]["versioning"] == {
        "decided_by": "rules", "set_aside": "it names a memory it was not shown"}
    assert (await scenario.get(blueberry))["status"] == "superseded"


async def test_a_duplicate_verdict_that_would_lose_a_changed_value_is_set_aside(scenario):
    blueberry = await scenario.remember("User's favorite fruit is blueberry")

    def model(shown: dict[str, str]) -> list[dict[str, Any]]:
        return [memory("User's favorite fruit is strawberry",
                       {"relation": "duplicate_of", "refs": [ref_of(shown, "User's favorite fruit is blueberry")]})]

    await scenario.learn("My favorite fruit is strawberry now", model)
    active = await scenario.active()
    assert set(active) == {"User's favorite fruit is strawberry"}
    assert active["User's favorite fruit is strawberry"]["versioning"] == {
        "decided_by": "rules", "judgement": "duplicate_of",
        "set_aside": "the rules see a changed value, which skipping would lose"}
    assert (await scenario.get(blueberry))["status"] == "superseded"


@pytest.mark.parametrize("verdict", [None, "updates", {"relation": "maybe", "refs": []},
                                     {"relation": "updates", "refs": []}, {"relation": "updates", "refs": "m1"}])
async def test_a_missing_or_malformed_verdict_leaves_the_decision_to_the_rules(scenario, verdict):
    await scenario.remember("User has a cat named Luna")
    await scenario.learn("We adopted a dog, Rex!", lambda shown: [
        {**memory("User has a dog named Rex"), **({"versioning": verdict} if verdict is not None else {})}])
    active = await scenario.active()
    # The memory is stored all the same; the rules decided.
    assert active["User has a dog named Rex"]["versioning"] == {"decided_by": "rules",
                                                                "set_aside": "no readable verdict"}


async def test_a_memory_superseded_earlier_in_the_same_turn_is_no_target(scenario):
    await scenario.remember("User lives in Lisbon")

    def model(shown: dict[str, str]) -> list[dict[str, Any]]:
        lisbon = ref_of(shown, "User lives in Lisbon")
        return [memory("User lives in Porto", {"relation": "updates", "refs": [lisbon]}, importance=90),
                memory("User started a new job in Porto", {"relation": "updates", "refs": [lisbon]}, importance=50)]

    await scenario.learn("I moved to Porto, new job!", model)
    porto = [doc for doc in (await scenario.services.memories.page_for_subject(
        PROJECT, SUBJECT, limit=10, offset=0, include_superseded=True)) if "Porto" in doc["text"]]
    by_text = {doc["text"]: doc for doc in porto}
    lisbon = (await scenario.services.memories.superseded(PROJECT, SUBJECT, limit=10, offset=0))
    # Lisbon went with the first; the second names it again, by then superseded: the rules decide.
    assert [(m["text"], m["superseded_by"]) for m in lisbon if m["text"] == "User lives in Lisbon"] == [
        ("User lives in Lisbon", by_text["User lives in Porto"]["id"])]
    assert by_text["User started a new job in Porto"]["versioning"] == {
        "decided_by": "rules", "judgement": "updates", "set_aside": "it names a memory no longer active"}


async def test_with_judge_rules_the_model_is_shown_nothing_and_the_rules_decide(tmp_path, storage_sqlite):
    services = build(tmp_path, storage_sqlite, judge="rules")
    await services.start()
    try:
        with respx.mock(assert_all_mocked=True) as router:
            scenario = Scenario(services, router)
            await scenario.remember("User is single")
            sent = await scenario.learn("I got married", lambda shown: [memory("User is married")])
            assert "existing_memories" not in sent["messages"][1]["content"]
            assert "versioning" not in json.dumps(sent["response_format"])
            # The rules decided, as they do without a judge: no record of a verdict.
            assert "versioning" not in (await scenario.active())["User is married"]
    finally:
        await services.aclose()


async def test_the_memories_shown_are_bounded_by_count_and_tokens(scenario):
    cities = ["Paris", "Rome", "Oslo", "Quito", "Hanoi", "Lima", "Cairo", "Seoul", "Dakar", "Perth", "Riga",
              "Kyoto", "Tunis", "Bern"]
    for city in cities:
        await scenario.remember(f"User visited {city}")
    sent = await scenario.learn("I went back to Kyoto in spring", lambda shown: [])
    shown = json.loads(sent["messages"][1]["content"])["existing_memories"]
    # memory.versioning.judge_memories (10): the search's best match first (then its neighbours,
    # which it lends its words as context), the newest others after; the oldest unrelated ones not.
    assert len(shown) == 10 and shown["m1"] == "User visited Kyoto"
    assert "User visited Bern" in shown.values() and "User visited Paris" not in shown.values()


def test_a_memory_too_long_for_the_token_budget_is_left_out_not_cut():
    found = [("a", "short one"), ("b", "x" * 400), ("c", "another short one")]
    shown = shown_memories(found, limit=10, token_budget=50)
    assert [(m.ref, m.text) for m in shown.memories] == [("m1", "short one"), ("m2", "another short one")]
    assert dict(shown.ids) == {"m1": "a", "m2": "c"}


def test_memories_the_model_was_not_shown_are_judged_by_the_rules():
    """The model said "new" having seen only m1; a memory it never saw repeats the new one."""
    comparer, config = Comparer(Lexicon()), VersioningConfig()
    text = "User's favorite fruit is strawberry"
    candidates = [Candidate("seen", "User has a cat named Luna"),
                  Candidate("unseen", "User's favorite fruit is blueberry",
                            extract_claims("User's favorite fruit is blueberry"))]
    decision, record = reconcile(comparer, config, text, extract_claims(text), candidates, {},
                                 Verdict("new", (), frozenset({"seen"})))
    assert (decision.action, decision.superseded_ids) == ("supersede", ["unseen"])
    assert record == {"decided_by": "llm", "judgement": "new", "rules_superseded": ["unseen"]}


# --- where the model's verdict and the rules' disagree (reconcile, on its own) ------------------

COMPARER, RULES = Comparer(Lexicon()), VersioningConfig()


def judged(text: str, candidates: list[Candidate], verdict: Verdict, claims: list[Claim] | None = None):
    targets = {c.memory_id: c for c in candidates if c.memory_id in verdict.target_ids}
    decision, record = reconcile(COMPARER, RULES, text, extract_claims(text) if claims is None else claims,
                                 candidates, targets, verdict)
    return decision.action, decision.duplicate_of or decision.superseded_ids, record


def test_new_keeps_both_even_where_the_claims_would_supersede():
    # Both state the slot "pet" with another value: the rules alone supersede the cat.
    cat = Candidate("cat", "User has a cat named Luna", [Claim("pet", "luna")])
    rex = [Claim("pet", "rex")]
    assert judged("User has a dog named Rex", [cat], Verdict(None), rex)[:2] == ("supersede", ["cat"])
    assert judged("User has a dog named Rex", [cat], Verdict("new", (), frozenset({"cat"})), rex) == (
        "create", [], {"decided_by": "llm", "judgement": "new"})


def test_duplicate_of_stands_where_the_rules_see_no_change_and_falls_where_they_see_one():
    remote = Candidate("home", "User works from home")
    assert judged("User is a remote worker", [remote], Verdict("duplicate_of", ("home",), frozenset({"home"}))) == (
        "skip", "home", {"decided_by": "llm", "judgement": "duplicate_of"})
    # Two children -> three: skipping would lose the three.
    children = Candidate("kids", "User has two children")
    assert relation(COMPARER, RULES, "User has three children", [], children) == "conflict", (
        "precondition: the rules see a change between these two")
    assert judged("User has three children", [children], Verdict("duplicate_of", ("kids",), frozenset({"kids"}))) == (
        "supersede", ["kids"], {"decided_by": "rules", "judgement": "duplicate_of",
                                "set_aside": "the rules see a changed value, which skipping would lose"})
    # The same through a claim slot held with another value, whichever memory holds it.
    fruit = Candidate("fruit", "User's favorite fruit is blueberry", [Claim("favorite_fruit", "blueberry")])
    assert judged("User loves strawberries most", [remote, fruit], Verdict("duplicate_of", ("home",),
                                                                          frozenset({"home", "fruit"})),
                  [Claim("favorite_fruit", "strawberry")])[2]["decided_by"] == "rules"


def test_updates_stands_where_the_rules_see_no_link():
    single = Candidate("single", "User is single")
    assert judged("User is married", [single], Verdict(None))[:2] == ("create", [])
    assert judged("User is married", [single], Verdict("updates", ("single",), frozenset({"single"}))) == (
        "supersede", ["single"], {"decided_by": "llm", "judgement": "updates"})


# --- through a running gateway: a chat turn's learn job -----------------------------------------

def test_a_chat_turn_learned_by_a_judging_extractor_supersedes_what_it_updates(start_gateway, storage):
    from tests.conftest import KEY, PROVIDER_KEY, wait_until

    gateway = start_gateway(storage, learning={"extractor": {"provider": "litellm", "model": "extractor"}})
    with gateway.rest() as rest:
        single = rest.post("/memories", json={"subject_id": SUBJECT, "text": "User is single"}).json()["id"]
    # The subject has one memory: it is shown as m1.
    gateway.provider.extraction_answers.append(json.dumps({"memories": [
        memory("User is married", {"relation": "updates", "refs": ["m1"]})]}))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I got married last month!"}],
            "mnx": {"subject_id": SUBJECT, "chat_id": "wedding", "history": False, "learn": True}}
    with httpx.Client(timeout=30) as client:
        assert client.post(gateway.url + "/v1/chat/completions", json=body,
                           headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}).status_code == 200

    def active() -> list[dict[str, Any]]:
        with gateway.rest() as rest:
            return rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]

    assert wait_until(lambda: [m["text"] for m in active()] == ["User is married"], timeout=15), active()
    [married] = active()
    assert married["versioning"] == {"decided_by": "llm", "judgement": "updates"}
    with gateway.rest() as rest:
        assert rest.get(f"/memories/{single}").json()["data"]["superseded_by"] == married["id"]
    [extraction] = [r["body"] for r in gateway.forwarded() if r["body"].get("model") == "extractor"]
    assert json.loads(extraction["messages"][1]["content"])["existing_memories"] == {"m1": "User is single"}
    assert single not in json.dumps(extraction)
