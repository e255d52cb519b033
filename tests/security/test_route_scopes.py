"""Scopes on every route: a key may call a route exactly when one of its scopes grants it.

The property, for every route and method the app serves:

* a key holding every fine-grained scope except the ones that grant the route (and no
  coarse or wildcard scope) is refused with 403 in the surface's own error envelope
  (Mnexium REST ``{"error": "forbidden", ...}``, OpenAI ``permission_error`` on
  /chat/completions and /responses, Anthropic's on /messages, Google's on the Gemini
  routes), and the refused call stored, changed and forwarded nothing;
* a key holding only one granting scope is let through (not 401/403; a 400 or 404 for
  the test's request is fine), and so are the method's coarse scope (``read`` for
  GET/HEAD, ``write`` for POST/PUT/PATCH, ``delete`` for DELETE), the resource wildcard
  (``memories:*``) and ``*``; the other methods' coarse scopes are not enough;
* an unknown or missing key is 401, in the surface's envelope.

Why generated from the route table: the cases are built from ``create_app(...).routes``,
so a route added later is tested without touching this file, except for what a test must
not take from the code under test: the scope each route should need. ``EXPECTED_SCOPES``
states it, from docs/features.md and gateway/app.py; a route missing from the map fails with
"add its scope here", and an entry naming no route fails too. Where the endpoint wrapper
exposes the scope and surface it enforces (``scope`` / ``surface`` attributes), they are
checked against the map and the the documented surface rule. A new write handler needs a
request body in ``VALID_BODIES`` and a new path parameter an entry in ``PATH_VALUES``
(each fails with what to add).

Proxy routes are tested at the route level only (``chat:write``, or ``responses:write`` on
/responses): the requests let through switch off every optional feature (history, logging,
recall, learning, system prompt), whose own scopes are tests/security/test_feature_scopes.py's
business; refused ones are sent as a plain client sends them (the configured defaults on),
and must reach neither the provider nor the store.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import KEY, Gateway, base_config, edge_memory
from tests.fake_upstream import ServerThread
from tests.security.route_table import (
    PROVIDER_HEADERS, Endpoint, comparable, endpoint_id, endpoints, error_message, error_shape_problem, is_proxy,
    proxy_request, send, surface_of,
)

API = "/api/v1"
PUBLIC = None  # a route that needs no key at all

# Routes any valid key may call, whatever its scopes (gateway.routing.ANY_VALID_KEY): they tell
# the caller only about its own key. Not in EXPECTED_SCOPES: no scope grants or refuses them.
ANY_VALID_KEY_ROUTES = {("GET", f"{API}/keys/self")}

# (method, route path) -> the fine-grained scopes that each grant it. HEAD is GET's.
EXPECTED_SCOPES: dict[tuple[str, str], tuple[str, ...] | None] = {
    # The provider surfaces.
    ("POST", f"{API}/chat/completions"): ("chat:write",),
    ("POST", "/v1/chat/completions"): ("chat:write",),
    # /responses takes the contract's responses:write, and chat:write like every provider
    # surface (the reworked proxy scope model). Before that rework it took responses:write
    # only: the tests read these two tuples, nothing else needs to change with them.
    ("POST", f"{API}/responses"): ("chat:write", "responses:write"),
    ("POST", "/v1/responses"): ("chat:write", "responses:write"),
    ("POST", f"{API}/messages"): ("chat:write",),
    ("POST", "/v1/messages"): ("chat:write",),
    ("POST", "/v1beta/models/{target}"): ("chat:write",),
    ("POST", "/v1/models/{target}"): ("chat:write",),
    # Chat history.
    ("GET", f"{API}/chat/history/list"): ("history:read",),
    ("GET", f"{API}/chat/history/read"): ("history:read",),
    ("DELETE", f"{API}/chat/history/delete"): ("history:delete",),
    # Memories.
    ("GET", f"{API}/memories"): ("memories:read",),
    ("POST", f"{API}/memories"): ("memories:write",),
    ("GET", f"{API}/memories/search"): ("memories:search",),
    ("GET", f"{API}/memories/superseded"): ("memories:read",),
    ("GET", f"{API}/memories/recalls"): ("memories:read",),
    ("GET", f"{API}/memories/{{memory_id}}"): ("memories:read",),
    ("PATCH", f"{API}/memories/{{memory_id}}"): ("memories:write",),
    ("DELETE", f"{API}/memories/{{memory_id}}"): ("memories:delete",),
    ("POST", f"{API}/memories/{{memory_id}}/restore"): ("memories:write",),
    ("GET", f"{API}/memories/{{memory_id}}/claims"): ("memories:read",),
    ("POST", f"{API}/memories/extract"): ("memories:write",),
    # Claims (the truth graph): read with memories:read (contract §7), written with
    # memories:write (the contract's inference for claim writes, §1).
    ("POST", f"{API}/claims"): ("memories:write",),
    ("GET", f"{API}/claims/{{claim_id}}"): ("memories:read",),
    ("POST", f"{API}/claims/{{claim_id}}/retract"): ("memories:write",),
    ("GET", f"{API}/claims/subject/{{subject_id}}/truth"): ("memories:read",),
    ("GET", f"{API}/claims/subject/{{subject_id}}/slot/{{slot:path}}"): ("memories:read",),
    ("GET", f"{API}/claims/subject/{{subject_id}}/slots"): ("memories:read",),
    ("GET", f"{API}/claims/subject/{{subject_id}}/graph"): ("memories:read",),
    ("GET", f"{API}/claims/subject/{{subject_id}}/history"): ("memories:read",),
    # Jobs and subject erasure.
    ("GET", f"{API}/jobs"): ("jobs:read",),
    # Running a waiting job now changes when it runs: the family's write scope (coarse: write).
    ("POST", f"{API}/jobs/{{job_id}}/retry"): ("jobs:write",),
    # The project's subjects, for browsing (gateway/subject_directory.py): a scope of its own.
    ("GET", f"{API}/subjects"): ("subjects:read",),
    ("DELETE", f"{API}/subjects/{{subject_id}}"): ("subjects:delete",),
    # Everything of one subject as JSONL (gateway/api/subject_export.py): a scope of its own.
    ("GET", f"{API}/subjects/{{subject_id}}/export"): ("subjects:export",),
    # The audit log (contract §15).
    ("GET", f"{API}/audit/requests"): ("audit:read",),
    # System prompts. Deleting one takes prompts:write (gateway/app.py), unlike the other
    # resources, whose DELETE takes <resource>:delete.
    ("GET", f"{API}/prompts"): ("prompts:read",),
    ("POST", f"{API}/prompts"): ("prompts:write",),
    ("GET", f"{API}/prompts/resolve"): ("prompts:read",),
    ("GET", f"{API}/prompts/{{prompt_id}}"): ("prompts:read",),
    ("PATCH", f"{API}/prompts/{{prompt_id}}"): ("prompts:write",),
    ("DELETE", f"{API}/prompts/{{prompt_id}}"): ("prompts:write",),
    # Memory policies.
    ("GET", f"{API}/memory/policies"): ("memory_policies:read",),
    ("POST", f"{API}/memory/policies"): ("memory_policies:write",),
    ("GET", f"{API}/memory/policies/resolve"): ("memory_policies:read",),
    ("GET", f"{API}/memory/policies/{{policy_id}}"): ("memory_policies:read",),
    ("PATCH", f"{API}/memory/policies/{{policy_id}}"): ("memory_policies:write",),
    ("DELETE", f"{API}/memory/policies/{{policy_id}}"): ("memory_policies:delete",),
    # Agent state.
    ("GET", f"{API}/state"): ("state:read",),
    ("GET", f"{API}/state/{{key:path}}"): ("state:read",),
    ("PUT", f"{API}/state/{{key:path}}"): ("state:write",),
    ("DELETE", f"{API}/state/{{key:path}}"): ("state:delete",),
    # Profiles (contract §8). Deleting a field takes the contract's profiles:write, or the
    # gateway's <resource>:delete (gateway/api/profiles.py).
    ("GET", f"{API}/profiles"): ("profiles:read",),
    ("PATCH", f"{API}/profiles"): ("profiles:write",),
    ("DELETE", f"{API}/profiles"): ("profiles:write", "profiles:delete"),
    ("GET", f"{API}/profiles/schema"): ("profiles:read",),
    # Records (contract §10). Query and search read, though POSTed; a soft delete takes
    # records:write (the scopes) or the gateway's <resource>:delete.
    ("POST", f"{API}/records/schemas"): ("records:write",),
    ("GET", f"{API}/records/schemas"): ("records:read",),
    ("GET", f"{API}/records/schemas/{{type_name}}"): ("records:read",),
    ("GET", f"{API}/records/{{type_name}}"): ("records:read",),
    ("POST", f"{API}/records/{{type_name}}"): ("records:write",),
    ("POST", f"{API}/records/{{type_name}}/batch"): ("records:write",),
    ("POST", f"{API}/records/{{type_name}}/query"): ("records:read",),
    ("POST", f"{API}/records/{{type_name}}/search"): ("records:read",),
    ("GET", f"{API}/records/{{type_name}}/{{record_id}}"): ("records:read",),
    ("PUT", f"{API}/records/{{type_name}}/{{record_id}}"): ("records:write",),
    ("DELETE", f"{API}/records/{{type_name}}/{{record_id}}"): ("records:write", "records:delete"),
    ("GET", f"{API}/records/{{type_name}}/{{record_id}}/history"): ("records:read",),
    # Memory events (contract §13: memories:read or events:read).
    ("GET", f"{API}/events/memories"): ("memories:read", "events:read"),
    # Integrations (contract §16). test, sync (outbound calls) and webhooks (cache writes) take
    # integrations:write; DELETE also the gateway's <resource>:delete.
    ("GET", f"{API}/integrations"): ("integrations:read",),
    ("POST", f"{API}/integrations"): ("integrations:write",),
    ("GET", f"{API}/integrations/{{integration_id}}"): ("integrations:read",),
    ("PATCH", f"{API}/integrations/{{integration_id}}"): ("integrations:write",),
    ("DELETE", f"{API}/integrations/{{integration_id}}"): ("integrations:write", "integrations:delete"),
    ("POST", f"{API}/integrations/{{integration_id}}/test"): ("integrations:write",),
    ("POST", f"{API}/integrations/{{integration_id}}/sync"): ("integrations:write",),
    ("POST", f"{API}/integrations/{{integration_id}}/webhook"): ("integrations:write",),
    # Liveness.
    ("GET", "/health"): PUBLIC,
    # Prometheus metrics of the process (gateway/metrics.py).
    ("GET", "/metrics"): ("metrics:read",),
    # The browser dashboard's page and files (gateway/dashboard/): no data in them; its script asks for a key.
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/dashboard/dashboard.js"): PUBLIC,
    ("GET", "/dashboard/dashboard.css"): PUBLIC,
}

# The coarse scope each HTTP method is granted by (docs/features.md: Projects, keys and scopes).
COARSE_BY_METHOD = {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "PATCH": "write",
                    "DELETE": "delete"}
COARSE = ("read", "write", "delete")
ALL_FINE_SCOPES = frozenset(scope for scopes in EXPECTED_SCOPES.values() if scopes for scope in scopes)


def map_key(endpoint: Endpoint) -> tuple[str, str]:
    return ("GET" if endpoint.method == "HEAD" else endpoint.method), endpoint.path


def expected_scopes(endpoint: Endpoint) -> tuple[str, ...]:
    route = map_key(endpoint)
    if route not in EXPECTED_SCOPES:
        pytest.fail(f"{endpoint} is not in the expected-scope map: add its scope here "
                    f"(EXPECTED_SCOPES in {__name__}, from docs/features.md and gateway/app.py)")
    scopes = EXPECTED_SCOPES[route]
    assert scopes is not PUBLIC
    return scopes


def resource_of(scope: str) -> str:
    return scope.split(":", 1)[0]


# -- the project's keys, one per scope set the tests need ------------------------------------

def _key_for(label: str) -> str:
    return "mnx_live_" + re.sub(r"[^a-z0-9]+", "_", label)


def _scope_sets() -> dict[str, list[str]]:
    """Key label -> its scopes."""
    sets: dict[str, list[str]] = {"star": ["*"]}
    for scope in sorted(ALL_FINE_SCOPES):
        sets[f"only {scope}"] = [scope]
        sets[f"wildcard {resource_of(scope)}:*"] = [f"{resource_of(scope)}:*"]
    for granting in {scopes for scopes in EXPECTED_SCOPES.values() if scopes}:
        sets[f"without {' '.join(sorted(granting))}"] = sorted(ALL_FINE_SCOPES - set(granting))
    for coarse in COARSE:
        sets[f"coarse {coarse}"] = [coarse]
        sets[f"coarse except {coarse}"] = [c for c in COARSE if c != coarse]
    return sets


SCOPE_SETS = _scope_sets()


def key(label: str) -> str:
    assert label in SCOPE_SETS, label
    return _key_for(label)


def without_label(endpoint: Endpoint) -> str:
    """The label of the key holding every fine-grained scope but the ones that grant ``endpoint``."""
    return f"without {' '.join(sorted(expected_scopes(endpoint)))}"


@dataclass
class ScopedGateway(Gateway):
    http: httpx.Client | None = None  # one connection pool for the module (a client per call costs ~50 ms)


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory) -> ScopedGateway:
    """One gateway for the module, with a key per scope set (start_gateway is per test: ~0.5 s x 380 cases)."""
    root = tmp_path_factory.mktemp("route-scopes")
    keys = [{"name": "admin", "key": KEY, "scopes": ["*"]}]
    keys += [{"name": label, "key": _key_for(label), "scopes": scopes} for label, scopes in SCOPE_SETS.items()]
    config = base_config(provider.url, {"backend": "sqlite", "sqlite": {"path": str(root / "gateway.db")}},
                         projects=[{"id": "project-a", "keys": keys}], memory=edge_memory(root / "memories"))
    server = ServerThread(create_app(config)).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield ScopedGateway(server.url, config, provider, http)
    server.stop()


# -- what the requests name -------------------------------------------------------------------

@dataclass(frozen=True)
class Objects:
    """A subject with one object of every kind, so that each route's request names real data."""

    subject: str
    chat: str
    state_key: str
    memory_id: str  # a superseded memory: restore, PATCH and DELETE would each change it
    prompt_id: str
    policy_id: str
    claim_id: str  # the subject's favorite_color truth (blue), from the second memory
    record_id: str  # a ticket (type RECORD_TYPE) the subject owns
    # Pull and webhook; its host does not resolve, so a test or sync let through fails fast (result ok: false).
    integration_id: str


