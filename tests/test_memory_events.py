"""Memory events (contract §13) published by every change, with the learned memory's origin."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.config import parse_config
from gateway.memory.changes import MemoryEdit, MemoryFields, NewMemory
from gateway.services import Services
from tests.conftest import edge_memory


def test_create_supersede_update_restore_delete_publish_events(tmp_path):
    async def scenario() -> list[tuple[str, dict]]:
        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        memories = services.memories
        seen: list[tuple[str, dict]] = []
        with memories.events.subscribe("p", "ann") as mine, memories.events.subscribe("other", None) as theirs:
            old, _ = await memories.create("p", NewMemory("ann", "Favorite fruit is blueberry"))
            new, _ = await memories.create("p", NewMemory("ann", "Favorite fruit is mango", source_type="inferred"),
                                           origin={"chat_id": "c1", "job_id": "job_1"})
            await memories.create("p", NewMemory("bob", "Bob keeps bees"))  # another subject
            await memories.update("p", new["id"], MemoryEdit(MemoryFields(importance=90)))
            await memories.restore("p", old["id"])
            await memories.delete("p", new["id"])
            while (event := mine.take_nowait()) is not None:
                seen.append((event.type, event.data))
            assert theirs.take_nowait() is None  # another project hears nothing
            stored = await memories.get("p", new["id"], allow_deleted=True)
            assert (stored["source_type"], stored["origin"]) == ("inferred", {"chat_id": "c1", "job_id": "job_1"})
        await services.aclose()
        return seen

    events = asyncio.run(scenario())
    kinds = [kind for kind, _ in events]
    assert kinds == ["memory.created", "memory.created", "memory.superseded", "memory.updated", "memory.updated",
                     "memory.deleted"]
    assert events[0][1]["text"] == "Favorite fruit is blueberry" and events[0][1]["subject_id"] == "ann"
    superseded = events[2][1]
    assert superseded["superseded_by"] == events[1][1]["id"] and superseded["id"] == events[0][1]["id"]
    assert events[4][1]["status"] == "active" and events[5][1] == {"id": events[1][1]["id"],
                                                                    "timestamp": events[5][1]["timestamp"]}


def test_a_rerun_learn_job_finishes_an_index_write_a_crash_interrupted(tmp_path):
    """The store holds the learned memory but the index lost it (the process died between
    the two writes): running the job again makes it searchable, and stores nothing twice."""
    from gateway.jobs.queue import Job
    from gateway.memory.learning import LEARN_JOB

    async def scenario() -> None:
        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        job = Job(id="job_1", project_id="p", kind=LEARN_JOB, attempts=1, status="pending", last_error=None,
                  due_at=0.0, created_at=0.0, payload={
                      "subject_id": "ann", "chat_id": "c", "learn": True, "memory_policy": True,
                      "user_messages": ["I keep three beehives"], "assistant": "nice", "message_ids": []})
        await services.learner.handle(job)
        assert [h.text for h in await services.memories.search("p", "ann", "beehives", limit=5)] == [
            "User keeps three beehives"]
        await services.vector_index.delete_subject("p", "ann")  # the index write that never happened
        assert await services.memories.search("p", "ann", "beehives", limit=5) == []
        # Claimed again after the crash: a second attempt.
        await services.learner.handle(dataclasses.replace(job, attempts=2))
        hits = await services.memories.search("p", "ann", "beehives", limit=5)
        assert [h.text for h in hits] == ["User keeps three beehives"]
        assert len(await services.memories.page_for_subject("p", "ann", limit=10, offset=0)) == 1
        await services.aclose()

    asyncio.run(scenario())
