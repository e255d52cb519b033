"""A memory write whose index half never happens is repaired from the store.

The store is written first and is the source of truth; the index write after it can be
lost (the process dies, the index is unreachable). The write notes a repair job first,
so the job worker later rewrites the memory's index point: a created memory becomes
findable, a deleted one stops being recalled. The index here is the real Qdrant Edge
adapter; only its availability is taken away, for one write.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.memory.changes import MemoryEdit, NewMemory
from gateway.memory.memories import REINDEX_JOB
from gateway.services import Services
from tests.conftest import edge_memory


class IndexOutage:
    """The real index, unreachable for the next write (``down = True``), or for the next
    write of one kind (``down = "update_lexical"``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down: bool | str = False

    async def upsert(self, project_id, memories):  # noqa: ANN001
        self._fail_if_down("upsert")
        await self.inner.upsert(project_id, memories)

    async def update_fields(self, project_id, subject_id, memory_id, fields):  # noqa: ANN001
        self._fail_if_down("update_fields")
        await self.inner.update_fields(project_id, subject_id, memory_id, fields)

    async def update_lexical(self, project_id, subject_id, memory_id, sparse, fields):  # noqa: ANN001
        self._fail_if_down("update_lexical")
        await self.inner.update_lexical(project_id, subject_id, memory_id, sparse, fields)

    def _fail_if_down(self, write: str) -> None:
        if self.down is True or self.down == write:
            self.down = False
            raise ConnectionError("memory index unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def build(tmp_path, repair_after: float) -> tuple[Services, IndexOutage]:
    memory = edge_memory(tmp_path / "index")
    memory["vectors"]["repair_after_seconds"] = repair_after
    services = Services.build(parse_config({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
        "memory": memory, "learning": {"poll_seconds": 0.05},
        "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
    outage = IndexOutage(services.vector_index)
    # The Memories service's view of the index: what it searches and what its index upkeep writes.
    services.memories._index = services.memories._upkeep._index = outage
    return services, outage


async def found(services: Services, query: str) -> list[str]:
    return [hit.text for hit in await services.memories.search("p", "ann", query, limit=5)]


async def eventually(check, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("not repaired in time")
        await asyncio.sleep(0.05)


def test_a_created_memory_the_index_missed_becomes_findable(tmp_path):
    async def scenario() -> None:
        services, outage = build(tmp_path, repair_after=0.3)
        await services.start()
        outage.down = True
        with pytest.raises(ConnectionError):
            await services.memories.create("p", NewMemory("ann", "Ann keeps three beehives"))
        # Stored and listed, but the index never got it: not findable yet.
        listed = await services.memories.page_for_subject("p", "ann", limit=10, offset=0)
        assert [m["text"] for m in listed] == ["Ann keeps three beehives"]
        assert await found(services, "beehives") == []
        pending = await services.jobs.unfinished("p", 10)
        assert [job.kind for job in pending] == [REINDEX_JOB]
        assert pending[0].payload["memory_ids"] == [listed[0]["id"]]

        async def repaired() -> bool:
            return await found(services, "beehives") == ["Ann keeps three beehives"]
        await eventually(repaired)
        assert await services.jobs.unfinished("p", 10) == []
        await services.aclose()

    asyncio.run(scenario())


def test_a_deleted_memory_the_index_still_had_stops_being_found(tmp_path):
    async def scenario() -> None:
        services, outage = build(tmp_path, repair_after=0.3)
        await services.start()
        created, _ = await services.memories.create("p", NewMemory("ann", "Ann keeps three beehives"))
        outage.down = True
        with pytest.raises(ConnectionError):
            await services.memories.delete("p", created["id"])
        assert await services.memories.page_for_subject("p", "ann", limit=10, offset=0) == []
        assert await found(services, "beehives") == ["Ann keeps three beehives"]  # the stale index point

        async def repaired() -> bool:
            return await found(services, "beehives") == []
        await eventually(repaired)
        await services.aclose()

    asyncio.run(scenario())


def test_a_neighbour_the_index_missed_stops_lending_a_deleted_memorys_words(tmp_path):
    """Deleting a memory re-indexes its neighbour without the deleted words; if that index
    write is lost, the repair job finishes it."""
    async def scenario() -> None:
        services, outage = build(tmp_path, repair_after=0.3)
        await services.start()
        await services.memories.create("p", NewMemory("ann", "Ann keeps three beehives"))
        sold, _ = await services.memories.create("p", NewMemory("ann", "She sells honey at the market"))
        assert await found(services, "honey") == ["She sells honey at the market", "Ann keeps three beehives"]
        outage.down = "update_lexical"
        with pytest.raises(ConnectionError):
            await services.memories.delete("p", sold["id"])
        assert await found(services, "honey") == ["Ann keeps three beehives"]  # a stale context

        async def repaired() -> bool:
            return await found(services, "honey") == []
        await eventually(repaired)
        assert await found(services, "beehives") == ["Ann keeps three beehives"]
        await services.aclose()

    asyncio.run(scenario())


def test_a_completed_write_leaves_no_repair_job(tmp_path):
    """The note is removed once both writes are done: nothing for the worker to redo."""
    async def scenario() -> None:
        services, _ = build(tmp_path, repair_after=3600)
        created, _ = await services.memories.create("p", NewMemory("ann", "Ann keeps three beehives"))
        await services.memories.update("p", created["id"], MemoryEdit(text="Ann keeps four beehives"))
        await services.memories.create("p", NewMemory("ann", "My favorite fruit is mango"))
        await services.memories.create("p", NewMemory("ann", "My favorite fruit is kiwi"))
        await services.memories.delete("p", created["id"])
        assert await services.jobs.unfinished("p", 10) == []
        await services.aclose()

    asyncio.run(scenario())


def test_a_repair_job_survives_a_restart(tmp_path):
    """The note is as durable as a learn job: a gateway started later still runs it."""
    async def scenario() -> None:
        services, outage = build(tmp_path, repair_after=0.3)
        outage.down = True
        with pytest.raises(ConnectionError):
            await services.memories.create("p", NewMemory("ann", "Ann keeps three beehives"))
        await services.aclose()

        services, _ = build(tmp_path, repair_after=0.3)
        await services.start()

        async def repaired() -> bool:
            return await found(services, "beehives") == ["Ann keeps three beehives"]
        await eventually(repaired)
        await services.aclose()

    asyncio.run(scenario())
