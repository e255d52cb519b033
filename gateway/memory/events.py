"""Memory events (contract §13): memory.created, .updated, .deleted, .superseded.

Published in-process to whoever subscribed (the SSE route); a slow subscriber's
queue is bounded and drops its oldest events rather than holding memory or
blocking the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterator

QUEUE_SIZE = 1000


@dataclass(eq=False)
class Subscription:
    project_id: str
    subject_id: str | None
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE))


class MemoryEvents:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def publish(self, project_id: str, subject_id: str | None, event: str, data: dict[str, Any]) -> None:
        for sub in self._subscriptions:
            if sub.project_id != project_id or (sub.subject_id is not None and sub.subject_id != subject_id):
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait((event, {**data, "timestamp": time.time()}))

    @contextlib.contextmanager
    def subscribe(self, project_id: str, subject_id: str | None) -> Iterator[Subscription]:
        sub = Subscription(project_id, subject_id)
        self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            self._subscriptions.discard(sub)