_counter = itertools.count()


def create_objects(gateway: ScopedGateway) -> Objects:
    n = next(_counter)
    subject, chat, state_key = f"scope-subject-{n}", f"scope-chat-{n}", f"scope-state-{n}"

    def made(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = gateway.http.request(method, url, **{**kwargs, "headers": {
            "x-mnexium-key": KEY, **PROVIDER_HEADERS, **kwargs.get("headers", {})}})
        assert response.status_code in (200, 201), response.text
        return response.json()

    old = made("POST", f"{API}/memories", json={"subject_id": subject, "text": "User's favorite color is red"})
    made("POST", f"{API}/memories", json={"subject_id": subject, "text": "User's favorite color is blue"})
    prompt = made("POST", f"{API}/prompts", json={"name": f"p{n}", "prompt_text": "Be brief."})
    policy = made("POST", f"{API}/memory/policies", json={"name": f"m{n}", "policy_text": "Keep facts."})
    made("PUT", f"{API}/state/{state_key}", headers={"x-subject-id": subject}, json={"value": {"step": 1}})
    made("PATCH", f"{API}/profiles", json={"subject_id": subject, "updates": [{"field_key": "name", "value": "Scope"}]})
    made("POST", "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hello"}], "mnx": {"subject_id": subject, "chat_id": chat}})
    truth = made("GET", f"{API}/claims/subject/{subject}/slot/favorite_color")
    made("POST", f"{API}/records/schemas", json=RECORD_SCHEMA)
    record = made("POST", f"{API}/records/{RECORD_TYPE}", json={"owner_id": subject, "data": {
        "title": "Printer jam", "status": "open"}})
    integration = made("POST", f"{API}/integrations", json=INTEGRATION)
    return Objects(subject, chat, state_key, old["id"], prompt["id"], policy["id"], truth["active_claim_id"],
                   record["record_id"], integration["integration"]["integration_id"])


