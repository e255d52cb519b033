"""Everything a request handler needs, built once at startup from the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import KeyRing
from gateway.config import GatewayConfig
from gateway.history import ChatHistory
from gateway.memory_policies import MemoryPolicies
from gateway.pipeline.context import ContextStage
from gateway.pipeline.stages import AgentStateStage, HistoryStage, SystemPromptStage
from gateway.prompts import SystemPrompts
from gateway.proxy.upstream import Upstream
from gateway.state import AgentState
from gateway.store import DocumentStore, open_store


@dataclass
class Services:
    config: GatewayConfig
    store: DocumentStore
    keys: KeyRing
    history: ChatHistory
    prompts: SystemPrompts
    state: AgentState
    policies: MemoryPolicies
    upstream: Upstream
    # The context layers, in seed 003's order (memories and records slot in before history).
    stages: list[ContextStage]

    @classmethod
    def build(cls, config: GatewayConfig, store: DocumentStore | None = None) -> "Services":
        store = store or open_store(config.storage)
        history = ChatHistory(store)
        prompts = SystemPrompts(store)
        state = AgentState(store)
        return cls(
            config=config,
            store=store,
            keys=KeyRing(config),
            history=history,
            prompts=prompts,
            state=state,
            policies=MemoryPolicies(store),
            upstream=Upstream(config.providers),
            stages=[SystemPromptStage(prompts), AgentStateStage(state), HistoryStage(history, config.history)],
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.store.close()
