"""Prompts, agent state and chat history through the Mnexium REST API."""

from __future__ import annotations

import time

from gateway.history import fit_to_budget
from gateway.summaries.tokens import count_tokens, estimate_tokens


# -- system prompts ------------------------------------------------------------------------

def test_prompt_crud_round_trip(gateway):
    with gateway.rest() as rest:
        created = rest.post("/prompts", json={"name": "Support", "prompt_text": "Be kind.", "is_default": True,
                                              "metadata": {"team": "cx"}})
        assert created.status_code == 201
        body = created.json()
        assert body["ok"] is True and body["id"] == body["prompt"]["id"] and body["id"].startswith("sp_")
        prompt_id = body["id"]
        got = rest.get(f"/prompts/{prompt_id}").json()["prompt"]
        assert (got["name"], got["scope"], got["is_default"], got["priority"]) == ("Support", "project", True, 100)
        patched = rest.patch(f"/prompts/{prompt_id}", json={"prompt_text": "Be very kind.", "priority": 5}).json()
        assert patched["prompt"]["prompt_text"] == "Be very kind." and patched["prompt"]["priority"] == 5
        assert [p["id"] for p in rest.get("/prompts").json()["prompts"]] == [prompt_id]
        assert rest.delete(f"/prompts/{prompt_id}").json() == {"ok": True, "deleted": True}
        missing = rest.get(f"/prompts/{prompt_id}")
        assert missing.status_code == 404 and missing.json()["error"] == "prompt_not_found"


def test_posting_a_known_id_replaces_that_prompt(gateway):
    with gateway.rest() as rest:
        assert rest.post("/prompts", json={"id": "sp_fixed", "name": "v1", "prompt_text": "one"}).status_code == 201
        again = rest.post("/prompts", json={"id": "sp_fixed", "name": "v2", "prompt_text": "two"})
        assert again.status_code == 200
        assert [p["name"] for p in rest.get("/prompts").json()["prompts"]] == ["v2"]


def test_only_one_default_per_scope_level(gateway):
    with gateway.rest() as rest:
        first = rest.post("/prompts", json={"name": "a", "prompt_text": "A", "is_default": True}).json()["id"]
        subject = rest.post("/prompts", json={"name": "s", "prompt_text": "S", "is_default": True,
                                              "scope": "subject", "scope_id": "u1"}).json()["id"]
        second = rest.post("/prompts", json={"name": "b", "prompt_text": "B", "is_default": 1}).json()["id"]
        assert rest.get(f"/prompts/{first}").json()["prompt"]["is_default"] is False
        assert rest.get(f"/prompts/{second}").json()["prompt"]["is_default"] is True
        # Another level's default is untouched.
        assert rest.get(f"/prompts/{subject}").json()["prompt"]["is_default"] is True
        rest.patch(f"/prompts/{first}", json={"is_default": True})
        assert rest.get(f"/prompts/{second}").json()["prompt"]["is_default"] is False


def test_resolve_layers_project_subject_chat_and_skips_inactive_or_other_scopes(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "c", "prompt_text": "CHAT", "scope": "chat", "scope_id": "c1",
                                    "is_default": True})
        rest.post("/prompts", json={"name": "p", "prompt_text": "PROJECT", "is_default": True})
        rest.post("/prompts", json={"name": "s", "prompt_text": "SUBJECT", "scope": "subject", "scope_id": "u1",
                                    "is_default": True})
        rest.post("/prompts", json={"name": "x", "prompt_text": "OTHER SUBJECT", "scope": "subject",
                                    "scope_id": "u2", "is_default": True})
        rest.post("/prompts", json={"name": "off", "prompt_text": "INACTIVE", "scope": "chat", "scope_id": "c2",
                                    "is_default": True, "is_active": False})
        combined = rest.get("/prompts/resolve", params={"subject_id": "u1", "chat_id": "c1", "combined": "true"})
        assert combined.json()["prompt_text"] == "PROJECT\n\nSUBJECT\n\nCHAT"
        layered = rest.get("/prompts/resolve", params={"subject_id": "u1"}).json()
        assert [p["prompt_text"] for p in layered["prompts"]] == ["PROJECT", "SUBJECT"]
        assert rest.get("/prompts/resolve", params={"chat_id": "c2", "combined": "true"}).json()[
            "prompt_text"] == "PROJECT"


