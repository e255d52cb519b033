"""Tenant isolation on every route: project B learns nothing of project A and changes nothing of it.

The property. Project A (KEY) stores an object of every kind the gateway keeps: memories
(active, with claims, shared, superseded, deleted), prompts and memory policies at every
scope level (and inactive ones), agent state, chat history, recall events and a learn job
that keeps failing. Every text A stores carries a sentinel: a made-up word found nowhere
else. Project B (KEY_B) then calls every route the gateway serves, with every method,
naming A's things wherever a request can name them: A's ids in path parameters, A's ids,
subject and chat in the usual query parameters (and A's sentinel as a search query), A's
ids in write bodies, and A's subject, chat, state key, prompt and policy in the ``mnx``
options of proxied turns (with recall, history, state loading and learning on). For every
one of these calls:

* the answer (body and headers) holds none of A's sentinels and none of A's object ids,
  except a value B sent itself in that call (an echoed id is not a leak) or an id B has
  since used for an object of its own (ids are per project);
* the answer is not a 5xx, and B's key was accepted (a 401/403 would prove nothing);
* the same call naming fresh ids that exist nowhere gets the same status and error code:
  B cannot even learn which ids exist in A;
* no request the gateway forwarded to the provider holds an A sentinel: no memory of A's
  recalled, no history replayed, no state loaded, no prompt or policy text injected, not
  even in the extraction requests of B's own learn jobs.

Finally every read A made before B started returns exactly the same afterwards: B's
PATCH, PUT, DELETE, restore and erase calls changed nothing of A's.

Control: the same read requests made with A's key do show every sentinel, and the same
proxied turn made with A's key forwards A's prompts, state, recalled memory and history,
so each of B's calls asked for something that exists.

Why generated from the route table: the probes are built from ``create_app(...).routes``
(path, methods, handler name), so a route added later is probed without touching this
file. What cannot be derived is mapped explicitly, and an unmapped case fails with what to
add: a new path parameter name needs an entry in ``A_VALUES_BY_PATH_PARAMETER``, a new
write handler needs hostile bodies in ``HOSTILE_BODIES``, a new provider surface needs a
request builder in ``route_table.PROXY_REQUESTS``.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any
from collections.abc import Callable, Iterable

import httpx
import pytest

from tests.conftest import KEY, KEY_B, wait_until
from tests.security.route_table import (
    PROVIDER_HEADERS, Endpoint, comparable, endpoints, error_code, is_proxy, proxy_request, send,
)

TOKEN = secrets.token_hex(4)
PROJECT_A = "project-a"
# The extraction model answers 400 at once (no SDK retries), so a learn job fails on its
# first run and waits an hour for the next: it stays listed in GET /jobs for the whole test.
FAILING_EXTRACTOR = "fail-400"
# A's record types. B names both; before its sweep B defines a type of the first name of its own
# (so B's redefinition probe answers the same whether or not A's exists), never of the second.
RECORD_TYPE = "ticket"
OTHER_RECORD_TYPE = "invoice"
B_RECORD_SCHEMA = {"type_name": RECORD_TYPE, "fields": {"title": "string", "parent": "ref:ticket"}}


def sentinel(label: str) -> str:
    """A word that appears nowhere but in the one text of A's it marks."""
    return f"zz{label}{TOKEN}zz"


# -- project A: one of everything -------------------------------------------------------------

@dataclass
class ProjectA:
    subject: str
    chat: str
    state_key: str
    memories: dict[str, str] = field(default_factory=dict)  # role -> id
    prompts: dict[str, str] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)  # role -> claim id (the truth graph)
    records: dict[str, str] = field(default_factory=dict)  # role -> record id (of type RECORD_TYPE)
    integrations: dict[str, str] = field(default_factory=dict)  # role -> integration id
    job: str = ""  # the learn job that keeps failing (waiting an hour for its next run)
    sentinels: dict[str, str] = field(default_factory=dict)  # label -> sentinel word
    # Every object id A can read (memories, claims, prompts, policies, jobs, recall events...),
    # collected from A's own reads once everything exists.
    ids: set[str] = field(default_factory=set)

    def mark(self, label: str) -> str:
        self.sentinels[label] = sentinel(label)
        return self.sentinels[label]

    @property
    def secrets(self) -> set[str]:
        """What must never reach B: every sentinel word, every object id, A's project id."""
        return set(self.sentinels.values()) | self.ids | {PROJECT_A}

    @property
    def names(self) -> set[str]:
        """Every value that names something of A's (what a twin probe replaces)."""
        return self.ids | {self.subject, self.chat, self.state_key}


def expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def chat_turn(client: httpx.Client, text: str, **mnx: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "mnx": mnx})


def populate_project_a(gateway, client: httpx.Client) -> ProjectA:
    a = ProjectA(subject=f"subject-a-{TOKEN}", chat=f"chat-a-{TOKEN}", state_key=f"plan-a-{TOKEN}")
    api = "/api/v1"

    def memory(role: str, text: str, **fields: Any) -> dict[str, Any]:
        made = expect(client.post(f"{api}/memories", json={"subject_id": a.subject, "text": text, **fields}), 201)
        assert made["created"] is True, made
        a.memories[role] = made["id"]
        return made

    memory("secret", f"User's secret codeword is {a.mark('codeword')}")
    memory("fruit", f"User's favorite fruit is mango{a.mark('mango')}")  # a favorite_fruit claim
    memory("shared", f"The team wifi password is {a.mark('wifi')}", visibility="shared")
    memory("superseded", f"User's favorite color is {a.mark('oldcolor')}")
    newer = memory("superseding", f"User's favorite color is {a.mark('newcolor')}")
    assert newer["superseded_ids"] == [a.memories["superseded"]], newer
    memory("deleted", f"User keeps a diary called {a.mark('diary')}")
    expect(client.delete(f"{api}/memories/{a.memories['deleted']}"), 200)

    def prompt(role: str, **fields: Any) -> None:
        a.prompts[role] = expect(client.post(f"{api}/prompts", json={"name": role, **fields}), 201)["id"]

    prompt("project", prompt_text=f"Project prompt {a.mark('projprompt')}", is_default=True)
    prompt("subject", prompt_text=f"Subject prompt {a.mark('subjprompt')}", is_default=True,
           scope="subject", scope_id=a.subject)
    prompt("chat", prompt_text=f"Chat prompt {a.mark('chatprompt')}", is_default=True, scope="chat", scope_id=a.chat)
    prompt("inactive", prompt_text=f"Inactive prompt {a.mark('offprompt')}", is_active=False)

    def policy(role: str, **fields: Any) -> None:
        a.policies[role] = expect(client.post(f"{api}/memory/policies", json={"name": role, **fields}), 201)["id"]

    policy("project", policy_text=f"Project policy {a.mark('projpolicy')}", is_default=True)
    policy("subject", policy_text=f"Subject policy {a.mark('subjpolicy')}", is_default=True,
           scope="subject", scope_id=a.subject, config={"max_memories_per_turn": 3})
    policy("deactivated", policy_text=f"Retired policy {a.mark('offpolicy')}")
    expect(client.delete(f"{api}/memory/policies/{a.policies['deactivated']}"), 200)

    # Claims: the fruit memory's, one posted and one retracted through the API (a retracts edge too).
    a.claims["fruit"] = expect(client.get(f"{api}/memories/{a.memories['fruit']}/claims"), 200)["data"][0]["claim_id"]
    for role, value in (("olddrink", a.mark("olddrink")), ("drink", a.mark("drink"))):
        a.claims[role] = expect(client.post(f"{api}/claims", json={
            "subject_id": a.subject, "predicate": "favorite_drink", "object_value": value}), 201)["claim_id"]
    a.claims["retracted"] = expect(client.post(f"{api}/claims", json={
        "subject_id": a.subject, "predicate": "favorite_drink", "object_value": a.mark("wrongdrink")}), 201)["claim_id"]
    expect(client.post(f"{api}/claims/{a.claims['retracted']}/retract"), 200)

    expect(client.put(f"{api}/state/{a.state_key}", headers={"x-subject-id": a.subject},
                      json={"value": {"step": 3, "note": a.mark("state")}}), 200)
    # A profile with a history (the first nickname was replaced).
    expect(client.patch(f"{api}/profiles", json={"subject_id": a.subject, "updates": [
        {"field_key": "name", "value": a.mark("profile")}, {"field_key": "nickname", "value": a.mark("oldnick")}]}),
        200)
    expect(client.patch(f"{api}/profiles", json={"subject_id": a.subject, "updates": [
        {"field_key": "nickname", "value": a.mark("nickname")}]}), 200)

    # Records: A's type, a private record of A's subject, a public one of the project, a deleted one.
    expect(client.post(f"{api}/records/schemas", json={"type_name": RECORD_TYPE, "description": a.mark("rtype"),
                                                       "fields": {"title": {"type": "string", "required": True,
                                                                            "description": a.mark("rfield")},
                                                                  "body": "text"}}), 201)

    expect(client.post(f"{api}/records/schemas", json={"type_name": OTHER_RECORD_TYPE, "description": a.mark("rtype2"),
                                                       "fields": {"amount": "number"}}), 201)

    def record(role: str, **body: Any) -> None:
        a.records[role] = expect(client.post(f"{api}/records/{RECORD_TYPE}", json=body), 201)["record_id"]

    record("private", owner_id=a.subject, data={"title": f"Codeword ticket {a.mark('rprivate')}",
                                                 "body": "the secret codeword"})
    record("public", data={"title": f"Fruit ticket {a.mark('rpublic')}", "body": "the favorite fruit"})
    # (Its text is no sentinel: no read of A's shows a deleted record's data.)
    record("deleted", owner_id=a.subject, data={"title": "Old ticket"})
    expect(client.delete(f"{api}/records/{RECORD_TYPE}/{a.records['deleted']}"), 200)

    # An integration, pull and webhook (its host does not resolve: a pull of it fails fast).
    a.integrations["crm"] = expect(client.post(f"{api}/integrations", json={
        "name": f"CRM {a.mark('integration')}", "mode": "both", "endpoint_url": "https://integration.invalid/crm",
        "webhook_secret": f"whsec-{TOKEN}", "output_map": [{"key": "plan", "path": "customer.plan"}]}),
        200)["integration"]["integration_id"]

    # Chat history and a learn job (its extraction fails, so it stays queued).
    expect(chat_turn(client, f"My diary secret is {a.mark('history')}", subject_id=a.subject, chat_id=a.chat,
                     log=True, history=True, learn=True), 200)
    # A recall event: this turn recalls the codeword memory.
    expect(chat_turn(client, f"What is my secret codeword? {a.mark('question')}", subject_id=a.subject,
                     chat_id=a.chat, recall=True, learn=False), 200)
    recalls = expect(client.get(f"{api}/memories/recalls", params={"chat_id": a.chat}), 200)["data"]
    assert a.memories["secret"] in [event["memory_id"] for event in recalls], recalls

    def job_failed() -> bool:
        jobs = expect(client.get(f"{api}/jobs"), 200)["data"]
        return len(jobs) == 1 and jobs[0]["status"] == "failed"
    assert wait_until(job_failed, timeout=20), client.get(f"{api}/jobs").text
    a.job = expect(client.get(f"{api}/jobs"), 200)["data"][0]["id"]
    return a


