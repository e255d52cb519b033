"""Token counts of stored messages (gateway/summaries/tokens.py): tiktoken for OpenAI-family
models, read from LiteLLM's bundled files with no network; the estimate for every other model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import tiktoken

from gateway import history
from gateway.summaries.tokens import (MESSAGE_FRAMING_TOKENS, count_text, count_tokens, estimate_tokens,
                                      tokenizer_name)

TEXT = "My daughter's name is Zoë and she was born on 3 March 2019 — ask me about Kraków at 10:30."
TOOL_CALLS = [{"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": '{"city": "Kraków", "unit": "celsius"}'}}]


def encoded(text: str, encoding: str) -> int:
    count_text("", "gpt-4o")  # points tiktoken at LiteLLM's files, as the gateway does
    return len(tiktoken.get_encoding(encoding).encode_ordinary(text))


@pytest.mark.parametrize("model", ["gpt-4o-mini", "openai/gpt-4o-mini", "o3-mini", "chatgpt-4o-latest",
                                   "ft:gpt-4o-mini:acme::abc123", "gpt-9-not-released-yet"])
def test_openai_models_are_counted_with_o200k(model):
    message = {"role": "user", "content": TEXT}
    assert count_tokens(message, model) == encoded(TEXT, "o200k_base") + MESSAGE_FRAMING_TOKENS
    assert tokenizer_name(model) == "o200k_base"


@pytest.mark.parametrize("model", ["gpt-4", "openai/gpt-3.5-turbo", "ft:gpt-3.5-turbo:acme::abc123"])
def test_older_openai_models_are_counted_with_cl100k(model):
    message = {"role": "assistant", "content": TEXT}
    assert count_tokens(message, model) == encoded(TEXT, "cl100k_base") + MESSAGE_FRAMING_TOKENS
    assert tokenizer_name(model) == "cl100k_base"
    # The two encodings really differ on this text: the model picked the count.
    assert encoded(TEXT, "cl100k_base") != encoded(TEXT, "o200k_base")


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "anthropic/claude-sonnet-4", "gemini-2.0-flash",
                                   "mistral-large", None, ""])
def test_other_models_get_the_estimate(model):
    message = {"role": "user", "content": TEXT, "tool_calls": TOOL_CALLS}
    assert count_tokens(message, model) == estimate_tokens(message)
    assert count_text(TEXT, model) == (len(TEXT) + 3) // 4
    assert tokenizer_name(model) == "estimate"


def test_the_estimate_is_the_one_history_always_used():
    """Moved here from gateway/history.py unchanged: the figures are the old function's, so
    budgets cut before and after the move cut at the same place."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": TEXT},
        {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "user", "content": {"odd": "shape"}}]
    assert [estimate_tokens(message) for message in messages] == [27, 40, 6, 93, 8]
    assert history.estimate_tokens is estimate_tokens


def test_tool_calls_name_and_non_text_parts_are_counted():
    call = {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS}
    assert count_tokens(call, "gpt-4o-mini") == (MESSAGE_FRAMING_TOKENS
                                                  + encoded(json.dumps(TOOL_CALLS), "o200k_base"))
    named = {"role": "user", "content": "hi", "name": "alice_smith"}
    unnamed = {"role": "user", "content": "hi"}
    assert count_tokens(named, "gpt-4o") == count_tokens(unnamed, "gpt-4o") + 1 + encoded("alice_smith", "o200k_base")
    image = {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
    # As much for a picture as the estimate gives it (340 characters, 85 tokens).
    assert count_tokens(image, "gpt-4o") == count_tokens(unnamed, "gpt-4o") + 85
    assert estimate_tokens(image) - estimate_tokens(unnamed) == 85


def test_count_text_has_no_framing_and_text_that_spells_a_special_token_is_just_text():
    assert count_text(TEXT, "gpt-4o-mini") == encoded(TEXT, "o200k_base")
    assert count_text("", "gpt-4o-mini") == 0
    assert count_text("<|endoftext|>", "gpt-4o") == encoded("<|endoftext|>", "o200k_base") > 1


def _run_offline(probe: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A dead proxy: any download tiktoken tries fails at once instead of reaching the internet.
    clean = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    clean.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], capture_output=True, text=True,
                          timeout=120, env=clean)


def test_it_reads_litellms_bundled_encodings_without_network_or_importing_litellm():
    done = _run_offline("""
        import json, sys
        from gateway.summaries.tokens import count_tokens, tokenizer_name
        message = {"role": "user", "content": "Zoë was born on 3 March 2019 in Kraków."}
        print(json.dumps([count_tokens(message, "gpt-4o-mini"), count_tokens(message, "gpt-4"),
                          tokenizer_name("gpt-4o-mini"), "litellm" in sys.modules]))
    """)
    assert done.returncode == 0, done.stderr
    o200k, cl100k, name, litellm_imported = json.loads(done.stdout)
    message_text = "Zoë was born on 3 March 2019 in Kraków."
    assert (o200k, cl100k) == (encoded(message_text, "o200k_base") + MESSAGE_FRAMING_TOKENS,
                               encoded(message_text, "cl100k_base") + MESSAGE_FRAMING_TOKENS)
    assert name == "o200k_base" and litellm_imported is False
    assert "WARNING" not in done.stderr


def test_an_encoding_that_cannot_load_warns_once_and_falls_back_to_the_estimate(tmp_path):
    done = _run_offline("""
        import json, logging
        logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
        from gateway.summaries.tokens import count_tokens, estimate_tokens, tokenizer_name
        message = {"role": "user", "content": "Zoë was born on 3 March 2019 in Kraków."}
        counts = [count_tokens(message, "gpt-4o-mini") for _ in range(3)]
        print(json.dumps([counts, estimate_tokens(message), tokenizer_name("gpt-4o-mini")]))
    """, TIKTOKEN_CACHE_DIR=str(tmp_path))  # an empty cache: the files are not there to read
    assert done.returncode == 0, done.stderr
    counts, estimate, name = json.loads(done.stdout)
    assert counts == [estimate] * 3 and name == "estimate"
    assert done.stderr.count("WARNING") == 1 and "o200k_base" in done.stderr