def test_non_default_prompts_resolve_only_when_asked_in_priority_order(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "late", "prompt_text": "LATE", "priority": 200})
        rest.post("/prompts", json={"name": "early", "prompt_text": "EARLY", "priority": 10})
        assert rest.get("/prompts/resolve", params={"combined": "true"}).json()["prompt_text"] == ""
        every = rest.get("/prompts/resolve", params={"combined": "true", "default_only": "false"}).json()
        assert every["prompt_text"] == "EARLY\n\nLATE"


def test_invalid_prompt_bodies_name_the_field_and_store_nothing(gateway):
    cases = [
        ({"prompt_text": "x"}, "name_required"),
        ({"name": "n"}, "prompt_text_required"),
        ({"name": "n", "prompt_text": "t", "scope": "galaxy"}, "invalid_scope"),
        ({"name": "n", "prompt_text": "t", "scope": "subject"}, "scope_id_required"),
        ({"name": "n", "prompt_text": "t", "priority": "high"}, "invalid_priority"),
        ({"name": "n", "prompt_text": "t", "is_default": "yes"}, "invalid_is_default"),
        ({"name": ["n"], "prompt_text": "t"}, "invalid_name"),
        # A chosen id must be readable back at /prompts/{id}.
        *(({"id": bad, "name": "n", "prompt_text": "t"}, "invalid_id") for bad in ("a/b", "resolve", " x", "\u0007")),
    ]
    with gateway.rest() as rest:
        for body, code in cases:
            response = rest.post("/prompts", json=body)
            assert (response.status_code, response.json()["error"]) == (400, code), body
        assert rest.get("/prompts").json()["prompts"] == []
        assert rest.patch("/prompts/sp_nope", json={"name": "x"}).status_code == 404


# -- agent state -----------------------------------------------------------------------------

def test_state_round_trip_with_deep_values_and_odd_keys(gateway_on):
    value = {"steps": [{"id": 1, "done": True, "meta": {"tags": ["a", None, 2.5]}}], "note": "ünïcode"}
    with gateway_on.rest() as rest:
        headers = {"x-subject-id": "agent-user"}
        for key in ("tool:weather:tc_123", "my-state_key.v1"):
            assert rest.put(f"/state/{key}", headers=headers, json={"value": value, "ttl_seconds": None}).json()[
                "ok"] is True
            got = rest.get(f"/state/{key}", headers=headers).json()
            assert got["value"] == value and got["key"] == key and got["ttl"] is None
        assert rest.put("/state/nullable", headers=headers, json={"value": None}).status_code == 200
        assert rest.get("/state/nullable", headers=headers).json()["value"] is None
        assert rest.delete("/state/my-state_key.v1", headers=headers).json()["ok"] is True
        gone = rest.get("/state/my-state_key.v1", headers=headers)
        assert gone.status_code == 404 and gone.json()["error"] == "not_found"
        # Another subject of the same project sees nothing.
        assert rest.get("/state/tool:weather:tc_123", headers={"x-subject-id": "someone-else"}).status_code == 404


def test_state_ttl_is_honoured_by_the_store(gateway_on):
    with gateway_on.rest() as rest:
        headers = {"x-subject-id": "u"}
        written = rest.put("/state/short", headers=headers, json={"value": "soon gone", "ttl_seconds": 1}).json()
        assert written["ttl"] is not None
        got = rest.get("/state/short", headers=headers).json()
        assert got["ttl_seconds"] == 1 and got["expires_at"] == written["ttl"]
        time.sleep(1.3)
        assert rest.get("/state/short", headers=headers).status_code == 404
    gateway_on.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_body={"mnx": {"subject_id": "u", "state": {"load": True, "key": "short"}}})
    assert gateway_on.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "x"}]


