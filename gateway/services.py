"""Everything a request handler needs, built once at startup from the configuration."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from typing import Any

from gateway import registry
from gateway.audit_log import AuditLog
from gateway.auth import KeyRing
from gateway.config import GatewayConfig, StorageConfig
from gateway.erasure import SubjectErased, SubjectErasure
from gateway.erasure_fence import ErasureFence, LocalErasureFence, RedisErasureFence
from gateway.history import ChatHistory
from gateway.integrations import Integrations, IntegrationValues
from gateway.integrations.cache import ValuesCache
from gateway.keys.store import KeyStore
from gateway.jobs import Job, JobQueue
from gateway.jobs.worker import JobWorker
from gateway.memory.backends import open_vector_index, prepare
from gateway.memory.embedding import Embedder
from gateway.memory.events import MemoryEvents, RedisMemoryEvents
from gateway.memory.extraction import Extractor
from gateway.memory.lexical import Lexicon
from gateway.memory.learning import LEARN_JOB, Learner
from gateway.memory.memories import REINDEX_JOB, Memories
from gateway.memory.recall_log import RecallLog
from gateway.memory.recalls import RecallEvents
from gateway.memory.vector_index import VectorIndex
from gateway.memory_policies import MemoryPolicies
from gateway.pipeline.context import ContextStage
from gateway.pipeline.profile import ProfileStage
from gateway.pipeline.recall import MemoryRecallStage
from gateway.pipeline.records import RecordsRecallStage
from gateway.pipeline.stages import AgentStateStage, HistoryStage, SystemPromptStage
from gateway.profiles import Profiles, custom_fields
from gateway.prompts import SystemPrompts
from gateway.records.index import RecordIndex
from gateway.records.learning import RecordsLearner
from gateway.records.records import Records
from gateway.proxy.upstream import Upstream
from gateway.state import AgentState
from gateway.redaction import register_secrets
from gateway.store import DocumentStore
from gateway.store.redis_client import connect_redis
from gateway.subject_locks import RedisSubjectLocks, SubjectLocks
from gateway.usage_limits import UsageLimiter
from gateway.summaries.folding import SUMMARIZE_JOB, SummaryFolder
from gateway.summaries.summarizer import Summarizer
from gateway.summaries.tokens import preload_encodings


@dataclass
class Services:
    config: GatewayConfig
    store: DocumentStore
    keys: KeyRing
    history: ChatHistory
    prompts: SystemPrompts
    state: AgentState
    # Subject profile fields (contract §8); their events go out with the memories' own.
    profiles: Profiles
    policies: MemoryPolicies
    # Schema-backed records (contract §10), searched in the memories' vector index.
    records: Records
    vector_index: VectorIndex
    memories: Memories
    recalls: RecallEvents
    # Recall events and counts, written in batches just after the answers (recall_log.py).
    recall_log: RecallLog
    jobs: JobQueue
    learner: Learner
    # Folds long chats into rolling summaries, in jobs (mnx.summarize).
    summary_folder: SummaryFolder
    worker: JobWorker
    upstream: Upstream
    # The context layers, in seed 003's order.
    stages: list[ContextStage]
    erasure: SubjectErasure
    fence: ErasureFence
    # Integrations (contract §16), and the values they keep, which prompts read (gateway/integrations/).
    integrations: Integrations
    integration_values: IntegrationValues
    # Usage limits, counted in the store (gateway/usage_limits.py).
    usage: UsageLimiter
    # The audit log of proxied turns (gateway/audit_log.py; off unless audit.enabled).
    audit: AuditLog
    # The Redis client the store, queue and fence share (Redis backend only).
    redis: Any = None

    @classmethod
    def build(cls, config: GatewayConfig, store: DocumentStore | None = None) -> Services:
        register_secrets(_configured_secrets(config))
        # A misspelt backend or plugin name fails here, before anything is opened.
        registry.check_names(config)
        redis = _shared_redis(config.storage)
        # Every backend and plugin is built by the factory gateway.yaml names (gateway.registry).
        store = store or registry.create("store", config.storage.backend, config.storage, redis)
        history = ChatHistory(store)
        prompts = SystemPrompts(store)
        state = AgentState(store)
        memory = config.memory
        embedder: Embedder | None = registry.create("embedder", memory.embedder.provider, memory.embedder,
                                                    config.providers)
        vector_index = open_vector_index(memory.vectors, embedder.dimensions if embedder else None)
        jobs: JobQueue = registry.create("queue", config.storage.backend, config.storage, redis)
        # Memory and profile events: in process, or fanned out to every gateway through Redis.
        events = (RedisMemoryEvents(redis, config.storage.redis.key_prefix, config.events) if redis is not None
                  else MemoryEvents(config.events))
        # Writers of one subject's claims, or profile, take turns: across gateways on Redis.
        def subject_locks(name: str) -> SubjectLocks:
            return (RedisSubjectLocks(name, redis, config.storage.redis.key_prefix) if redis is not None
                    else SubjectLocks(name))

        memories = Memories(store, vector_index, memory, embedder, events=events, repairs=jobs,
                            claim_locks=subject_locks("claims"))
        recalls = RecallEvents(store)
        profiles = Profiles(store, memories.events, custom_fields(config.projects), locks=subject_locks("profile"))
        # A profile value learned with a memory goes when that memory is deleted or superseded.
        memories.on_left.append(profiles.memory_left)
        policies = MemoryPolicies(store)
        record_index = RecordIndex(vector_index, Lexicon(contextual=memory.vectors.lexical == "contextual"), embedder)
        records = Records(store, record_index, memories.events, config.records, locks=subject_locks("records"))
        fence: ErasureFence = (RedisErasureFence(redis, config.storage.redis.key_prefix) if redis is not None
                               else LocalErasureFence())
        integration_cache = ValuesCache(store)
        audit = AuditLog(store, config.audit)
        erasure = SubjectErasure(fence, store, jobs, memories=memories, recalls=recalls, history=history, state=state,
                                 prompts=prompts, policies=policies, profiles=profiles, records=records,
                                 integration_values=integration_cache, audit=audit)
        # Every write of a record enters erasure's section for its subjects (gateway/records/records.py).
        records.fence = erasure.writing
        audit.fence = erasure.writing_many
        integration_cache.fence = erasure.writing
        integrations = Integrations(store, config.integrations, integration_cache)
        # What prompt templates render {{var}} tokens from (gateway/prompt_templates.py).
        integration_values = IntegrationValues(integrations)
        extractor: Extractor = registry.create("extractor", config.learning.extractor.provider,
                                               config.learning.extractor, config.providers)
        recall_log = RecallLog(recalls, memories, erasure,
                               flush_delay_seconds=config.memory.recall.events_flush_ms / 1000)
        # The same extractor learns a turn's records (mnx.records.learn), after its memories.
        learner = Learner(memories, policies, extractor, erasure, profiles=profiles,
                          records=RecordsLearner(records, extractor, locks=subject_locks("records-learning")))
        erasure.on_jobs_voided.append(learner.forget_keys)
        summarizer: Summarizer = registry.create("summarizer", config.summarization.summarizer.provider,
                                                 config.summarization.summarizer, config.providers)
        summary_folder = SummaryFolder(history, summarizer, jobs, erasure, lease_seconds=config.learning.lease_seconds,
                                       max_messages=config.history.max_messages)
        erasure.on_jobs_voided.append(summary_folder.forget_keys)
        learning = config.learning

        async def run_job(job: Job) -> None:
            if job.kind == LEARN_JOB:
                await learner.handle(job)
            elif job.kind == SUMMARIZE_JOB:
                await summary_folder.handle(job)
            elif job.kind == REINDEX_JOB:
                await _repair_index(memories, erasure, job)
            else:
                raise ValueError(f"unknown job kind {job.kind!r}")

        worker = JobWorker(jobs, run_job, batch=learning.batch, lease_seconds=learning.lease_seconds,
                           poll_seconds=learning.poll_seconds, retry_base_seconds=learning.retry_base_seconds,
                           retry_max_seconds=learning.retry_max_seconds)
        summary_folder.wake = worker.wake
        return cls(
            config=config,
            store=store,
            keys=KeyRing(config, KeyStore(store)),
            history=history,
            prompts=prompts,
            state=state,
            profiles=profiles,
            policies=policies,
            records=records,
            vector_index=vector_index,
            memories=memories,
            recalls=recalls,
            recall_log=recall_log,
            jobs=jobs,
            learner=learner,
            summary_folder=summary_folder,
            worker=worker,
            upstream=Upstream(config.providers),
            stages=[SystemPromptStage(prompts, integration_values if config.prompts.templates_enabled else None),
                    AgentStateStage(state), ProfileStage(profiles),
                    MemoryRecallStage(memories, recall_log, memory.recall),
                    RecordsRecallStage(records, config.records.recall),
                    HistoryStage(history, config.history, summary_folder, config.summarization)],
            erasure=erasure,
            fence=fence,
            integrations=integrations,
            integration_values=integration_values,
            usage=UsageLimiter(store, config.projects),
            audit=audit,
            redis=redis,
        )

    async def start(self) -> None:
        """What needs the event loop: reaching the store, preparing the index, the job worker."""
        await self.store.ping()
        await prepare(self.vector_index)
        # Leases held when the embedded gateway last stopped (or was killed) are void now.
        await self.jobs.release_leases()
        # On Redis: the tasks that send this process's events and hear every process's.
        await self.memories.events.start()
        # Token counts of stored messages use tiktoken's encodings: loaded now, off the event
        # loop, rather than by the first request that stores a turn (which would stop every
        # other request while it loads).
        await asyncio.to_thread(preload_encodings)
        self.worker.start()

    def begin_shutdown(self) -> None:
        """The server is about to wait for open responses before stopping: end those that never
        end by themselves, the event streams (gateway.server.GatewayServer calls this)."""
        self.memories.events.close_streams()

    async def aclose(self) -> None:
        await self.recall_log.close()
        await self.audit.close()
        await self.worker.stop()
        await self.memories.events.aclose()
        await self.jobs.close()
        await self.upstream.aclose()
        await self.vector_index.close()
        await self.store.close()
        if self.redis is not None:
            await self.redis.aclose()


def _shared_redis(storage: StorageConfig) -> Any:
    if storage.backend != "redis":
        return None
    settings = storage.redis
    return connect_redis(settings.url, max_connections=settings.max_connections,
                         pool_timeout=settings.pool_timeout_seconds, socket_timeout=settings.socket_timeout_seconds,
                         cluster=settings.cluster)


def _configured_secrets(config: GatewayConfig) -> list[str]:
    """Every secret gateway.yaml holds in clear, for log and error redaction by value."""
    secrets = [key.key.get_secret_value() for project in config.projects for key in project.keys if key.key]
    providers = config.providers
    for provider in (providers.openai, providers.anthropic, providers.gemini):
        if provider.api_key is not None:
            secrets.append(provider.api_key.get_secret_value())
    for plugin_key in (config.memory.embedder.api_key, config.learning.extractor.api_key,
                       config.summarization.summarizer.api_key):
        if plugin_key is not None:
            secrets.append(plugin_key.get_secret_value())
    qdrant = config.memory.vectors.qdrant
    if qdrant is not None and qdrant.api_key is not None:
        secrets.append(qdrant.api_key.get_secret_value())
    return secrets


async def _repair_index(memories: Memories, erasure: SubjectErasure, job: Job) -> None:
    """An index-repair job; it writes nothing for a subject erased since it was noted."""
    subject_id = job.payload.get("subject_id")
    if subject_id is None:  # noted by a version that did not name the subject
        await memories.repair(job.project_id, job.payload["memory_ids"])
        return
    try:
        async with erasure.writing(job.project_id, subject_id, since=job.created_at):
            await memories.repair(job.project_id, job.payload["memory_ids"])
    except SubjectErased:
        pass
