"""What happens once a turn has been answered: history, then a durable learn job.

Only a complete answer is recorded: a provider error, a cut-off stream or a
client that hung up mid-answer leaves no trace, so a retried turn is not stored
twice, history never holds half an answer, and nothing is learned from one.
Both writes happen before the answer's last byte leaves; extraction itself runs
later, in the job worker, off the request path.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

from gateway.history import ChatHistory
from gateway.jobs.queue import JobQueue
from gateway.jobs.worker import JobWorker
from gateway.memory.learning import LEARN_JOB, Learner, learn_payload
from gateway.pipeline.context import TurnContext
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


async def record_turn(turn: TurnContext, answer: dict[str, Any], *, history: ChatHistory, jobs: JobQueue,
                      learner: Learner, worker: JobWorker) -> None:
    """Append the turn to ``history`` (mnx.log) and queue its learn job (mnx.learn); ``learner``
    holds the caller's keys for the job, and ``worker`` is woken to run it now."""
    options = turn.options
    new_messages = new_turn_messages(turn.messages)
    answer = recorded_answer(answer)
    message_ids: list[str] = []
    if options.log:
        message_ids = await history.append(turn.project_id, options.subject_id, options.chat_id,
                                           new_messages + [answer], metadata=options.metadata, model=turn.model)
    payload = learn_payload(subject_id=options.subject_id, chat_id=options.chat_id, learn=options.learn,
                            memory_policy=options.memory_policy, new_messages=new_messages, answer=answer,
                            model=turn.model, request_type=turn.request_type, message_ids=message_ids)
    if payload is None:
        return
    job_id = await jobs.enqueue(turn.project_id, LEARN_JOB, payload)
    # Paid extraction and embedding models may use the caller's own keys, held in memory
    # for this job's first run only.
    learner.remember_keys(job_id, turn.provider_keys)
    worker.wake()