def test_state_bad_input(gateway):
    with gateway.rest() as rest:
        no_subject = rest.put("/state/k", json={"value": 1})
        assert (no_subject.status_code, no_subject.json()["error"]) == (400, "missing_subject_id")
        assert rest.get("/state/k").json()["error"] == "missing_subject_id"
        headers = {"x-subject-id": "u"}
        assert rest.put("/state/k", headers=headers, json={"ttl_seconds": 5}).json()["error"] == "value_required"
        for ttl in (0, -5, "soon", 1.5):
            assert rest.put("/state/k", headers=headers, json={"value": 1, "ttl_seconds": ttl}).json()[
                "error"] == "invalid_ttl_seconds"
        assert rest.get("/state/k", headers=headers).status_code == 404
        no_key = rest.put("/state/", headers=headers, json={"value": 1})
        assert (no_key.status_code, no_key.json()["error"]) == (400, "invalid_key")
        assert rest.get("/state/", headers=headers).json()["error"] == "invalid_key"


# -- chat history ----------------------------------------------------------------------------

def test_history_list_read_delete(gateway_on):
    client = gateway_on.openai()
    for chat, text in (("older", "one"), ("older", "two"), ("newer", "three")):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                                       extra_body={"mnx": {"subject_id": "hist-user", "chat_id": chat,
                                                           "metadata": {"source": "test"}}})
        time.sleep(0.01)
    with gateway_on.rest() as rest:
        chats = rest.get("/chat/history/list", params={"subject_id": "hist-user"}).json()["chats"]
        assert [(c["chat_id"], c["message_count"]) for c in chats] == [("newer", 2), ("older", 4)]
        assert chats[1]["created_at"] <= chats[1]["last_message_at"] == chats[1]["last_time"]
        read = rest.get("/chat/history/read", params={"chat_id": "older", "subject_id": "hist-user"}).json()
        assert read["messages"] == read["data"]
        assert [(m["role"], m["message"], m["message_index"]) for m in read["messages"]] == [
            ("user", "one", 0), ("assistant", "echo: one", 1), ("user", "two", 2), ("assistant", "echo: two", 3)]
        assert read["messages"][0]["content"] == "one" and read["messages"][0]["tool_calls"] == ""
        assert rest.get("/chat/history/list", params={"subject_id": "hist-user", "limit": 1}).json()[
            "chats"][0]["chat_id"] == "newer"
        assert rest.delete("/chat/history/delete", params={"chat_id": "older"}).json()["success"] is True
        assert rest.delete("/chat/history/delete", params={"chat_id": "older"}).json()["success"] is True
        assert rest.get("/chat/history/read", params={"chat_id": "older"}).json()["messages"] == []
        assert [c["chat_id"] for c in rest.get("/chat/history/list", params={"subject_id": "hist-user"}).json()[
            "chats"]] == ["newer"]
        assert rest.get("/chat/history/list", params={"subject_id": "unknown"}).json() == {"chats": []}


def test_replayed_history_is_cut_to_the_token_budget_oldest_first(start_gateway, storage_sqlite):
    # A turn here is 72 tokens with gpt-4o-mini's tokenizer (35 + 37): the budget holds two at most.
    gw = start_gateway(storage_sqlite, history={"token_budget": 150})
    client = gw.openai()
    for i in range(6):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"turn {i} " * 10}],
                                       extra_body={"mnx": {"subject_id": "b", "chat_id": "long"}})
    replayed = gw.forwarded()[-1]["body"]["messages"][:-1]
    assert replayed and sum(count_tokens(m, "gpt-4o-mini") for m in replayed) <= 150
    assert [m["role"] for m in replayed] == ["user", "assistant"] * 2
    assert replayed[-1]["content"].startswith("echo: turn 4")
    assert all("turn 0" not in m["content"] for m in replayed)


def test_budget_cut_never_leaves_a_tool_result_without_its_call():
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                  "function": {"name": "f", "arguments": "{}" * 50}}]}
    messages = [{"role": "user", "content": "q"}, call, {"role": "tool", "tool_call_id": "c1", "content": "r"},
                {"role": "assistant", "content": "done"}]
    budget = sum(estimate_tokens(m) for m in messages[2:])
    # The tool result goes with its call, and so does the answer after it: a cut window starts
    # with a user message (Anthropic and Gemini refuse one that opens with the assistant).
    assert fit_to_budget(messages, budget) == []
    follow_up = [{"role": "user", "content": "thanks"}, {"role": "assistant", "content": "welcome"}]
    assert fit_to_budget(messages + follow_up, budget + sum(estimate_tokens(m) for m in follow_up)) == follow_up
    assert fit_to_budget(messages, 10_000) == messages
