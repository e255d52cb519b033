"""An embedder plugin for tests, installed as a third-party package is (``install_word_hash_embedder``).

Each word of a text adds a signed one to a dimension chosen by its hash (the hashing trick), and
the sum is scaled to unit length: texts sharing words point the same way, others barely do. It
runs offline, instantly and deterministically, so a test can index with a "new embedder" and
compare against a fresh index, and it writes the size of every call it answers to the file
``$MNX_TEST_EMBED_LOG`` names (how many texts each model call encoded). With
``$MNX_TEST_EMBED_FAIL_AFTER`` = n it answers n calls, then fails each one after, as a model
that went away does; with ``$MNX_TEST_EMBED_DELAY`` each call takes that many seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

NAME = "word-hash"
DIMENSIONS = 64
_WORD = re.compile(r"[a-z0-9]+")


class EmbeddingModelDown(Exception):
    pass


class WordHashEmbedder:
    def __init__(self, config: Any, providers: Any) -> None:
        self.dimensions = config.dimensions or DIMENSIONS
        self._answered = 0

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        return None

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        # A model call takes a while ($MNX_TEST_EMBED_DELAY seconds) and lets other tasks run.
        await asyncio.sleep(float(os.environ.get("MNX_TEST_EMBED_DELAY", "0")))
        fail_after = os.environ.get("MNX_TEST_EMBED_FAIL_AFTER")
        if fail_after is not None and self._answered >= int(fail_after):
            raise EmbeddingModelDown("the embedding model is unreachable")
        self._answered += 1
        log = os.environ.get("MNX_TEST_EMBED_LOG")
        if log:
            with open(log, "a") as out:
                out.write(f"{len(texts)}\n")
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[digest[0] % self.dimensions] += 1.0 if digest[1] % 2 else -1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]


def install_word_hash_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Register the embedder as ``memory.embedder.provider: word-hash``, through a dist-info
    directory on sys.path (under ``tmp_path``), the way pip installs a plugin package; returns
    the file its calls are logged to (``embed_calls`` reads it)."""
    root = tmp_path / "site"
    log = tmp_path / "embed-calls.log"
    monkeypatch.setenv("MNX_TEST_EMBED_LOG", str(log))
    dist_info = root / "mnx_test_word_hash-1.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: mnx-test-word-hash\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(f"""
        [mnx_gateway.embedders]
        {NAME} = tests.word_hash_embedder:WordHashEmbedder
        """))
    monkeypatch.syspath_prepend(str(root))
    return log


def embed_calls(log: Path) -> list[int]:
    """The size of each call the embedder answered, in order."""
    return [int(line) for line in log.read_text().split()] if log.exists() else []
