"""What happens once a turn has been answered: the turn is written to history.

Only a complete answer is recorded: a provider error, a cut-off stream or a
client that hung up mid-answer leaves no trace, so a retried turn is not stored
twice and history never holds half an answer. (Learning from the turn plugs in
here too.)
"""

from __future__ import annotations

from typing import Any, Sequence

from gateway.pipeline.context import TurnContext
from gateway.services import Services


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


async def record_turn(services: Services, turn: TurnContext, answer: dict[str, Any]) -> None:
    options = turn.options
    if options.log:
        await services.history.append(turn.project_id, options.subject_id, options.chat_id,
                                      new_turn_messages(turn.messages) + [answer],
                                      metadata=options.metadata, model=turn.model)