# -- probes: one request of B's, built from an endpoint --------------------------------------

def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, change) for v in value]
    return value


@dataclass(frozen=True)
class Probe:
    endpoint: Endpoint
    path_values: dict[str, str]
    params: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    label: str = ""

    @property
    def url(self) -> str:
        return self.endpoint.url(self.path_values)

    def send(self, client: httpx.Client) -> httpx.Response:
        return send(client, self.endpoint.method, self.url, params=self.params, headers=self.headers, json=self.json)

    def sent(self) -> list[str]:
        """Every string this request carries (path, query, headers, body): B's own words."""
        return [*self.path_values.values(), *self.params.values(), *self.headers.values(), *strings_in(self.json)]

    def with_strings(self, change: Callable[[str], str]) -> Probe:
        return replace(self, path_values=map_strings(self.path_values, change), params=map_strings(self.params, change),
                       headers=map_strings(self.headers, change), json=map_strings(self.json, change))

    def describe(self) -> str:
        parts = [f"{self.endpoint.method} {self.url}"]
        if self.label:
            parts.append(f"[{self.label}]")
        if self.params:
            parts.append(f"params={self.params}")
        extra = {k: v for k, v in self.headers.items() if k != "x-subject-id"}
        if extra:
            parts.append(f"headers={extra}")
        if self.json is not None:
            parts.append(f"json={json.dumps(self.json)}")
        return " ".join(parts)


