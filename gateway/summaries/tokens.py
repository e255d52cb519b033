"""Token counts of stored chat messages: a real tokenizer where one exists for the model, the
estimate everywhere else.

OpenAI-family models (``gpt-*``, ``chatgpt-*``, ``o1``/``o3``/``o4*``, ``ft:gpt*``, with or
without an ``openai/`` prefix) are counted with tiktoken, the tokenizer OpenAI publishes and
LiteLLM ships. Other providers publish none that runs offline (Claude, Gemini), so their
messages get ``estimate_tokens``: about four characters a token, which only has to keep a
replay safely inside a budget.

There is no internet on a gateway host: tiktoken reads the encoding files LiteLLM bundles
(``litellm/litellm_core_utils/tokenizers``). LiteLLM points ``TIKTOKEN_CACHE_DIR`` there only
when it is imported, which takes about 2 s, so this module finds that directory itself without
importing LiteLLM. An encoding that cannot be loaded is reported once and its models counted
with the estimate from then on: a count never fails a request.

A count runs once per stored message on the request path (and is stored beside the message,
with ``tokenizer_name``, so it is not made again). Measured on this machine (2 shared cores,
Python 3.11, tiktoken 0.14.0, encoder already loaded; best of 5 x 5,000 calls of
``count_tokens`` on words drawn from README.md):

=====================  ====================  =====================  ==========
message                gpt-4o-mini (o200k)   gpt-4 (cl100k)         estimate
=====================  ====================  =====================  ==========
50 characters          2.6 µs                3.7 µs                 0.3 µs
2,000 characters       76 µs                 120 µs                 0.3 µs
=====================  ====================  =====================  ==========

Loading an encoding the first time costs about 0.3 s (once per process and encoding; LiteLLM
itself is never imported here).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

# OpenAI's per-message framing: its cookbook ("How to count tokens with tiktoken",
# num_tokens_from_messages) counts 3 tokens around every message (<|start|>, the separator,
# <|end|>) plus the role, which is 1 token in both o200k_base and cl100k_base: 4 a message.
MESSAGE_FRAMING_TOKENS = 4
# The same cookbook adds 1 token when a message carries a ``name``, besides the name itself.
NAME_FRAMING_TOKENS = 1
# A non-text part (image, audio) costs tokens its text length doesn't show: the estimate counts
# 340 characters for one, i.e. 85 tokens, and so does the tokenizer (the real cost depends on
# the image's size, which a stored message does not say).
NON_TEXT_PART_CHARACTERS = 340
NON_TEXT_PART_TOKENS = NON_TEXT_PART_CHARACTERS // 4

ESTIMATE = "estimate"
# What an OpenAI model name tiktoken does not know yet is counted with: the newest models' encoding.
DEFAULT_OPENAI_ENCODING = "o200k_base"
_OPENAI_PREFIXES = ("gpt-", "chatgpt-", "o1", "o3", "o4", "ft:gpt")


def content_text(content: Any) -> str:
    """The readable text of an OpenAI message content (string, parts list or null).

    (Here, not in gateway.history, which re-exports it: history imports this module.)"""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return json.dumps(content, ensure_ascii=False)


def _non_text_parts(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and "text" not in p)


def estimate_tokens(message: dict[str, Any]) -> int:
    """A cheap, tokenizer-free estimate (about 4 characters a token, plus framing).

    It only has to keep replayed history safely inside a budget; exact counts would
    need a model-specific tokenizer on the hot path.
    """
    size = len(content_text(message.get("content")))
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"]))
    if isinstance(message.get("content"), list):
        # Non-text parts (images, audio) cost tokens the text length doesn't show.
        size += NON_TEXT_PART_CHARACTERS * _non_text_parts(message["content"])
    return 4 + (size + 3) // 4


# --- the tokenizer ---------------------------------------------------------------------------

_encoders: dict[str, Any] = {}  # encoding name -> tiktoken.Encoding, or None when it cannot load
_encoders_lock = threading.Lock()


def _point_tiktoken_at_litellms_files() -> None:
    """Make tiktoken read the encodings LiteLLM bundles instead of downloading them."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return  # the operator's own choice (or LiteLLM's, if it was imported first)
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        directory = os.path.join(location, "litellm_core_utils", "tokenizers")
        if os.path.isdir(directory):
            os.environ["TIKTOKEN_CACHE_DIR"] = directory
            return


def _encoder(encoding: str) -> Any:
    """The tiktoken encoding ``encoding``, loaded on first use; None if it cannot be loaded."""
    try:
        return _encoders[encoding]
    except KeyError:
        pass
    with _encoders_lock:
        if encoding not in _encoders:
            try:
                _point_tiktoken_at_litellms_files()
                import tiktoken

                _encoders[encoding] = tiktoken.get_encoding(encoding)
            except Exception as error:  # a missing file, no network, a broken install: all the same here
                log.warning("token counts: tiktoken encoding %s cannot be loaded (%s: %s); counting with "
                            "the estimate instead", encoding, type(error).__name__, error)
                _encoders[encoding] = None
        return _encoders[encoding]


def preload_encodings() -> None:
    """Load the OpenAI encodings now (about 0.3 s each, once per process), so that no request
    pays for it: the gateway runs this on a thread at startup, before it serves."""
    for encoding in ("o200k_base", "cl100k_base"):
        _encoder(encoding)


@lru_cache(maxsize=1024)
def _encoding_name(model: str | None) -> str | None:
    """The tiktoken encoding of an OpenAI-family model, None for every other model."""
    if not model:
        return None
    name = model.removeprefix("openai/")
    if not name.lower().startswith(_OPENAI_PREFIXES):
        return None
    try:
        import tiktoken.model  # only the name table: no encoding file is read here

        return tiktoken.model.encoding_name_for_model(name)
    except Exception:  # tiktoken does not know this name (yet), or is not installed
        return DEFAULT_OPENAI_ENCODING


def _model_encoder(model: str | None) -> Any:
    encoding = _encoding_name(model)
    return _encoder(encoding) if encoding else None


def tokenizer_name(model: str | None) -> str:
    """What counts ``model``'s messages: "o200k_base", "cl100k_base" (the tiktoken encoding) or
    "estimate"; stored beside a count, so a count made another way is known to be one."""
    encoder = _model_encoder(model)
    return encoder.name if encoder is not None else ESTIMATE


def count_text(text: str, model: str | None) -> int:
    """Tokens of ``text`` alone (no message framing), for ``model``."""
    encoder = _model_encoder(model)
    if encoder is None:
        return (len(text) + 3) // 4
    # encode_ordinary: text that happens to spell "<|endoftext|>" is counted as text, where
    # encode() would raise.
    return len(encoder.encode_ordinary(text))


def count_tokens(message: dict[str, Any], model: str | None) -> int:
    """Tokens one stored OpenAI-format message costs ``model``: the tokenizer's count of its text,
    tool calls and name plus OpenAI's framing for OpenAI-family models, the estimate for others."""
    encoder = _model_encoder(model)
    if encoder is None:
        return estimate_tokens(message)
    content = message.get("content")
    tokens = MESSAGE_FRAMING_TOKENS + len(encoder.encode_ordinary(content_text(content)))
    if message.get("tool_calls"):
        tokens += len(encoder.encode_ordinary(json.dumps(message["tool_calls"])))
    name = message.get("name")
    if isinstance(name, str) and name:
        tokens += NAME_FRAMING_TOKENS + len(encoder.encode_ordinary(name))
    return tokens + NON_TEXT_PART_TOKENS * _non_text_parts(content)