RECORD_TYPE = "scope_ticket"
RECORD_SCHEMA = {"type_name": RECORD_TYPE, "fields": {"title": {"type": "string", "required": True},
                                                      "status": {"type": "string"}}}
INTEGRATION = {"name": "scope crm", "mode": "both", "endpoint_url": "https://integration.invalid/data",
               "webhook_secret": "scope-webhook-secret", "output_map": [{"key": "plan", "path": "customer.plan"}]}


@pytest.fixture(scope="module")
def shared(gateway) -> Objects:
    """Objects the tests that only look at the status share (a DELETE let through may remove them: a 404 is fine)."""
    return create_objects(gateway)


# Path parameter name -> which object a request names there.
PATH_VALUES: dict[str, Callable[[Objects], str]] = {
    "memory_id": lambda o: o.memory_id,
    "prompt_id": lambda o: o.prompt_id,
    "policy_id": lambda o: o.policy_id,
    "key": lambda o: o.state_key,
    "subject_id": lambda o: o.subject,
    "claim_id": lambda o: o.claim_id,
    "slot": lambda o: "favorite_color",
    "type_name": lambda o: RECORD_TYPE,
    "record_id": lambda o: o.record_id,
    "integration_id": lambda o: o.integration_id,
    # No job waits in this gateway (learning is off, index repairs finish at once): a call let
    # through is a 404, a refused one must be a 403 all the same. tests/test_job_retry.py and
    # the tenant-isolation sweep retry real jobs.
    "job_id": lambda o: "job_no_such_job_in_the_scope_tests",
}

