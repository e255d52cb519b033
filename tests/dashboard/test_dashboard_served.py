"""The dashboard as the gateway serves it, and the two routes it needs from the API (no browser here:
tests/dashboard/test_dashboard_browser.py drives the page in Chromium).

* ``/dashboard`` serves the page, its script and stylesheet, each with a strict Content-Security-
  Policy (scripts only from the gateway, never inline; no framing) and X-Frame-Options: DENY;
  nothing is loaded from elsewhere (no CDN); the whole page weighs under 300 KB.
* ``dashboard.enabled: false`` leaves all three paths 404; ``dashboard.path`` moves them.
* The files are package data, so ``pip install`` ships them.
* ``GET /api/v1/keys/self`` tells any valid key its project and scopes, and nothing secret.
* ``GET /api/v1/subjects`` lists the project's subjects (latest active first, with counts), finds
  one by part of its id, and shows another project's subjects to no one. On both backends.
* ``GET /api/v1/memories/superseded?include_successors=true`` brings the memories that replaced
  the listed ones, so the timeline is one request.
* ``GET /api/v1/memories/search?explain=true`` shows what each hit's effective score is made of.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
import pytest

from gateway.dashboard import CONTENT_SECURITY_POLICY
from tests.conftest import KEY, KEY_B, PROVIDER_KEY

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ("/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css")
PAGE_WEIGHT_LIMIT = 300 * 1024
READ_ONLY_KEY = "mnx_live_dashboard_read_only"

PROJECTS = [
    {"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                 {"name": "viewer", "key": READ_ONLY_KEY, "scopes": ["read"]}]},
    {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]},
]


@pytest.fixture(scope="module")
def dashboard_gateway(module_gateway):
    return module_gateway(projects=PROJECTS)


def test_the_page_and_its_files_are_served_with_a_strict_content_security_policy(dashboard_gateway):
    for path, media_type in zip(ASSETS, ("text/html", "text/javascript", "text/css")):
        response = httpx.get(dashboard_gateway.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type)
        policy = response.headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'" and directives["connect-src"] == "'self'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    head = httpx.head(dashboard_gateway.url + "/dashboard")
    assert head.status_code == 200


def test_the_page_runs_no_inline_script_and_loads_nothing_from_elsewhere(dashboard_gateway):
    page = httpx.get(dashboard_gateway.url + "/dashboard").text
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, flags=re.DOTALL)
    assert scripts == [""], "every script is a file of the gateway's own, none inline"
    assert re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', page) == ["/dashboard/dashboard.js"]
    assert re.findall(r'<link\b[^>]*\bhref="([^"]+)"', page) == ["data:,", "/dashboard/dashboard.css"]
    assert re.search(r"\son[a-z]+=", page) is None, "no inline event handler"
    for path in ASSETS:
        body = httpx.get(dashboard_gateway.url + path).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body, flags=re.IGNORECASE), (
            f"{path} names another host")
    # Text from the API is rendered as text only (the browser test renders a hostile memory).
    assert "innerHTML" not in httpx.get(dashboard_gateway.url + "/dashboard/dashboard.js").text.replace(
        "There is no innerHTML in this file.", "")


def test_the_whole_page_weighs_under_300_kb(dashboard_gateway):
    weight = sum(len(httpx.get(dashboard_gateway.url + path).content) for path in ASSETS)
    assert weight < PAGE_WEIGHT_LIMIT, f"the page weighs {weight} bytes"


def test_turned_off_the_dashboard_is_not_served(module_gateway):
    gateway = module_gateway(dashboard={"enabled": False})
    for path in ASSETS:
        assert httpx.get(gateway.url + path).status_code == 404, path
    assert httpx.get(gateway.url + "/health").status_code == 200


def test_the_dashboard_can_be_moved(module_gateway):
    gateway = module_gateway(dashboard={"path": "/ops/memory"})
    page = httpx.get(gateway.url + "/ops/memory")
    assert page.status_code == 200 and 'src="/ops/memory/dashboard.js"' in page.text
    assert httpx.get(gateway.url + "/ops/memory/dashboard.css").status_code == 200
    assert httpx.get(gateway.url + "/dashboard").status_code == 404


def test_the_files_are_package_data_so_the_wheel_ships_them():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = set(package_data["gateway.dashboard"])
    on_disk = {p.name for p in (ROOT / "gateway" / "dashboard").iterdir() if p.suffix in (".html", ".js", ".css")}
    assert shipped == on_disk


# -- GET /api/v1/keys/self ----------------------------------------------------------------------

def test_a_key_learns_its_own_project_and_scopes_and_nothing_secret(dashboard_gateway):
    with dashboard_gateway.rest(READ_ONLY_KEY) as rest:
        answer = rest.get("/keys/self")
    assert answer.status_code == 200
    assert answer.json() == {"project_id": "project-a", "key_name": "viewer", "scopes": ["read"]}
    assert READ_ONLY_KEY not in answer.text
    with dashboard_gateway.rest(KEY_B) as rest:
        assert rest.get("/keys/self").json() == {"project_id": "project-b", "key_name": "main", "scopes": ["*"]}
    unknown = httpx.get(dashboard_gateway.api + "/keys/self", headers={"x-mnexium-key": "mnx_live_nobody"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "unauthorized"
    assert httpx.get(dashboard_gateway.api + "/keys/self").status_code == 401


def test_a_read_only_key_is_refused_writes_the_page_would_hide(dashboard_gateway):
    with dashboard_gateway.rest(READ_ONLY_KEY) as rest:
        refused = rest.post("/memory/policies", json={"name": "x", "policy_text": "Keep nothing."})
        assert refused.status_code == 403 and "memory_policies:write" in refused.json()["message"]
        assert rest.delete("/subjects/anyone").status_code == 403


# -- GET /api/v1/subjects -----------------------------------------------------------------------

def chat(gateway, subject: str, chat_id: str, text: str, key: str = KEY) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, headers={
        "x-mnexium-key": key, "x-openai-key": PROVIDER_KEY}, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
        "mnx": {"subject_id": subject, "chat_id": chat_id, "learn": False}})
    assert response.status_code == 200, response.text


def test_subjects_are_listed_latest_first_with_their_counts(gateway_on):
    with gateway_on.rest() as rest:
        chat(gateway_on, "ann", "ann-1", "hello")
        chat(gateway_on, "ann", "ann-2", "hello again")
        for text in ("User likes tea", "User lives in Oslo"):
            assert rest.post("/memories", json={"subject_id": "bob", "text": text}).status_code == 201
        chat(gateway_on, "cat", "cat-1", "hi")
        rest.post("/memories", json={"subject_id": "other-project-subject", "text": "x"},
                  headers={"x-mnexium-key": KEY_B})
        answer = rest.get("/subjects").json()
        assert [(s["subject_id"], s["memories"], s["chats"]) for s in answer["data"]] == [
            ("cat", 0, 1), ("bob", 2, 0), ("ann", 0, 2)]
        assert all(s["last_active"].endswith("Z") for s in answer["data"]) and answer["complete"] is True
        # Part of an id, any case; an exact id; a search for nothing that exists.
        assert [s["subject_id"] for s in rest.get("/subjects", params={"q": "AN"}).json()["data"]] == ["ann"]
        assert rest.get("/subjects", params={"q": "bob"}).json()["data"][0]["memories"] == 2
        assert rest.get("/subjects", params={"q": "nobody"}).json() == {"data": [], "count": 0, "complete": True}
        assert [s["subject_id"] for s in rest.get("/subjects", params={"limit": 1}).json()["data"]] == ["cat"]
        too_long = rest.get("/subjects", params={"q": "x" * 300})
        assert too_long.status_code == 400 and too_long.json()["error"] == "q_too_long"
    with gateway_on.rest(KEY_B) as rest:
        # Project B sees its own subject only, even when it names A's exactly.
        assert [s["subject_id"] for s in rest.get("/subjects").json()["data"]] == ["other-project-subject"]
        assert rest.get("/subjects", params={"q": "bob"}).json()["data"] == []


def test_an_erased_subject_leaves_the_list(gateway_on):
    with gateway_on.rest() as rest:
        chat(gateway_on, "dora", "dora-1", "hello")
        rest.post("/memories", json={"subject_id": "dora", "text": "User plays chess"})
        assert [s["subject_id"] for s in rest.get("/subjects").json()["data"]] == ["dora"]
        assert rest.delete("/subjects/dora").status_code == 200
        assert rest.get("/subjects").json()["data"] == []
        assert rest.get("/subjects", params={"q": "dora"}).json()["data"] == []


def test_the_superseded_list_brings_the_memories_that_replaced_them(gateway_on):
    with gateway_on.rest() as rest:
        tea = rest.post("/memories", json={"subject_id": "eve", "text": "User's favorite drink is tea"}).json()
        coffee = rest.post("/memories", json={"subject_id": "eve", "text": "User's favorite drink is coffee"}).json()
        water = rest.post("/memories", json={"subject_id": "eve", "text": "User's favorite drink is water"}).json()
        plain = rest.get("/memories/superseded", params={"subject_id": "eve"}).json()
        assert "successors" not in plain and {m["id"] for m in plain["data"]} == {tea["id"], coffee["id"]}
        answer = rest.get("/memories/superseded", params={"subject_id": "eve", "include_successors": "true"}).json()
        # coffee replaced tea and is listed itself; water replaced coffee and is in use: only water comes beside.
        assert [(m["id"], m["text"], m["status"]) for m in answer["successors"]] == [
            (water["id"], "User's favorite drink is water", "active")]
        one = rest.get("/memories/superseded", params={"subject_id": "eve", "include_successors": "true",
                                                       "limit": 1}).json()
        assert len(one["data"]) == 1 and len(one["successors"]) == 1
    with gateway_on.rest(KEY_B) as rest:
        assert rest.get("/memories/superseded", params={"subject_id": "eve", "include_successors": "true"}).json() == {
            "data": [], "count": 0, "successors": []}


def test_a_search_explains_each_effective_score(gateway_on):
    with gateway_on.rest() as rest:
        rest.post("/memories", json={"subject_id": "fay", "text": "User plays the violin", "importance": 90})
        rest.post("/memories", json={"subject_id": "fay", "text": "User's violin teacher is called Anna",
                                     "importance": 10, "confidence": 0.5})
        plain = rest.get("/memories/search", params={"subject_id": "fay", "q": "violin"}).json()["data"]
        assert plain and all("effective_score_parts" not in hit for hit in plain)
        hits = rest.get("/memories/search", params={"subject_id": "fay", "q": "violin", "explain": "true",
                                                    "min_score": 0}).json()
    assert len(hits["data"]) == 2
    for hit in hits["data"]:
        parts = hit["effective_score_parts"]
        assert all(0 <= value <= 1 for value in parts.values())
        assert parts["relevance"] * parts["weight"] == pytest.approx(hit["effective_score"], abs=1e-3)
        standing = 0.55 + 0.25 * parts["importance"] + 0.1 * parts["confidence"] + 0.1 * parts["reinforcement"]
        assert standing * (0.6 + 0.4 * parts["freshness"]) == pytest.approx(parts["weight"], abs=1e-3)
    by_text = {hit["text"]: hit["effective_score_parts"] for hit in hits["data"]}
    assert by_text["User plays the violin"]["importance"] == 0.9
    assert by_text["User's violin teacher is called Anna"]["confidence"] == 0.5
    assert max(parts["relevance"] for parts in by_text.values()) == 1.0  # the best hit's own match
