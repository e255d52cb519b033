"""The audit log's writer in process (gateway/audit_log.py): records queued behind their answers
are written in the order the turns were answered, one store write per batch, and the erasure
fence still decides record by record whose turn may leave one."""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers

from gateway.audit_log import AuditLog
from gateway.config import MnxDefaults, parse_config
from gateway.options import MnxOptions, parse_options
from gateway.services import Services
from tests.conftest import edge_memory


def build(tmp_path) -> Services:
    return Services.build(parse_config({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
        "memory": edge_memory(tmp_path / "index"), "audit": {"enabled": True},
        "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))


def options_of(subject: str) -> MnxOptions:
    return parse_options({"subject_id": subject, "chat_id": f"{subject}-chat"}, Headers(), MnxDefaults())


async def answer(audit: AuditLog, subject: str, text: str, *, started_at: float | None = None) -> None:
    """Queue the record of a turn of ``subject`` that asked ``text`` and was answered now."""
    turn = audit.begin("p", "chat", {"model": "m", "messages": [{"role": "user", "content": text}]})
    assert turn is not None
    if started_at is not None:
        turn.started_at = started_at
    await audit.answered(turn, options_of(subject), answer={"choices": [{"message": {"content": "ok"}}]},
                         message=None)


def asked(rows: list[dict]) -> list[str]:
    return [row["payload"]["body"]["messages"][0]["content"] for row in rows]


def test_records_queued_together_keep_their_answer_order_and_each_turns_erasure(tmp_path):
    async def scenario() -> None:
        services = build(tmp_path)
        audit = services.audit
        before_erasure = time.time() - 1
        await services.erasure.erase("p", "ann")
        # Queued without a pause between them: the writer takes them as one batch. Ann's first turn
        # began before her erasure (no record); her second began after it, as did Bob's.
        await answer(audit, "ann", "began before the erasure", started_at=before_erasure)
        await answer(audit, "bob", "bob's turn", started_at=before_erasure)
        await answer(audit, "ann", "began after the erasure")
        await answer(audit, "bob", "bob's second turn")
        listed = await audit.list("p", direction="request")
        assert asked(listed) == ["bob's second turn", "began after the erasure", "bob's turn"]
        assert asked(await audit.list("p", subject_id="ann", direction="request")) == ["began after the erasure"]
        await services.aclose()

    asyncio.run(scenario())


def test_a_backlog_larger_than_a_batch_is_written_whole_in_order(tmp_path):
    async def scenario() -> None:
        services = build(tmp_path)
        audit = services.audit
        texts = [f"turn {n}" for n in range(700)]  # more than two write batches
        for text in texts:
            await answer(audit, f"s{len(text) % 3}", text)
        listed = await audit.list("p", direction="request", limit=1000)
        assert asked(listed) == texts[::-1]
        answered = [row["created_at"] for row in await audit.list("p", direction="response", limit=1000)]
        assert answered == sorted(answered, reverse=True)
        await services.aclose()

    asyncio.run(scenario())


def test_records_still_queued_at_shutdown_are_written_first(tmp_path):
    async def scenario() -> None:
        services = build(tmp_path)
        for n in range(50):
            await answer(services.audit, "closer", f"turn {n}")
        await services.aclose()  # no listing first: nothing waited for the writer
        reopened = build(tmp_path)
        assert len(await reopened.audit.list("p", subject_id="closer", direction="request")) == 50
        await reopened.aclose()

    asyncio.run(scenario())
