"""The official mnexium Python SDK, unmodified, pointed at a running gateway."""

from __future__ import annotations

import pytest
from mnexium import AuthenticationError, Mnexium, ProcessOptions, ProviderConfig
from mnexium.types import ChatOptions, ChatProcessOptions, SystemPromptCreateOptions

from tests.conftest import KEY, PROVIDER_KEY


@pytest.fixture
def sdk(gateway):
    client = Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0,
                     openai=ProviderConfig(api_key=PROVIDER_KEY))
    yield client
    client.close()


def test_process_with_history_in_a_chat(sdk, gateway):
    alice = sdk.subject("alice")
    chat = alice.create_chat(ChatOptions(history=True, learn=False))
    first = chat.process("my favourite colour is green")
    assert first.content == "echo: my favourite colour is green"
    assert (first.chat_id, first.subject_id) == (chat.id, "alice")
    chat.process("what is my favourite colour?")
    sent = gateway.forwarded()[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["my favourite colour is green", "echo: my favourite colour is green",
                                           "what is my favourite colour?"]
    assert gateway.forwarded()[-1]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    listed = alice.chats.list()
    assert [(c.chat_id, c.message_count) for c in listed] == [(chat.id, 4)]
    assert [m["message"] for m in alice.chats.read(chat.id)][:2] == ["my favourite colour is green",
                                                                      "echo: my favourite colour is green"]
    alice.chats.delete(chat.id)
    assert alice.chats.read(chat.id) == []


def test_process_streams(sdk):
    stream = sdk.subject("bob").create_chat(ChatOptions(learn=False)).process(
        ChatProcessOptions(content="stream please", stream=True))
    assert "".join(stream.text()) == "echo: stream please"
    assert stream.subject_id == "bob"


def test_state_and_prompts_resources(sdk, gateway):
    carol = sdk.subject("carol")
    carol.state.set("task", {"step": 3}, ttl_seconds=600)
    assert carol.state.get("task")["value"] == {"step": 3}
    assert carol.state.get("absent") is None
    prompt = sdk.prompts.create(SystemPromptCreateOptions(name="sdk", prompt_text="FROM SDK", is_default=True))
    assert prompt["id"].startswith("sp_")
    assert sdk.prompts.resolve(subject_id="carol", combined=True)["prompt_text"] == "FROM SDK"
    sdk.process(ProcessOptions(content="hi", subject_id="carol", learn=False))
    assert gateway.forwarded()[-1]["body"]["messages"][0] == {"role": "system", "content": "FROM SDK"}
    carol.state.delete("task")
    assert carol.state.get("task") is None


def test_wrong_key_raises_the_sdks_authentication_error(gateway):
    with Mnexium(api_key="mnx_live_nope", base_url=gateway.api, max_retries=0,
                 openai=ProviderConfig(api_key=PROVIDER_KEY)) as client:
        with pytest.raises(AuthenticationError):
            client.process("hello")
    assert gateway.forwarded() == []


def test_memories_through_the_sdk(sdk):
    alice = sdk.subject("alice")
    first = alice.memories.add("Favorite fruit is blueberry", source="sdk-test")
    assert first["created"] is True
    dark = alice.memories.add("User prefers dark mode interfaces", visibility="private", metadata={"from": "sdk"})
    # The SDK searches with min_score 0.7 unless told otherwise; a direct match scores 1.0.
    hits = alice.memories.search("dark mode", limit=5, min_score=0.7)
    assert [h["id"] for h in hits] == [dark["id"]] and hits[0]["score"] == 1.0
    alice.memories.update(dark["id"], text="User prefers dark mode everywhere")
    assert alice.memories.get(dark["id"])["data"]["text"] == "User prefers dark mode everywhere"
    newer = alice.memories.add("my new favorite fruit is strawberry")
    assert newer["superseded_ids"] == [first["id"]]
    assert [m["id"] for m in alice.memories.superseded()] == [first["id"]]
    assert alice.memories.restore(first["id"])["restored"] is True
    assert {m["id"] for m in alice.memories.list()} == {first["id"], dark["id"], newer["id"]}
    alice.create_chat(ChatOptions(learn=False, recall=True)).process("what is my favorite fruit?")
    assert {r["memory_id"] for r in alice.memories.recalls(memory_id=newer["id"])} == {newer["id"]}
    alice.memories.delete(dark["id"])
    assert dark["id"] not in {m["id"] for m in alice.memories.list()}
