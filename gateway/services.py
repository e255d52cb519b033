"""Everything a request handler needs, built once at startup from the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import KeyRing
from gateway.config import GatewayConfig
from gateway.history import ChatHistory
from gateway.memory.backends import open_vector_index, prepare
from gateway.memory.memories import Memories
from gateway.memory.recalls import RecallEvents
from gateway.memory.vector_index import VectorIndex
from gateway.memory_policies import MemoryPolicies
from gateway.pipeline.context import ContextStage
from gateway.pipeline.recall import MemoryRecallStage
from gateway.pipeline.stages import AgentStateStage, HistoryStage, SystemPromptStage
from gateway.prompts import SystemPrompts
from gateway.proxy.upstream import Upstream
from gateway.state import AgentState
from gateway.store import DocumentStore, open_store
from plugins.embedders import load_embedder


@dataclass
class Services:
    config: GatewayConfig
    store: DocumentStore
    keys: KeyRing
    history: ChatHistory
    prompts: SystemPrompts
    state: AgentState
    policies: MemoryPolicies
    vector_index: VectorIndex
    memories: Memories
    recalls: RecallEvents
    upstream: Upstream
    # The context layers, in seed 003's order (records will slot in before history).
    stages: list[ContextStage]

    @classmethod
    def build(cls, config: GatewayConfig, store: DocumentStore | None = None) -> "Services":
        store = store or open_store(config.storage)
        history = ChatHistory(store)
        prompts = SystemPrompts(store)
        state = AgentState(store)
        memory = config.memory
        embedder = load_embedder(memory.embedder, config.providers)
        vector_index = open_vector_index(memory.vectors, embedder.dimensions if embedder else None)
        memories = Memories(store, vector_index, memory, embedder)
        recalls = RecallEvents(store)
        return cls(
            config=config,
            store=store,
            keys=KeyRing(config),
            history=history,
            prompts=prompts,
            state=state,
            policies=MemoryPolicies(store),
            vector_index=vector_index,
            memories=memories,
            recalls=recalls,
            upstream=Upstream(config.providers),
            stages=[SystemPromptStage(prompts), AgentStateStage(state),
                    MemoryRecallStage(memories, recalls, memory.recall), HistoryStage(history, config.history)],
        )

    async def start(self) -> None:
        """What needs the event loop: reaching the store and preparing the vector index."""
        await self.store.ping()
        await prepare(self.vector_index)

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.vector_index.close()
        await self.store.close()