# Path parameter name -> which of A's objects B names there (each one in turn).
A_VALUES_BY_PATH_PARAMETER: dict[str, Callable[[ProjectA], list[str]]] = {
    "memory_id": lambda a: list(a.memories.values()),
    "prompt_id": lambda a: list(a.prompts.values()),
    "policy_id": lambda a: list(a.policies.values()),
    "key": lambda a: [a.state_key],  # agent state, with A's subject in X-Subject-ID
    "subject_id": lambda a: [a.subject],
    "claim_id": lambda a: list(a.claims.values()),
    "slot": lambda a: ["favorite_fruit", "favorite_drink"],  # slots where A has truths
    "type_name": lambda a: [RECORD_TYPE, OTHER_RECORD_TYPE],
    "record_id": lambda a: list(a.records.values()),
    "integration_id": lambda a: list(a.integrations.values()),
    "job_id": lambda a: [a.job],  # B asks to run A's failing job now
}


def query_variants(a: ProjectA) -> list[dict[str, str]]:
    """A's ids in the usual query parameters, in the combinations the handlers branch on."""
    return [
        {},
        {"subject_id": a.subject, "chat_id": a.chat, "q": a.sentinels["codeword"], "include_deleted": "true",
         "include_superseded": "true", "include_inactive": "true", "default_only": "false", "limit": "200",
         "format": "full", "include_history": "true"},
        {"subject_id": a.subject, "chat_id": a.chat, "combined": "true"},
        {"chat_id": a.chat},
        {"memory_id": a.memories["secret"]},
        {"memory_id": a.memories["secret"], "stats": "true"},
        # A's subject as a search term (GET /subjects lists a subject found by its exact id).
        {"q": a.subject},
    ]


