"""The built-in context stages of the foundation: system prompt, agent state, history.

Memories and records plug in as further stages between state and history.
"""

from __future__ import annotations

import json

from gateway.config import HistoryConfig
from gateway.history import ChatHistory
from gateway.pipeline.context import ContextLayer, TurnContext
from gateway.prompts import SystemPrompts, combined_text
from gateway.state import AgentState


class SystemPromptStage:
    name = "system_prompt"
    volatile = False

    def __init__(self, prompts: SystemPrompts) -> None:
        self._prompts = prompts

    def applies(self, turn: TurnContext) -> bool:
        return turn.options.system_prompt is not False

    async def run(self, turn: TurnContext) -> ContextLayer | None:
        options = turn.options
        chosen = await self._prompts.for_request(turn.project_id, options.system_prompt, options.subject_id,
                                                 options.chat_id)
        if not chosen:
            return None
        return ContextLayer(system_text=combined_text(chosen))


class AgentStateStage:
    name = "state"
    volatile = True

    def __init__(self, state: AgentState) -> None:
        self._state = state

    def applies(self, turn: TurnContext) -> bool:
        return turn.options.state is not None and turn.options.state.load

    async def run(self, turn: TurnContext) -> ContextLayer | None:
        wanted = turn.options.state
        assert wanted is not None
        doc = await self._state.get(turn.project_id, turn.options.subject_id, wanted.key)
        if doc is None:
            return None  # Missing state is not an error: the task simply has none yet.
        value = json.dumps(doc["value"], ensure_ascii=False, sort_keys=True)
        # State is data the app wrote, so it is framed as data, not as instructions.
        text = f"Current agent state (key \"{wanted.key}\"), as JSON data:\n{value}"
        return ContextLayer(system_text=text)


class HistoryStage:
    name = "history"
    volatile = False

    def __init__(self, history: ChatHistory, config: HistoryConfig) -> None:
        self._history = history
        self._config = config

    def applies(self, turn: TurnContext) -> bool:
        return turn.options.history

    async def run(self, turn: TurnContext) -> ContextLayer | None:
        messages = await self._history.replay(turn.project_id, turn.options.subject_id, turn.options.chat_id,
                                              token_budget=self._config.token_budget,
                                              max_messages=self._config.max_messages,
                                              # Cache mode: a replayed prefix that stays the same for
                                              # whole chunks of turns (ChatHistory.replay says why).
                                              chunk=self._config.cut_chunk_messages if turn.options.cache else None)
        return ContextLayer(messages=messages) if messages else None
