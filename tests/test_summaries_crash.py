"""A gateway killed (SIGKILL) while it folds a chat into its rolling summary finishes the summary
after a restart, and folds no message twice.

A real ``python -m gateway serve`` process, on SQLite and on Redis, with the LLM summarizer on
a model the fake provider answers slowly ("sleep-3": it waits 3 s, then echoes the last user
message of the request, i.e. the summarizer's transcript of the chunk). The kill lands while a
summarizer call is in flight; the restarted gateway runs the job again (the SQLite queue releases
a dead process's leases at startup, Redis's come back when the lease runs out).
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest
import yaml

from gateway.summaries.tokens import count_tokens
from tests.gateway_process import free_port, serve
from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.fake_upstream import FakeProvider

MODEL = "gpt-4o-mini"
SUMMARY_MODEL = "sleep-3"
CONFIGURED_KEY = "sk-configured-summaries"
SMALL = {"start_at_tokens": 300, "chunk_size": 120, "keep_recent_messages": 4, "summary_target": 200}
SUBJECT, CHAT = "crash-user", "crash-chat"
FIRST_FACT = "My daughter Zoe was born on 3 March 2019 in Lisbon."
FILLER = "Let us keep chatting about nothing much in particular, just passing the time pleasantly here"
TURNS = 10


def turn_text(turn: int) -> str:
    return FIRST_FACT if turn == 0 else f"turn {turn:03d}: {FILLER}."


@pytest.mark.parametrize("kill_at", [1, 2], ids=["during-the-first-fold", "after-a-fold-was-written"])
def test_a_gateway_killed_mid_fold_finishes_the_summary_after_restart(provider, tmp_path, storage, kill_at):
    port = free_port()
    config = {
        "server": {"port": port},
        "storage": storage,
        "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
        # A lease shorter than one summarizer call: on Redis the dead process's job is due again soon.
        "learning": {"lease_seconds": 2, "poll_seconds": 0.2, "retry_base_seconds": 0.5},
        # min_chunk_tokens: SMALL's chunks (below the default floor) make several folds in a few turns.
        "summarization": {"summarizer": {"provider": "litellm", "model": SUMMARY_MODEL}, "min_chunk_tokens": 100},
        "projects": [{"id": "default", "keys": [{"key": KEY}]}],
        "providers": {"openai": {"api_base": provider.url + "/v1", "api_key": CONFIGURED_KEY}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"

    first = serve(path, url)
    try:
        for turn in range(TURNS):
            _chat(url, turn)
            if _summarizer_calls(provider) >= kill_at:
                break  # no more turns: the fold in flight is killed within milliseconds
        # The kill_at-th summarizer call is in flight (each takes 3 s to answer) when the gateway
        # dies: before it, the folds of the calls before it were written.
        assert wait_until(lambda: _summarizer_calls(provider) >= kill_at, timeout=15), "no fold was started"
        before = _summaries(url)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(before) == (kill_at > 1)
    killed_at = len(provider.requests)

    second = serve(path, url)
    try:
        assert wait_until(lambda: bool(_summaries(url)) and _no_jobs(url), timeout=60), (
            _summaries(url), _jobs(url))
        [summary] = _summaries(url)
        messages = _messages(url)
        costs = [count_tokens(_as_stored(m), MODEL) for m in messages]
        covered = summary["messages_summarized"]
        assert summary["start_message_index"] == 0 and summary["end_message_index"] == covered - 1
        # No message folded twice (nor left out): the source's tokens are those of the covered messages.
        assert summary["tokens_in_source"] == sum(costs[:covered])
        # The whole foldable range is covered: what is left before the newest kept messages is
        # less than a chunk, which waits for more of the chat.
        kept_from = len(messages) - SMALL["keep_recent_messages"]
        assert covered <= kept_from and sum(costs[covered:kept_from]) < SMALL["chunk_size"]
        assert summary["method"] == "llm" and summary["folds"] >= 1
        if before:
            # The restarted job went on from the summary written before the kill.
            assert covered > before[0]["messages_summarized"] and summary["folds"] > before[0]["folds"]
        # The summarizer echoes the transcript it was given (its previous summary, then the chunk),
        # so the summary holds each covered message's words once: the first turn's fact among them.
        text = summary["summary_text"] + "\n"
        assert "Zoe" in text and "Lisbon" in text
        for index, message in enumerate(messages):
            if message["role"] == "user":
                assert text.count(f"\nUser: {message['message']}\n") == (index < covered), (index, text)
        # After the restart the summarizer is paid with the configured key: the caller's key was
        # held in memory for the job's first run only, never stored with the job.
        after = [r for r in provider.requests[killed_at:] if r["body"].get("model") == SUMMARY_MODEL]
        assert after and {r["headers"]["authorization"] for r in after} == {f"Bearer {CONFIGURED_KEY}"}
        # The next turn replays the summary and the messages after it.
        _chat(url, TURNS)
        forwarded = [r for r in provider.requests if r["body"].get("model") == MODEL][-1]["body"]["messages"]
        assert forwarded[0]["role"] == "system" and summary["summary_text"] in forwarded[0]["content"]
        assert [m["content"] for m in forwarded[1:-1]] == [m["message"] for m in messages[covered:]]
    finally:
        second.terminate()
        second.wait()


# -- helpers --------------------------------------------------------------------------------------


def _chat(url: str, turn: int) -> None:
    response = httpx.post(url + "/v1/chat/completions", timeout=30,
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                          json={"model": MODEL, "messages": [{"role": "user", "content": turn_text(turn)}],
                                "mnx": {"subject_id": SUBJECT, "chat_id": CHAT, "learn": False,
                                        "summarize_config": SMALL}})
    assert response.status_code == 200, response.text


def _summarizer_calls(provider: FakeProvider) -> int:
    return sum(1 for r in provider.requests if r["body"].get("model") == SUMMARY_MODEL)


def _read(url: str) -> dict[str, Any]:
    answer = httpx.get(url + "/api/v1/chat/history/read", headers={"x-mnexium-key": KEY}, timeout=10,
                       params={"chat_id": CHAT, "subject_id": SUBJECT, "include_summaries": "true"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _summaries(url: str) -> list[dict[str, Any]]:
    return list(_read(url)["summaries"])


def _messages(url: str) -> list[dict[str, Any]]:
    return list(_read(url)["messages"])


def _jobs(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/api/v1/jobs", headers={"x-mnexium-key": KEY}, timeout=10).json()["data"])


def _no_jobs(url: str) -> bool:
    return _jobs(url) == []


def _as_stored(message: dict[str, Any]) -> dict[str, Any]:
    """A message as GET /chat/history/read shows it, as the gateway counted it when it stored it
    (plain text turns: the role and the text)."""
    return {"role": message["role"], "content": message["message"]}