# Write handler -> bodies with which B tries to reach or alter A's objects.
HOSTILE_BODIES: dict[str, Callable[[ProjectA], list[Any]]] = {
    "create_memory": lambda a: [
        # Close to A's memory and in the same claim slot as A's: must neither supersede nor dedupe against A's.
        {"subject_id": a.subject, "text": "User's secret codeword is something project B made up"},
        {"subject_id": a.subject, "text": "User's favorite fruit is papaya"},
        {"subject_id": a.subject, "text": "Project B replaces this", "supersedes": a.memories["secret"]},
        {"id": a.memories["secret"], "subject_id": a.subject, "text": "Project B's own memory under A's id"},
    ],
    "update_memory": lambda a: [{"text": "Project B was here", "importance": 1, "visibility": "public"}],
    "extract_memories": lambda a: [
        # Learned into B's subject of the same name: must neither supersede nor dedupe against A's.
        {"subject_id": a.subject, "text": "My favorite fruit is papaya", "learn": True},
        {"subject_id": a.subject, "text": "My secret codeword is something project B made up", "learn": True,
         "force": True},
    ],
    "restore_memory": lambda a: [None],
    "create_prompt": lambda a: [
        {"id": a.prompts["project"], "name": "b", "prompt_text": "Project B prompt", "is_default": True},
        {"name": "b-subject", "prompt_text": "Project B subject prompt", "scope": "subject", "scope_id": a.subject,
         "is_default": True},
    ],
    "update_prompt": lambda a: [{"prompt_text": "Project B was here", "is_default": True}],
    "create_policy": lambda a: [
        {"id": a.policies["project"], "name": "b", "policy_text": "Project B policy", "is_default": True},
        {"name": "b-subject", "policy_text": "Project B subject policy", "scope": "subject", "scope_id": a.subject,
         "is_default": True},
    ],
    "update_policy": lambda a: [{"policy_text": "Project B was here", "is_default": True}],
    "put_state": lambda a: [{"value": {"written_by": "project B"}, "ttl_seconds": 3600}],
    "create_claim": lambda a: [
        # In A's slots: must supersede neither A's claims nor the memory behind A's fruit claim.
        {"subject_id": a.subject, "predicate": "favorite_drink", "object_value": "project B's drink"},
        {"subject_id": a.subject, "slot": "favorite_fruit", "value": "papaya", "source": "project B"},
        {"subject_id": a.subject, "predicate": "favorite_fruit", "object_value": "kiwi",
         "source_memory_id": a.memories["fruit"]},
    ],
    "retract_claim": lambda a: [None, {"reason": "project B says so"}],
    "retry_job": lambda a: [None],
    "update_profile": lambda a: [{"subject_id": a.subject, "updates": [
        {"field_key": "name", "value": "Project B"}, {"field_key": "nickname", "value": "written by B"}]}],
    # B defines a type of the same name (its own), then writes and reads under it naming A's records.
    "define_schema": lambda a: [{**B_RECORD_SCHEMA, "description": "Project B's"}],
    "insert_record": lambda a: [
        {"owner_id": a.subject, "data": {"title": "Project B's ticket"}},
        # A reference to A's record: no such record in B.
        {"owner_id": a.subject, "data": {"title": "B's child ticket", "parent": a.records["public"]}},
    ],
    "update_record": lambda a: [{"data": {"title": "Project B was here"}}],
    "insert_records": lambda a: [{"records": [{"owner_id": a.subject, "data": {"title": "B's batch"}},
                                              {"data": {"title": "B's child", "parent": a.records["private"]}}]}],
    "query_records": lambda a: [
        {"where": {"title": {"$contains": "ticket"}}},
        {"where": {"record_id": {"$in": list(a.records.values())}}},
        {"owner_id": a.subject, "order_by": "-title"},
    ],
    "search_records": lambda a: [{"query": "secret codeword ticket"},
                                 {"query": "favorite fruit", "owner_id": a.subject}],
    # B's own integration under A's id (ids are per project), then B's writes and runs naming it.
    "create_integration": lambda a: [{"integration_id": a.integrations["crm"], "name": "Project B's", "mode": "webhook",
                                      "output_map": [{"key": "plan", "path": "plan"}]}],
    "update_integration": lambda a: [{"name": "Project B was here", "is_active": False}],
    "test_integration": lambda a: [{"subject_id": a.subject, "chat_id": a.chat}],
    "sync_integration": lambda a: [{"subject_id": a.subject, "chat_id": a.chat}],
    "integration_webhook": lambda a: [{"customer": {"plan": "written by B"}}],
}

@dataclass(frozen=True)
class Turn:
    """A proxied turn B sends on every provider surface."""

    label: str
    mnx: dict[str, Any]
    stream: bool = False
    # B's words hold nothing of A's, so any A sentinel upstream came from A's data.
    text: str = "What is my secret codeword, my favorite fruit and my diary called?"


def proxy_turns(a: ProjectA) -> list[Turn]:
    ids = {"subject_id": a.subject, "chat_id": a.chat}
    everything = {**ids, "history": True, "recall": True, "log": True, "learn": False, "system_prompt": True,
                  "state": {"load": True, "key": a.state_key}, "profile": True, "records": {"recall": True}}
    return [
        Turn("A's context", everything),
        Turn("A's context, streamed", everything, stream=True),
        Turn("A's prompt id", {**ids, "system_prompt": a.prompts["project"]}),
        Turn("A's policy id", {**ids, "memory_policy": a.policies["project"], "learn": True}),
        # B's own learn job: its extraction request carries the policy text resolved for B's subject.
        Turn("learning", {**ids, "learn": True, "log": True}, text="My favorite fruit is papaya"),
    ]


