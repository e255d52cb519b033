"""The built-in context stages of the foundation: system prompt, agent state, history.

Memories and records plug in as further stages between state and history.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from gateway.config import HistoryConfig, SummarizationConfig
from gateway.history import ChatHistory, HistoryWindow
from gateway.memory_policies import POLICIES, combine
from gateway.pipeline.context import ContextLayer, TurnContext
from gateway.prompt_templates import ValueSource, render
from gateway.prompts import SystemPrompts, combined_text
from gateway.state import AgentState
from gateway.summaries.folding import SummaryFolder, needs_fold, summary_section
from gateway.summaries.settings import SummarizeSettings, within_limits
from gateway.summaries.store import ChatSummary


class SystemPromptStage:
    name = "system_prompt"
    volatile = False

    def __init__(self, prompts: SystemPrompts, template_values: ValueSource | None = None) -> None:
        self._prompts = prompts
        # Where {{var}} values come from when prompt templates are turned on (None: sent as stored).
        self._template_values = template_values

    def applies(self, turn: TurnContext) -> bool:
        return turn.options.system_prompt is not False

    async def run(self, turn: TurnContext) -> ContextLayer | None:
        options = turn.options
        # A turn that will learn under the memory policies that apply reads them with its prompts
        # (the same levels: one statement on SQLite), and its learn job follows what it read
        # (ContextLayer.learn_policy) instead of reading them again.
        reads_policies = options.learn is not False and options.memory_policy is True and not options.explain
        chosen, policies = await self._prompts.for_request(turn.project_id, options.system_prompt,
                                                           options.subject_id, options.chat_id,
                                                           also=POLICIES if reads_policies else None)
        learn_policy = combine(policies) if policies is not None else None
        if not chosen:
            return ContextLayer(learn_policy=learn_policy) if learn_policy is not None else None
        audit = {"prompt_ids": [prompt["id"] for prompt in chosen]}
        if self._template_values is None:
            return ContextLayer(system_text=combined_text(chosen), audit=audit, learn_policy=learn_policy)
        # Integration values are the integrations' data: a key without integrations:read gets the
        # defaults only. An explained turn reads cached values and fetches (and writes) nothing.
        source = self._template_values if turn.may_read_integrations else None
        rendered, rendering = await render(chosen, source, project_id=turn.project_id, subject_id=options.subject_id,
                                           chat_id=options.chat_id, allow_live=not options.explain)
        return ContextLayer(system_text=combined_text(rendered), report=rendering.report(), audit=audit,
                            learn_policy=learn_policy)


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
        return ContextLayer(system_text=text, audit={"state_key": wanted.key})


# Chats remembered as under the summarizing threshold (HistoryStage._short_chats).
_REMEMBERED_SHORT_CHATS = 10_000


class HistoryStage:
    """The chat's prior turns; with ``mnx.summarize``, its rolling summary and the turns after it.

    With a summary, its text is a section of the gateway's system message (every surface carries
    one) and the messages after it are replayed as they were; without one yet, the newest
    messages that fit. Summarization owns the budget then: history is replayed in full up to
    ``start_at_tokens`` (or ``history.token_budget`` if larger), summarized beyond it."""

    name = "history"
    volatile = False

    def __init__(self, history: ChatHistory, config: HistoryConfig, folder: SummaryFolder | None = None,
                 summarization: SummarizationConfig | None = None) -> None:
        self._history = history
        self._config = config
        self._folder = folder
        # The operator's limits on a request's summarize numbers.
        self._summarization = summarization or SummarizationConfig()
        # Chats (project, subject, chat) whose last summarizing replay read them whole, under the
        # threshold (the most recently replayed, in process): they have no summary to look up.
        self._short_chats: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def _is_short(self, window: HistoryWindow, settings: SummarizeSettings) -> bool:
        """Read to the chat's start, and under both thresholds: nothing of it can be folded yet."""
        return (window.complete and window.tokens <= settings.start_at_tokens
                and len(window.docs) < self._config.max_messages)

    def _remember(self, chat: tuple[str, str, str], short: bool) -> None:
        if not short:
            self._short_chats.pop(chat, None)
            return
        self._short_chats[chat] = None
        self._short_chats.move_to_end(chat)
        if len(self._short_chats) > _REMEMBERED_SHORT_CHATS:
            self._short_chats.popitem(last=False)

    def applies(self, turn: TurnContext) -> bool:
        return turn.options.history

    async def run(self, turn: TurnContext) -> ContextLayer | None:
        if turn.options.summarize is not None and self._folder is not None:
            return await self._with_summary(turn, turn.options.summarize, self._folder)
        messages = await self._history.replay(turn.project_id, turn.options.subject_id, turn.options.chat_id,
                                              token_budget=self._config.token_budget,
                                              max_messages=self._config.max_messages,
                                              # Cache mode: a replayed prefix that stays the same for
                                              # whole chunks of turns (ChatHistory.replay says why).
                                              chunk=self._config.cut_chunk_messages if turn.options.cache else None)
        return ContextLayer(messages=messages, audit={"messages": len(messages)}) if messages else None

    async def _with_summary(self, turn: TurnContext, asked: SummarizeSettings,
                            folder: SummaryFolder) -> ContextLayer | None:
        settings = within_limits(asked, min_chunk_tokens=self._summarization.min_chunk_tokens,
                                 max_start_at_tokens=self._summarization.max_start_at_tokens)
        project_id, subject_id, chat_id = turn.project_id, turn.options.subject_id, turn.options.chat_id
        budget = max(self._config.token_budget, settings.start_at_tokens)
        chat = (project_id, subject_id, chat_id)
        window: HistoryWindow | None = None
        summary: ChatSummary | None = None
        if chat in self._short_chats:
            # Read whole and under the threshold last time: no fold can have happened since (a chat
            # is folded only once it is past the threshold, which this read would show), so no
            # summary to look up: a chat under the threshold costs what it costs without summaries.
            window = await self._history.window(project_id, subject_id, chat_id, token_budget=budget,
                                                max_messages=self._config.max_messages)
            if not self._is_short(window, settings):
                window = None
        if window is None:
            summary = await self._history.summaries.get(project_id, subject_id, chat_id)
            # (No chunked cut for mnx.cache here: the window starts where the summary ends, which
            # moves only when a chunk is folded in.)
            window = await self._history.window(
                project_id, subject_id, chat_id, token_budget=budget, max_messages=self._config.max_messages,
                after_id=summary.end_message_id or None if summary else None,
                after_count=summary.messages_summarized if summary and not summary.end_message_id else None)
            if window.anchor_missing:
                summary = None  # of messages deleted since: the next fold replaces it
        self._remember(chat, summary is None and self._is_short(window, settings))
        messages = window.replayable()
        fold = needs_fold(window, summary, settings, self._config.max_messages)
        if not messages and summary is None and not fold:
            return None

        async def request_fold() -> None:
            await folder.request(project_id, subject_id, chat_id, settings, turn.model, turn.provider_keys)

        audit: dict[str, object] = {"messages": len(messages)}
        if summary is not None:  # the summary stands for the chat's first messages_summarized messages
            audit["summary"] = {"messages_summarized": summary.messages_summarized,
                                "end_message_id": summary.end_message_id or None}
        return ContextLayer(system_text=summary_section(summary) if summary else None, messages=messages,
                            on_answered=request_fold if fold else None, audit=audit)
