"""What happens once a turn has been answered: history, then a durable learn job.

Only a complete answer is recorded: a provider error, a cut-off stream or a
client that hung up mid-answer leaves no trace, so a retried turn is not stored
twice, history never holds half an answer, and nothing is learned from one.
Both writes happen before the answer's last byte leaves; extraction itself runs
later, in the job worker, off the request path.

Except for ``mnx.records.sync`` on a non-streamed turn: its records are extracted
(``RecordsSync.prepare``) and written (``RecordsSync.write``, inside the caller's erasure
fence) before the answer, which then says what was written; the turn's job carries no
records part, so they are learned once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

from gateway.history import ChatHistory, content_text
from gateway.jobs.worker import JobWorker
from gateway.memory.learning import LEARN_JOB, Learner, learn_payload
from gateway.pipeline.context import TurnContext
from gateway.records.learning import ExtractedRecord, RecordsLearner, RecordsSyncFailed, RecordsTurn
from gateway.stored_messages import recorded_answer


def new_turn_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request messages that are new in this turn.

    Apps either send only the new message (and let history fill in the rest) or
    resend the whole conversation; the messages after the last assistant message
    are new in both cases. System messages are configuration, not conversation.
    """
    start = 0
    for index, message in enumerate(messages):
        if message.get("role") == "assistant":
            start = index + 1
    return [m for m in messages[start:] if m.get("role") not in ("system", "developer")]


async def record_turn(turn: TurnContext, answer: dict[str, Any], *, history: ChatHistory,
                      learner: Learner, worker: JobWorker, records_learned: bool = False,
                      learn_policy: Mapping[str, Any] | None = None) -> None:
    """Append the turn to ``history`` (mnx.log) and queue its learn job (mnx.learn, and
    mnx.records.learn unless ``records_learned``: a sync turn wrote them already); ``learner``
    holds the caller's keys for the job, and ``worker`` takes it to run soon. ``learn_policy``:
    the memory policy read while assembling the turn (``AssembledContext.learn_policy``)."""
    options = turn.options
    new_messages = new_turn_messages(turn.messages)
    answer = recorded_answer(answer)
    message_ids: list[str] = []
    if options.log:
        message_ids = await history.append(turn.project_id, options.subject_id, options.chat_id,
                                           new_messages + [answer], metadata=options.metadata, model=turn.model)
    payload = learn_payload(subject_id=options.subject_id, chat_id=options.chat_id, learn=options.learn,
                            memory_policy=options.memory_policy, new_messages=new_messages, answer=answer,
                            model=turn.model, request_type=turn.request_type, message_ids=message_ids,
                            records=None if records_learned else options.records, policy=learn_policy)
    if payload is None:
        return
    traceparent = turn.trace.traceparent() if turn.trace is not None else None
    if traceparent is not None:
        # The job's span links to its turn's (gateway/tracing.py): the trace context, nothing more.
        payload["traceparent"] = traceparent
    # Handed to this process's worker (gateway/jobs/worker.py), which runs it after a few
    # milliseconds, once this answer has left.
    job_id = await worker.submit(turn.project_id, LEARN_JOB, payload)
    # Paid extraction and embedding models may use the caller's own keys, held in memory
    # for this job's first run only (the worker starts it on a later turn of the loop).
    learner.remember_keys(job_id, turn.provider_keys)


def wants_records_sync(turn: TurnContext) -> bool:
    records = turn.options.records
    return records is not None and records.sync and records.learn is not False


@dataclass(frozen=True)
class RecordsSync:
    """A sync turn's records: extracted before the erasure fence, written inside it."""

    learner: RecordsLearner
    turn: RecordsTurn
    proposals: Sequence[ExtractedRecord]
    embedder_key: str | None

    @classmethod
    async def prepare(cls, turn: TurnContext, answer: dict[str, Any], *, learner: Learner) -> RecordsSync:
        """Ask the extractor for the turn's records now (nothing is written); a failure is a
        RecordsSyncFailed, the caller's to know."""
        option = turn.options.records
        assert option is not None and option.learn is not False
        if learner.records is None:
            raise RecordsSyncFailed("records learning is not available on this gateway", reason="not_configured")
        user_messages = [content_text(m.get("content")) for m in new_turn_messages(turn.messages)
                         if m.get("role") == "user"]
        records_turn = RecordsTurn(turn.options.subject_id, turn.options.chat_id,
                                   [text for text in user_messages if text.strip()],
                                   content_text(recorded_answer(answer).get("content")), option.learn,
                                   option.tables)
        keys = learner.keys_for(turn.provider_keys)
        proposals: list[ExtractedRecord] = []
        if records_turn.user_messages:
            proposals = await learner.records.extract(turn.project_id, records_turn, api_key=keys.extractor,
                                                      embedder_key=keys.embedder, strict=True)
        return cls(learner.records, records_turn, proposals, keys.embedder)

    async def write(self, project_id: str) -> list[dict[str, Any]]:
        """Write them all or fail (RecordsSyncFailed); the caller holds the erasure fence."""
        if not self.proposals:
            return []
        return await self.learner.write(project_id, self.turn, self.proposals, run_id=f"sync:{uuid.uuid4()}",
                                        job_id=None, embedder_key=self.embedder_key, strict=True)


def records_summary(writes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The top-level ``records`` of a sync answer (contract §10.8 Compat, as CART reads it)."""
    def table(action: str) -> list[dict[str, Any]]:
        return [{"record_id": w["record_id"], "table": w["type_name"], "action": w["action"]}
                for w in writes if w["action"] == action]

    return {"created": table("created"), "updated": table("updated"),
            "actions": list(dict.fromkeys(w["action"] for w in writes))}