def path_value_sets(endpoint: Endpoint, a: ProjectA) -> list[dict[str, str]]:
    choices = []
    for name in endpoint.params:
        if name not in A_VALUES_BY_PATH_PARAMETER:
            pytest.fail(f"{endpoint}: map path parameter {name!r} to an object kind of project A "
                        f"(A_VALUES_BY_PATH_PARAMETER in {__name__})")
        choices.append([(name, value) for value in A_VALUES_BY_PATH_PARAMETER[name](a)])
    return [dict(combination) for combination in itertools.product(*choices)]


def proxy_probes(endpoint: Endpoint, turns: list[Turn]) -> list[Probe]:
    probes = []
    for turn in turns:
        request = proxy_request(endpoint, turn.text, turn.mnx, stream=turn.stream)
        missing = set(endpoint.params) - set(request.path_values)
        assert not missing, f"{endpoint}: the proxy request builder fills no path parameter {missing}"
        probes.append(Probe(endpoint, request.path_values, {}, request.headers, request.json, turn.label))
    return probes


def probes_for(endpoint: Endpoint, a: ProjectA) -> list[Probe]:
    if is_proxy(endpoint):
        return proxy_probes(endpoint, proxy_turns(a))
    headers = {"x-subject-id": a.subject}
    if endpoint.writes:
        if endpoint.handler not in HOSTILE_BODIES:
            pytest.fail(f"{endpoint}: add bodies aimed at A's objects for handler {endpoint.handler!r} "
                        f"(HOSTILE_BODIES in {__name__})")
        return [Probe(endpoint, values, {}, headers, body)
                for values in path_value_sets(endpoint, a) for body in HOSTILE_BODIES[endpoint.handler](a)]
    return [Probe(endpoint, values, query, headers)
            for values in path_value_sets(endpoint, a) for query in query_variants(a)]


# -- B's sweep --------------------------------------------------------------------------------

def twin_of(value: str) -> str:
    """A value of the same form as one of A's ids that exists nowhere."""
    prefix = re.match(r"^[a-z]+_", value)
    return (prefix[0] if prefix else "twin-") + secrets.token_hex(12)


class Sweep:
    """Sends B's probes and collects every violation of the property (with request and answer)."""

    def __init__(self, gateway, a: ProjectA, client: httpx.Client) -> None:
        self.gateway = gateway
        self.a = a
        self.client = client
        self.violations: list[str] = []
        # Ids of A's that B has since used for objects of its own (ids are per project).
        self.owned: set[str] = set()
        self.twins = {name: twin_of(name) for name in a.names}
        self.calls = 0

    def swap(self, text: str) -> str:
        for name in sorted(self.twins, key=len, reverse=True):
            text = text.replace(name, self.twins[name])
        return text

    def run(self, probe: Probe) -> None:
        response = self._send_and_check(probe)
        twin = probe.with_strings(self.swap)
        if twin == probe:  # it names nothing of A's
            return
        twin_response = self._send_and_check(twin)
        seen = (response.status_code, error_code(response))
        unknown = (twin_response.status_code, error_code(twin_response))
        if seen != unknown:
            self.violations.append(
                f"existence oracle: {probe.describe()} -> {seen} but with ids that exist nowhere -> {unknown}\n"
                f"    A's ids: {response.text[:300]}\n    unknown: {twin_response.text[:300]}")

    def _send_and_check(self, probe: Probe) -> httpx.Response:
        before = len(self.gateway.forwarded())
        response = probe.send(self.client)
        self.calls += 1
        forwarded = self.gateway.forwarded()[before:]
        where = probe.describe()
        # The sweep's extractor model fails by design (FAILING_EXTRACTOR): POST /memories/extract
        # answers 502 extraction_failed after forwarding B's text, which is still checked for leaks below.
        extractor_failed = (probe.url.endswith("/memories/extract") and response.status_code == 502
                            and "extraction_failed" in response.text)
        if response.status_code >= 500 and not extractor_failed:
            self.violations.append(f"server error: {where} -> {response.status_code} {response.text[:300]}")
        if response.status_code in (401, 403):
            self.violations.append(f"B's key refused (this probe proves nothing): {where} -> {response.text[:300]}")
        answer = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in self.leaks(answer, probe):
            self.violations.append(f"leak in the answer: {where} -> {response.status_code} shows {secret!r}: "
                                   f"{excerpt(answer, secret)}")
        upstream = json.dumps(forwarded)
        for secret in self.leaks(upstream, probe):
            self.violations.append(f"leak upstream: {where} forwarded {secret!r}: {excerpt(upstream, secret)}")
        if probe.endpoint.writes and response.is_success and isinstance(probe.json, dict):
            # A client-chosen id ("integration_id" for integrations) naming one of A's is now B's too.
            chosen = probe.json.get("id") or probe.json.get("integration_id")
            if chosen in self.a.ids:
                self.owned.add(chosen)
        return response

    def leaks(self, text: str, probe: Probe) -> list[str]:
        sent = probe.sent()
        return sorted(secret for secret in self.a.secrets
                      if secret in text and secret not in self.owned and not any(secret in s for s in sent))


