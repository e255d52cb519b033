"""What a provider's prompt cache could reuse of a prompt: the bytes it shares with the one before.

Provider prompt caches reuse the longest prefix of a request they have seen before. A prompt is
measured here as one canonical JSON line per item (system, then each message, in order): sorted
keys and no spaces, so the same value is always the same bytes and a byte that differs is a
difference in what the provider tokenizes. Shared by the prompt-cache tests
(tests/test_prompt_cache.py) and benchmark (bench/prompt_cache/run.py, which runs from the
repository root and imports tests modules as it does the fake provider).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def canonical(value: Any) -> bytes:
    """One JSON value as canonical bytes (sorted keys, no spaces): the same value, the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_lines(values: Iterable[Any]) -> bytes:
    """A prompt's items as bytes: one canonical JSON line each, in order."""
    return b"".join(canonical(value) + b"\n" for value in values)


def shared_prefix_length(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` have in common."""
    length = min(len(a), len(b))
    if a[:length] == b[:length]:
        return length
    low, high = 0, length  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low