# Write handler -> a body that would store or change something if the call were let through.
VALID_BODIES: dict[str, Callable[[Objects], Any]] = {
    "create_memory": lambda o: {"subject_id": o.subject, "text": "User's favorite color is green"},
    "update_memory": lambda o: {"text": "User's favorite color is purple"},
    "restore_memory": lambda o: None,
    "extract_memories": lambda o: {"subject_id": o.subject, "text": "My favorite color is teal", "learn": True},
    "create_prompt": lambda o: {"name": "new", "prompt_text": "A new prompt"},
    "update_prompt": lambda o: {"prompt_text": "Changed"},
    "create_policy": lambda o: {"name": "new", "policy_text": "A new policy"},
    "update_policy": lambda o: {"policy_text": "Changed"},
    "put_state": lambda o: {"value": {"changed": True}},
    "update_profile": lambda o: {"subject_id": o.subject, "updates": [{"field_key": "name", "value": "Changed"}]},
    "create_claim": lambda o: {"subject_id": o.subject, "predicate": "favorite_color", "object_value": "green"},
    "retract_claim": lambda o: None,
    "retry_job": lambda o: None,
    "define_schema": lambda o: {**RECORD_SCHEMA, "description": "Changed"},
    "insert_record": lambda o: {"owner_id": o.subject, "data": {"title": "Another jam"}},
    "update_record": lambda o: {"data": {"status": "closed"}},
    "insert_records": lambda o: {"records": [{"owner_id": o.subject, "data": {"title": "Batch jam"}}]},
    "query_records": lambda o: {"where": {"status": "open"}},
    "search_records": lambda o: {"query": "printer"},
    "create_integration": lambda o: {**INTEGRATION, "name": "new"},
    "update_integration": lambda o: {"description": "Changed", "is_active": False},
    "test_integration": lambda o: {"subject_id": o.subject},
    "sync_integration": lambda o: {"subject_id": o.subject},
    # Unsigned: a call let through is a 400 (signature required), refused ones must change nothing.
    "integration_webhook": lambda o: {"customer": {"plan": "changed"}},
}