def excerpt(text: str, secret: str, width: int = 160) -> str:
    at = text.index(secret)
    return repr(text[max(0, at - width):at + len(secret) + width])


# -- A's own view ----------------------------------------------------------------------------

def read_everything(client: httpx.Client, probes: list[Probe]) -> dict[str, tuple[int, Any]]:
    return {probe.describe(): unstamped(comparable(probe.send(client))) for probe in probes}


def unstamped(read: tuple[int, Any]) -> tuple[int, Any]:
    """A read without the time a subject export was made (its header's exported_at)."""
    status, body = read
    return status, re.sub(r'"exported_at":"[^"]*"', "", body) if isinstance(body, str) else body


ID_FIELDS = {"id", "event_id", "memory_id", "record_id", "superseded_by", "duplicate_of", "claim_id", "active_claim_id",
             "assertion_id", "edge_id", "from_claim_id", "to_claim_id", "source_memory_id", "integration_id"}
ID_LIST_FIELDS = {"superseded_ids", "prompt_ids", "memory_ids", "superseded_claim_ids", "superseded_memory_ids",
                  "restored_memory_ids"}
# Shorter values could turn up in any text by chance; the gateway's ids are far longer.
MIN_ID_LENGTH = 8


def object_ids(value: Any) -> set[str]:
    """Every object id in a response body (ids of memories, claims, prompts, policies, jobs, events...)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ID_FIELDS and isinstance(item, str) and len(item) >= MIN_ID_LENGTH:
                found.add(item)
            elif key in ID_LIST_FIELDS and isinstance(item, list):
                found.update(i for i in item if isinstance(i, str) and len(i) >= MIN_ID_LENGTH)
            else:
                found |= object_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= object_ids(item)
    return found


def client_for(gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"x-mnexium-key": key, **PROVIDER_HEADERS}, timeout=30)


def control_turns_forward_a_context(gateway, a: ProjectA, client: httpx.Client) -> None:
    """The turn B sends, sent with A's key, does carry A's context upstream on every surface."""
    expected = [a.sentinels[label] for label in ("projprompt", "subjprompt", "chatprompt", "state", "codeword",
                                                 "history", "profile", "nickname", "rprivate", "rpublic")]
    for endpoint in endpoints():
        if not is_proxy(endpoint):
            continue
        [probe] = proxy_probes(endpoint, proxy_turns(a)[:1])
        before = len(gateway.forwarded())
        response = probe.send(client)
        assert response.status_code == 200, (probe.describe(), response.text)
        upstream = json.dumps(gateway.forwarded()[before:])
        missing = [word for word in expected if word not in upstream]
        assert not missing, f"{endpoint}: A's own turn did not forward {missing}, so B's turn proves nothing"


def summary(violations: list[str], calls: int) -> str:
    kinds = collections.Counter(v.split(":", 1)[0] for v in violations)
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    header = f"{len(violations)} isolation violation(s) in {calls} calls by project B ({counts}):"
    return "\n".join([header, *violations])


def placeholder_project_a() -> ProjectA:
    """A ProjectA with made-up ids: enough to build every probe without a gateway."""
    a = ProjectA(subject="subject-a", chat="chat-a", state_key="plan-a",
                 memories={"secret": "mem_placeholder", "fruit": "mem_placeholder_fruit"},
                 prompts={"project": "sp_placeholder"}, policies={"project": "mp_placeholder"},
                 claims={"drink": "clm_placeholder"},
                 records={"private": "rec_placeholder", "public": "rec_placeholder_public"},
                 integrations={"crm": "int_placeholder"}, job="job_placeholder")
    a.mark("codeword")
    return a


def check_what_b_learn_jobs_forwarded(gateway, a: ProjectA, client_b: httpx.Client, sweep: Sweep, since: int) -> None:
    """B's learn jobs run in the background: their extraction requests must carry nothing of A's."""
    def b_jobs_ran() -> bool:
        return all(job["status"] == "failed" for job in client_b.get("/api/v1/jobs").json()["data"])
    assert wait_until(b_jobs_ran, timeout=20), client_b.get("/api/v1/jobs").text
    forwarded = gateway.forwarded()[since:]
    assert any(request["body"].get("model") == FAILING_EXTRACTOR for request in forwarded)
    for request in forwarded:
        text = json.dumps(request)
        for label, word in a.sentinels.items():
            if word in text:
                sweep.violations.append(f"leak upstream: a request forwarded during B's calls holds A's {label} "
                                        f"{word!r}: {excerpt(text, word)}")


# -- the tests --------------------------------------------------------------------------------

def test_every_route_can_be_probed():
    """Fails fast, naming what to add, for a route this module cannot build requests for."""
    a = placeholder_project_a()
    unprobed = [str(endpoint) for endpoint in endpoints() if not probes_for(endpoint, a)]
    assert not unprobed, f"no probe for {unprobed}"


def test_project_b_cannot_read_or_change_project_a_through_any_route(start_gateway, storage):
    gateway = start_gateway(storage, learning={"extractor": {"provider": "litellm", "model": FAILING_EXTRACTOR},
                                               "retry_base_seconds": 3600, "poll_seconds": 0.2})
    with client_for(gateway, KEY) as client_a, client_for(gateway, KEY_B) as client_b:
        a = populate_project_a(gateway, client_a)
        control_turns_forward_a_context(gateway, a, client_a)

        table = endpoints()
        reads = [p for e in table if e.reads for p in probes_for(e, a)]
        writes = [p for e in table if e.writes for p in probes_for(e, a)]
        others = [p for e in table if not (e.reads or e.writes) for p in probes_for(e, a)]  # DELETE and the like

        # Control: the very requests B will make show A everything, with A's key.
        seen_by_a = read_everything(client_a, reads)
        a.ids = object_ids([body for _, body in seen_by_a.values()]) - {a.subject, a.chat, a.state_key}
        assert set(a.memories.values()) | set(a.prompts.values()) | set(a.policies.values()) | set(
            a.claims.values()) | {a.records["private"], a.records["public"]} <= a.ids  # (a deleted record shows none)
        shown = json.dumps(list(seen_by_a.values()))
        unseen = [label for label, word in a.sentinels.items() if word not in shown]
        assert not unseen, f"no read request shows A's {unseen}: B's probes would prove nothing about them"

        expect(client_b.post("/api/v1/records/schemas", json=B_RECORD_SCHEMA), 201)
        sweep = Sweep(gateway, a, client_b)
        forwarded_before_b = len(gateway.forwarded())
        for probe in [*reads, *writes, *others, *reads]:  # reads again once B has written and deleted
            sweep.run(probe)
        check_what_b_learn_jobs_forwarded(gateway, a, client_b, sweep, since=forwarded_before_b)

        # A's data is intact: every read returns what it returned before B started.
        seen_by_a_after = read_everything(client_a, reads)
        for where, before in seen_by_a.items():
            # GET /metrics counts every call (B's too): probed for leaks, but it witnesses no stored data.
            if seen_by_a_after[where] != before and not where.startswith("GET /metrics"):
                sweep.violations.append(f"A's data changed: {where}\n    before: {before}\n"
                                        f"    after:  {seen_by_a_after[where]}")

    violations = list(dict.fromkeys(sweep.violations))
    assert not violations, summary(violations, sweep.calls)
