"""Malformed generation parameters and tool definitions: a 400 in the surface's own shape.

These fields pass through the gateway unread, but LiteLLM reads them when it translates a
request for another provider's model, and a wrong type there (a tool whose function is
null, a max_tokens of "many") used to fail inside the translation as a 500 carrying
LiteLLM's message. Each case runs twice: to the surface's own provider and to another
one (the translated path). Nothing is stored or forwarded either way. Well-formed tools
and parameters, nulls included, still reach the other provider.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KEY, PROVIDER_KEY

SUBJECT = "caller"
HEADERS = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-api-key": "sk-ant-caller",
           "x-anthropic-key": "sk-ant-caller", "x-goog-api-key": "goog-caller", "x-google-key": "goog-caller",
           "x-mnx-subject-id": SUBJECT, "x-mnx-chat-id": "c1", "x-mnx-log": "true"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def post(gateway, path: str, body: dict) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, headers=HEADERS, timeout=30)


def assert_nothing_stored_or_forwarded(gateway):
    assert gateway.forwarded() == []
    with gateway.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"] == []


# -- /v1/chat/completions ---------------------------------------------------------------------

def chat(model: str, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "weather?"}], **fields}


def after_a_tool_call(call) -> dict:
    return {"messages": [{"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-3-5-haiku"])
@pytest.mark.parametrize("fields, code, param", [
    ({"tools": [{"type": "function", "function": None}]}, "invalid_tools", "tools[0].function"),
    ({"tools": [{"type": "function"}]}, "invalid_tools", "tools[0].function"),
    ({"tools": [5]}, "invalid_tools", "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "invalid_tools", "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "invalid_tools",
     "tools[0].function.parameters"),
    ({"functions": [{"description": "no name"}]}, "invalid_functions", "functions[0].name"),
    ({"tool_choice": 5}, "invalid_tool_choice", "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "invalid_tool_choice", "tool_choice.function"),
    ({"response_format": {}}, "invalid_response_format", "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "invalid_response_format", "response_format.json_schema"),
    ({"temperature": "hot"}, "invalid_temperature", "temperature"),
    ({"max_tokens": "many"}, "invalid_max_tokens", "max_tokens"),
    ({"max_tokens": True}, "invalid_max_tokens", "max_tokens"),
    ({"stop": [1, 2]}, "invalid_stop", "stop"),
    ({"metadata": "x"}, "invalid_metadata", "metadata"),
    (after_a_tool_call({**CALL, "function": None}), "invalid_messages", "messages[1].tool_calls[0].function"),
    (after_a_tool_call({**CALL, "id": 5}), "invalid_messages", "messages[1].tool_calls[0].id"),
    (after_a_tool_call({**CALL, "function": {"name": "f", "arguments": {"city": "Oslo"}}}), "invalid_messages",
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": "get_weather"}]}, "invalid_messages",
     "messages[0].tool_calls"),
], ids=lambda value: value if isinstance(value, str) and not value.startswith("invalid") else "")
def test_chat_parameters_of_the_wrong_type_are_400(shared_gateway, model, fields, code, param):
    response = post(shared_gateway, "/v1/chat/completions", chat(model, **fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert param in error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


def test_well_formed_chat_tools_and_parameters_reach_another_provider(gateway):
    body = chat("anthropic/claude-3-5-haiku", tools=[WEATHER], tool_choice="auto", temperature=0.2, max_tokens=50,
                stop=["END"], top_p=None, response_format={"type": "text"}, **after_a_tool_call(CALL))
    response = post(gateway, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    sent = gateway.forwarded()[-1]["body"]
    assert [tool["name"] for tool in sent["tools"]] == ["get_weather"] and sent["temperature"] == 0.2


# -- /v1/messages -----------------------------------------------------------------------------

def messages(model: str, **fields) -> dict:
    return {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "weather?"}], **fields}


def after_a_tool_use(block) -> dict:
    return {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": [block]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}


TOOL_USE = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}


@pytest.mark.parametrize("model", ["claude-gateway-test", "gpt-4o-mini"])
@pytest.mark.parametrize("fields, code, where", [
    ({"tools": [5]}, "invalid_tools", "tools[0]"),
    ({"tools": [{"name": None, "input_schema": {"type": "object"}}]}, "invalid_tools", "tools[0].name"),
    ({"tools": [{"name": "get_weather", "input_schema": []}]}, "invalid_tools", "tools[0].input_schema"),
    ({"tool_choice": "auto"}, "invalid_tool_choice", "tool_choice"),
    ({"tool_choice": {"type": "tool"}}, "invalid_tool_choice", "tool_choice.name"),
    ({"temperature": "hot"}, "invalid_temperature", "temperature"),
    ({"top_k": 2.5}, "invalid_top_k", "top_k"),
    ({"stop_sequences": "END"}, "invalid_stop_sequences", "stop_sequences"),
    ({"metadata": "x"}, "invalid_metadata", "metadata"),
    (after_a_tool_use({**TOOL_USE, "name": 5}), "invalid_messages", "messages[1].content[0].name"),
    (after_a_tool_use({**TOOL_USE, "input": "{}"}), "invalid_messages", "messages[1].content[0].input"),
], ids=lambda value: value if isinstance(value, str) and not value.startswith("invalid") else "")
def test_messages_parameters_of_the_wrong_type_are_400_in_the_anthropic_shape(shared_gateway, model, fields, code,
                                                                              where):
    response = post(shared_gateway, "/v1/messages", messages(model, **fields))
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert (payload["error"]["type"], payload["error"]["code"]) == ("invalid_request_error", code)
    assert where in payload["error"]["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


def test_well_formed_messages_tools_reach_another_provider(gateway):
    body = messages("gpt-4o-mini", tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
                    tool_choice={"type": "auto"}, temperature=0.2, stop_sequences=["END"], top_k=None,
                    **after_a_tool_use(TOOL_USE))
    response = post(gateway, "/v1/messages", body)
    assert response.status_code == 200, response.text
    sent = gateway.forwarded()[-1]["body"]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]


# -- /v1/responses ----------------------------------------------------------------------------

def responses(model: str, **fields) -> dict:
    return {"model": model, "input": "weather?", **fields}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-3-5-haiku"])
@pytest.mark.parametrize("fields, code, param", [
    ({"tools": [5]}, "invalid_tools", "tools[0]"),
    ({"tools": [{"name": "get_weather"}]}, "invalid_tools", "tools[0].type"),
    ({"tools": [{"type": "function", "parameters": {}}]}, "invalid_tools", "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "invalid_tools", "tools[0].parameters"),
    ({"tool_choice": 5}, "invalid_tool_choice", "tool_choice"),
    ({"temperature": "hot"}, "invalid_temperature", "temperature"),
    ({"text": "json"}, "invalid_text", "text"),
    ({"reasoning": "high"}, "invalid_reasoning", "reasoning"),
    ({"parallel_tool_calls": "yes"}, "invalid_parallel_tool_calls", "parallel_tool_calls"),
], ids=lambda value: value if isinstance(value, str) and not value.startswith("invalid") else "")
def test_responses_parameters_of_the_wrong_type_are_400(shared_gateway, model, fields, code, param):
    response = post(shared_gateway, "/v1/responses", responses(model, **fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert_nothing_stored_or_forwarded(shared_gateway)


def test_well_formed_responses_tools_reach_another_provider(gateway):
    body = responses("anthropic/claude-3-5-haiku", temperature=0.2, tool_choice="auto", top_p=None,
                     tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
    response = post(gateway, "/v1/responses", body)
    assert response.status_code == 200, response.text
    sent = gateway.forwarded()[-1]["body"]
    assert [tool["name"] for tool in sent["tools"]] == ["get_weather"]


# -- Gemini generateContent -------------------------------------------------------------------

def gemini(**fields) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}], **fields}


@pytest.mark.parametrize("model", ["gemini-2.0-flash", "gpt-4o-mini"])
@pytest.mark.parametrize("fields, reason, path", [
    ({"tools": [5]}, "invalid_tools", "tools[0]"),
    ({"tools": [{"functionDeclarations": [5]}]}, "invalid_tools", "tools[0].functionDeclarations"),
    ({"tools": [{"functionDeclarations": [{"name": 5}]}]}, "invalid_tools", "tools[0].functionDeclarations[0].name"),
    ({"generationConfig": {"temperature": "hot"}}, "invalid_generationConfig", "generationConfig.temperature"),
    ({"generationConfig": {"maxOutputTokens": "many"}}, "invalid_generationConfig",
     "generationConfig.maxOutputTokens"),
    ({"generationConfig": {"stopSequences": "END"}}, "invalid_generationConfig", "generationConfig.stopSequences"),
    ({"toolConfig": "auto"}, "invalid_toolConfig", "toolConfig"),
    ({"safetySettings": "none"}, "invalid_safetySettings", "safetySettings"),
], ids=lambda value: value if isinstance(value, str) and not value.startswith("invalid") else "")
def test_gemini_parameters_of_the_wrong_type_are_400_in_the_gemini_shape(shared_gateway, model, fields, reason, path):
    response = post(shared_gateway, f"/v1beta/models/{model}:generateContent", gemini(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"], error["details"][0]["reason"]) == (400, "INVALID_ARGUMENT", reason)
    assert path in error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


def test_well_formed_gemini_tools_reach_another_provider(gateway):
    body = gemini(tools=[{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}],
                  generationConfig={"temperature": 0.2, "maxOutputTokens": 50, "topK": None})
    response = post(gateway, "/v1beta/models/gpt-4o-mini:generateContent", body)
    assert response.status_code == 200, response.text
    sent = gateway.forwarded()[-1]["body"]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]


@pytest.mark.parametrize("model", ["gemini-2.0-flash", "gpt-4o-mini"])
def test_gemini_nulls_mean_not_set_and_reach_either_provider(gateway, model):
    """Google's JSON reads a null field as unset: a null inlineData beside a part's text, or a
    tool with functionDeclarations null beside one that declares, is not an error."""
    body = {"contents": [{"role": "user", "parts": [{"text": "weather?", "inlineData": None}]}],
            "tools": [{"functionDeclarations": None},
                      {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]}
    response = post(gateway, f"/v1beta/models/{model}:generateContent", body)
    assert response.status_code == 200, response.text
    sent = gateway.forwarded()[-1]["body"]
    if model.startswith("gemini"):
        assert sent["tools"] == [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]
    else:
        assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    with gateway.rest() as rest:
        chats = rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"]
    assert len(chats) == 1