# Every optional proxy feature off: the route's own scope must be enough for such a turn.
FEATURES_OFF = {"history": False, "log": False, "learn": False, "recall": False, "system_prompt": False}


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    json: Any

    def send(self, gateway: ScopedGateway, project_key: str | None) -> httpx.Response:
        headers = {**PROVIDER_HEADERS, **self.headers}
        if project_key is not None:
            headers["x-mnexium-key"] = project_key
        return send(gateway.http, self.method, self.url, params=self.params, headers=headers, json=self.json)


def request_for(endpoint: Endpoint, objects: Objects, *, with_defaults: bool = False) -> Request:
    """A well-formed request to ``endpoint`` about ``objects``.

    Proxy turns switch their optional features off, unless ``with_defaults``: then they
    carry only the subject and chat ids, as a plain client's turn does, and the configured
    defaults apply.
    """
    if is_proxy(endpoint):
        mnx = {"subject_id": objects.subject, "chat_id": objects.chat, **({} if with_defaults else FEATURES_OFF)}
        turn = proxy_request(endpoint, "Hello there", mnx)
        return Request(endpoint.method, endpoint.url(turn.path_values), {}, turn.headers, turn.json)
    values = {}
    for name in endpoint.params:
        if name not in PATH_VALUES:
            pytest.fail(f"{endpoint}: map path parameter {name!r} to an object kind (PATH_VALUES in {__name__})")
        values[name] = PATH_VALUES[name](objects)
    body = None
    if endpoint.writes:
        if endpoint.handler not in VALID_BODIES:
            pytest.fail(f"{endpoint}: add a request body for handler {endpoint.handler!r} (VALID_BODIES in {__name__})")
        body = VALID_BODIES[endpoint.handler](objects)
    query = {"subject_id": objects.subject, "chat_id": objects.chat, "q": "color"}
    return Request(endpoint.method, endpoint.url(values), query, {"x-subject-id": objects.subject}, body)


