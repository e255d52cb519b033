"""Concurrent calls to a local embedding model, merged into one model call.

A local model (sentence-transformers, fastembed) encodes on this machine's cores: sixteen texts
in one call cost about what six cost one by one (bench/embed_ingest), and calls run side by side
only compete for the same cores. So while the model encodes, the texts of the calls that arrive
wait, and the next model call takes them all (up to ``max_texts``): under load, concurrent
``POST /memories`` and searches share model calls; a call that finds the model idle goes to it
at once, never waiting for company.

A failing model call fails every call merged into it (a local model fails for all texts alike:
out of memory, a broken model file), and the next model call starts afresh.
"""

from __future__ import annotations

import asyncio
from typing import Any
from collections.abc import Callable, Sequence

from gateway.memory.embedding import EMBED_BATCH

# A caller's texts and the future its vectors are set on.
_Waiting = tuple[list[str], "asyncio.Future[list[Any]]"]


class MergedCalls:
    def __init__(self, encode: Callable[[list[str]], Sequence[Any]], *, max_texts: int = EMBED_BATCH) -> None:
        # Blocking (CPU-bound): run in a worker thread, off the event loop. One vector per text, in order.
        self._encode = encode
        self._max_texts = max_texts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Waiting] = []
        self._drain: asyncio.Task[None] | None = None

    async def embed(self, texts: Sequence[str]) -> list[Any]:
        """One vector per text, in order, from a model call this call may share with others."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (the old one's calls are gone)
            self._loop, self._waiting, self._drain = loop, [], None
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((list(texts), future))
        if self._drain is None or self._drain.done():
            # A task of its own: a caller cancelled while the model runs must not strand the others.
            self._drain = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Model calls until no caller waits, each taking as many waiting callers as fit."""
        while self._waiting:
            batch: list[_Waiting] = []
            size = 0
            while self._waiting and (not batch or size + len(self._waiting[0][0]) <= self._max_texts):
                texts, future = self._waiting.pop(0)
                if not future.cancelled():
                    batch.append((texts, future))
                    size += len(texts)
            if not batch:
                continue
            try:
                vectors = await asyncio.to_thread(self._encode, [text for texts, _ in batch for text in texts])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(list(vectors[start:start + len(texts)]))
                start += len(texts)
