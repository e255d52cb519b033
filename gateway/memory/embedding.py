"""The dense-embedding hook: a plugin turns texts into vectors of a fixed size.

Lexical (BM25) search needs no embedder; configuring one makes search hybrid.
Built-in embedders live in ``plugins/embedders.py``; third-party ones register
under the ``mnx_gateway.embedders`` entry-point group and are named in
``memory.embedder.provider``.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Mapping, Sequence

# Texts per embedder call when many are stored, re-indexed or merged at once: large enough that
# a local model's per-call cost is spread thin, small enough to bound a call's memory and time.
EMBED_BATCH = 64


class Embedder(Protocol):
    # The size of every vector ``embed`` returns; fixed for the life of the index.
    dimensions: int

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        """The caller's own key for this model, if the embedder is paid per request (BYOK).
        ``caller_keys`` are the provider-key headers the caller sent (``Credentials.provider_keys``)."""

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        """One vector per text, in order."""