def everything_readable(gateway: ScopedGateway, objects: Objects) -> dict[str, tuple[int, Any]]:
    """What the admin key reads through every GET route about ``objects`` (the 'nothing changed' witness)."""
    reads = {}
    for endpoint in endpoints():
        # GET /metrics counts every call, these reads included: it witnesses no stored data. A
        # subject export is the other reads again, stamped with the time it was made.
        if (endpoint.method == "GET" and not is_proxy(endpoint) and endpoint.path != "/metrics"
                and not endpoint.path.endswith("/export")):
            request = request_for(endpoint, objects)
            reads[f"GET {request.url}"] = comparable(request.send(gateway, KEY))
    return reads


def assert_let_through(response: httpx.Response, endpoint: Endpoint, label: str) -> None:
    assert response.status_code not in (401, 403), (
        f"{endpoint} refused a key with {SCOPE_SETS[label]}: {response.status_code} {response.text[:300]}")
    assert response.status_code < 500, (
        f"{endpoint} with {SCOPE_SETS[label]}: {response.status_code} {response.text[:300]}")


def assert_refused(response: httpx.Response, endpoint: Endpoint, status: int, why: str) -> None:
    if endpoint.method == "HEAD":  # no body to read the envelope from
        assert response.status_code == status, f"{endpoint} {why}: {response.status_code}, expected {status}"
        return
    problem = error_shape_problem(response, surface_of(endpoint.path), status)
    assert problem is None, f"{endpoint} {why}: {problem}"


