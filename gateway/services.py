"""Everything a request handler needs, built once at startup from the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import KeyRing
from gateway.config import GatewayConfig
from gateway.history import ChatHistory
from gateway.jobs import Job, JobQueue, open_queue
from gateway.jobs.worker import JobWorker
from gateway.memory.backends import open_vector_index, prepare
from gateway.memory.learning import LEARN_JOB, Learner
from gateway.memory.memories import REINDEX_JOB, Memories
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
from plugins.extractors import load_extractor


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
    jobs: JobQueue
    learner: Learner
    worker: JobWorker
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
        jobs = open_queue(config.storage)
        memories = Memories(store, vector_index, memory, embedder, repairs=jobs)
        recalls = RecallEvents(store)
        policies = MemoryPolicies(store)
        learner = Learner(memories, policies, load_extractor(config.learning.extractor, config.providers))
        learning = config.learning

        async def run_job(job: Job) -> None:
            if job.kind == LEARN_JOB:
                await learner.handle(job)
            elif job.kind == REINDEX_JOB:
                await memories.repair(job.project_id, job.payload["memory_ids"])
            else:
                raise ValueError(f"unknown job kind {job.kind!r}")

        worker = JobWorker(jobs, run_job, batch=learning.batch, lease_seconds=learning.lease_seconds,
                           poll_seconds=learning.poll_seconds, retry_base_seconds=learning.retry_base_seconds,
                           retry_max_seconds=learning.retry_max_seconds)
        return cls(
            config=config,
            store=store,
            keys=KeyRing(config),
            history=history,
            prompts=prompts,
            state=state,
            policies=policies,
            vector_index=vector_index,
            memories=memories,
            recalls=recalls,
            jobs=jobs,
            learner=learner,
            worker=worker,
            upstream=Upstream(config.providers),
            stages=[SystemPromptStage(prompts), AgentStateStage(state),
                    MemoryRecallStage(memories, recalls, memory.recall), HistoryStage(history, config.history)],
        )

    async def start(self) -> None:
        """What needs the event loop: reaching the store, preparing the index, the job worker."""
        await self.store.ping()
        await prepare(self.vector_index)
        # Leases held when the embedded gateway last stopped (or was killed) are void now.
        await self.jobs.release_leases()
        self.worker.start()

    async def aclose(self) -> None:
        await self.worker.stop()
        await self.jobs.close()
        await self.upstream.aclose()
        await self.vector_index.close()
        await self.store.close()