# -- the tests --------------------------------------------------------------------------------

SCOPED = [e for e in endpoints()
          if map_key(e) not in ANY_VALID_KEY_ROUTES and EXPECTED_SCOPES.get(map_key(e), ()) is not PUBLIC]
PUBLIC_ENDPOINTS = [e for e in endpoints() if map_key(e) in EXPECTED_SCOPES and EXPECTED_SCOPES[map_key(e)] is PUBLIC]
scoped_routes = pytest.mark.parametrize("endpoint", SCOPED, ids=endpoint_id)


def test_every_route_has_an_expected_scope_and_every_entry_a_route():
    served = {map_key(e) for e in endpoints()}
    missing = sorted({f"{m} {p}" for m, p in served if (m, p) not in {*EXPECTED_SCOPES, *ANY_VALID_KEY_ROUTES}})
    assert not missing, f"routes without an expected scope: add their scope here (EXPECTED_SCOPES): {missing}"
    stale = sorted(f"{m} {p}" for m, p in [*EXPECTED_SCOPES, *ANY_VALID_KEY_ROUTES] if (m, p) not in served)
    assert not stale, f"EXPECTED_SCOPES names routes the app no longer serves: {stale}"


def test_what_each_route_declares_agrees_with_the_map_and_the_surface_rule():
    """The wrapper's own account of what it enforces (when exposed) must match the spec above."""
    scopes = [f"{e}: EXPECTED_SCOPES says {EXPECTED_SCOPES[map_key(e)]}, the route declares {e.declared_scopes}"
              for e in endpoints() if e.declared_scopes is not None and map_key(e) in EXPECTED_SCOPES
              and set(EXPECTED_SCOPES[map_key(e)] or ()) != set(e.declared_scopes)]
    assert not scopes, "\n".join(scopes)
    surfaces = [f"{e}: errors in the {e.declared_surface} envelope, the documented rule says {surface_of(e.path)}"
                for e in endpoints() if e.declared_surface is not None and e.declared_surface != surface_of(e.path)]
    assert not surfaces, "\n".join(surfaces)


@scoped_routes
def test_a_key_with_every_other_scope_is_refused_and_nothing_happens(gateway, endpoint):
    objects = create_objects(gateway)  # fresh, so that every route names data a call would change
    before = everything_readable(gateway, objects)
    forwarded = len(gateway.forwarded())
    label = without_label(endpoint)
    response = request_for(endpoint, objects, with_defaults=True).send(gateway, key(label))
    assert_refused(response, endpoint, 403, f"with every scope but {expected_scopes(endpoint)} (if one of "
                   f"{SCOPE_SETS[label]} now grants it, add that scope to the route's EXPECTED_SCOPES entry)")
    if endpoint.method != "HEAD":
        message = error_message(response)
        assert any(scope in message for scope in expected_scopes(endpoint)), (
            f"{endpoint}: the 403 does not name the scope it needs: {message!r}")
    assert gateway.forwarded()[forwarded:] == [], f"{endpoint}: a refused call reached the provider"
    after = everything_readable(gateway, objects)
    changed = [where for where in before if before[where] != after[where]]
    assert not changed, f"{endpoint}: a refused call changed what {changed} return"


@scoped_routes
def test_each_granting_scope_alone_lets_the_call_through(gateway, shared, endpoint):
    for scope in expected_scopes(endpoint):
        response = request_for(endpoint, shared).send(gateway, key(f"only {scope}"))
        assert_let_through(response, endpoint, f"only {scope}")


# Routes the method's coarse scope deliberately does not grant: GET /metrics shows the whole
# process's counters, every project's together, so a tenant's "read" key must not read them.
NOT_GRANTED_BY_COARSE = {"/metrics"}


@scoped_routes
def test_the_methods_coarse_scope_and_the_resource_wildcard_let_the_call_through(gateway, shared, endpoint):
    labels = [] if endpoint.path in NOT_GRANTED_BY_COARSE else [f"coarse {COARSE_BY_METHOD[endpoint.method]}"]
    labels += [f"wildcard {resource_of(scope)}:*" for scope in expected_scopes(endpoint)]
    for label in labels:
        assert_let_through(request_for(endpoint, shared).send(gateway, key(label)), endpoint, label)


def test_the_coarse_read_scope_does_not_read_the_process_wide_metrics(gateway, shared):
    [endpoint] = [e for e in SCOPED if e.path == "/metrics" and e.method == "GET"]
    response = request_for(endpoint, shared).send(gateway, key("coarse read"))
    assert_refused(response, endpoint, 403, "with the coarse read scope")


@scoped_routes
def test_the_other_methods_coarse_scopes_are_refused(gateway, shared, endpoint):
    label = f"coarse except {COARSE_BY_METHOD[endpoint.method]}"
    forwarded = len(gateway.forwarded())
    response = request_for(endpoint, shared, with_defaults=True).send(gateway, key(label))
    assert_refused(response, endpoint, 403, f"with {SCOPE_SETS[label]}")
    assert gateway.forwarded()[forwarded:] == [], f"{endpoint}: a refused call reached the provider"


@scoped_routes
def test_the_wildcard_scope_lets_every_call_through(gateway, shared, endpoint):
    assert_let_through(request_for(endpoint, shared).send(gateway, key("star")), endpoint, "star")


@scoped_routes
@pytest.mark.parametrize("project_key", ["mnx_live_nobody_has_this_key", None], ids=["unknown key", "no key"])
def test_an_unknown_or_missing_key_is_401(gateway, shared, endpoint, project_key):
    forwarded = len(gateway.forwarded())
    response = request_for(endpoint, shared, with_defaults=True).send(gateway, project_key)
    assert_refused(response, endpoint, 401, f"with {'no' if project_key is None else 'an unknown'} key")
    assert gateway.forwarded()[forwarded:] == [], f"{endpoint}: an unauthenticated call reached the provider"


@pytest.mark.parametrize("endpoint", PUBLIC_ENDPOINTS, ids=endpoint_id)
def test_public_routes_answer_without_a_key(gateway, endpoint):
    response = httpx.request(endpoint.method, gateway.url + endpoint.path, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("endpoint", [e for e in endpoints() if map_key(e) in ANY_VALID_KEY_ROUTES], ids=endpoint_id)
def test_routes_for_any_valid_key_answer_each_key_about_itself_and_refuse_unknown_keys(gateway, shared, endpoint):
    for label in ["only chat:write", "only memories:read", "coarse read", "star"]:
        response = request_for(endpoint, shared).send(gateway, key(label))
        assert response.status_code == 200, f"{endpoint} with {SCOPE_SETS[label]}: {response.text[:300]}"
        if endpoint.method == "GET" and endpoint.path == f"{API}/keys/self":
            assert response.json() == {"project_id": "project-a", "key_name": label,
                                       "scopes": sorted(SCOPE_SETS[label])}
    for project_key in ["mnx_live_nobody_has_this_key", None]:
        assert_refused(request_for(endpoint, shared).send(gateway, project_key), endpoint, 401, "with a bad key")
