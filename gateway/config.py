"""gateway.yaml: loading, ``${ENV}`` interpolation and validation.

The file is validated once, at startup, by pydantic models that forbid unknown
keys, so a typo fails loudly with its key path instead of silently doing nothing.
Secrets never need to sit in the file: any string may be ``${VAR}`` or
``${VAR:-default}`` and is filled from the environment before validation.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

from gateway.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Where the config comes from, first match wins: --config, then $MNX_GATEWAY_CONFIG, then
# ./gateway.yaml, then the built-in default shipped inside the package (a copy of the
# repository's gateway.yaml, kept identical by a test), so `mnx-gateway serve` starts anywhere.
CONFIG_ENV_VAR = "MNX_GATEWAY_CONFIG"
CONFIG_FILE_NAME = "gateway.yaml"
BUILT_IN_CONFIG = Path(__file__).resolve().parent / "default_config" / CONFIG_FILE_NAME


def _blank_is_none(value: SecretStr | None) -> SecretStr | None:
    return None if value is None or value.get_secret_value() == "" else value


# A key that may be left empty (``${OPENAI_API_KEY:-}``): empty means "none configured".
OptionalSecret = Annotated[SecretStr | None, AfterValidator(_blank_is_none)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsConfig(_Strict):
    """GET /metrics (gateway/metrics.py), for keys holding the metrics:read scope."""

    # On by default: the counters cost a few microseconds per request (docs/configuration.md).
    enabled: bool = True


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    # Requests larger than this are refused with 413 before their body is read in full.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The request line plus all header lines may total this many bytes (so may a chunked
    # body's trailer fields); past it the client gets 431 and is disconnected before
    # authentication runs, having buffered about this much at most (see gateway.server).
    # The floor catches a value given in KiB by mistake.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # Header fields per request, trailers included; past it, 431 likewise. Each field costs
    # Python objects and every header lookup scans them all. The floor leaves room for the
    # 18 an OpenAI SDK request carries plus what proxies add.
    max_headers: int = Field(default=100, ge=32)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: lines for a person; json: one object per line (gateway/log_format.py). Both carry the request id.
    log_format: Literal["text", "json"] = "text"
    # One log line per request; off by default because it costs CPU on every call.
    access_log: bool = False
    # When stopping, how long open responses may take to finish before they are cut off. A
    # client that stopped reading (a stuck memory event subscriber) would otherwise hold the
    # stop forever; raise it if answers that take longer must finish across a restart.
    shutdown_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    metrics: MetricsConfig = MetricsConfig()


class SqliteConfig(_Strict):
    path: str = "./data/gateway.db"


class RedisConfig(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    # Every key the gateway writes starts with this, so one Redis can host several gateways.
    key_prefix: str = "mnx:"
    # Connections this gateway process opens at most; a call finding all of them busy waits
    # up to pool_timeout_seconds for one (then fails as 503 storage_unavailable).
    max_connections: int = Field(default=64, ge=1, le=10000)
    pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # A call to a Redis that stops answering fails (503) after this long.
    socket_timeout_seconds: float = Field(default=5.0, gt=0)
    # url is one node (the seed) of a Redis Cluster: the gateway finds the other masters from it.
    cluster: bool = False

    @model_validator(mode="after")
    def _cluster_has_one_database(self) -> RedisConfig:
        # A cluster has database 0 only: said here, not as a traceback when the gateway starts.
        if self.cluster and re.fullmatch(r"/?0?", urlsplit(self.url).path) is None:
            raise ValueError("a Redis Cluster has database 0 only: end the url with /0 (or no database)")
        return self


# A backend or plugin name, as registered under an entry point (gateway/registry.py checks it
# names one that is installed).
PluginName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class StorageConfig(_Strict):
    # sqlite | redis, or a store another package registers (mnx_gateway.stores and .queues).
    backend: PluginName = "sqlite"
    sqlite: SqliteConfig = SqliteConfig()
    redis: RedisConfig = RedisConfig()
    # Settings for a backend from another package, handed to it as they are; the built-ins read
    # their own sections above.
    options: dict[str, Any] = {}


class ProjectKey(_Strict):
    """One API key of a project: the key itself (from the environment) or its SHA-256."""

    name: str = "default"
    key: SecretStr | None = None
    key_sha256: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be the 64-character hex SHA-256 of the key")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _exactly_one_form(self) -> ProjectKey:
        has_key = self.key is not None and self.key.get_secret_value() != ""
        if has_key == (self.key_sha256 is not None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        return self

    def digest(self) -> str:
        if self.key_sha256:
            return self.key_sha256
        assert self.key is not None
        return hashlib.sha256(self.key.get_secret_value().encode()).hexdigest()


# The types a profile field may have (gateway/profiles.py checks values against them).
ProfileFieldType = Literal["string", "number", "boolean", "email", "timezone", "language"]
# The built-in profile fields (gateway/profiles.py BUILTIN_FIELDS): a project cannot redefine them.
BUILTIN_PROFILE_KEYS = ("name", "email", "timezone", "language")


class ProfileFieldConfig(_Strict):
    """A profile field of the project's own, beside the built-in name, email, timezone and language."""

    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    type: ProfileFieldType = "string"
    # Shown by GET /profiles/schema and given to the LLM extractor, which learns the field.
    description: str = Field(default="", max_length=500)

    @field_validator("key")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_PROFILE_KEYS:
            raise ValueError(f"'{value}' is a built-in profile field")
        return value


class UsageLimits(_Strict):
    """Usage limits (gateway/usage_limits.py); each is off unless set."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    memory_actions_per_month: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


class ProjectLimits(UsageLimits):
    # Per key, by key name (configured or made with `mnx-gateway keys create --name`).
    keys: dict[str, UsageLimits] = {}


class ProjectConfig(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = ""
    keys: list[ProjectKey] = Field(min_length=1)
    profile_fields: list[ProfileFieldConfig] = Field(default_factory=list, max_length=100)
    limits: ProjectLimits = ProjectLimits()

    @field_validator("id")
    @classmethod
    def _not_a_trial_project(cls, value: str) -> str:
        # Trial keys get projects named trial_<hash> (gateway/keys/trial.py): a configured
        # project by that name would share their data. (The stored keys' own partition,
        # "~gateway-keys", is already out of reach: the pattern above has no "~".)
        if value.startswith("trial_"):
            raise ValueError("project ids starting with 'trial_' are reserved for trial projects")
        return value

    @field_validator("profile_fields")
    @classmethod
    def _unique_profile_fields(cls, value: list[ProfileFieldConfig]) -> list[ProfileFieldConfig]:
        keys = [field.key for field in value]
        if len(keys) != len(set(keys)):
            raise ValueError("profile field keys must be unique")
        return value


class Timeouts(_Strict):
    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=600.0, gt=0)


class ProviderConfig(_Strict):
    """One upstream. ``api_base`` can point at Azure, OpenRouter, vLLM or a local fake."""

    api_base: str
    # Used when the request carries no key of its own for this provider.
    api_key: OptionalSecret = None
    timeout: Timeouts = Timeouts()
    # Request-body fields beyond the provider API's own that this provider's server takes
    # (vLLM's top_k, OpenRouter's provider...): accepted on a surface whose requests go to
    # it untranslated, and forwarded there only, never to LiteLLM (see proxy/body_fields.py).
    extra_body_fields: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] = Field(
        default_factory=list, max_length=100)

    @field_validator("api_base")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class ProvidersConfig(_Strict):
    openai: ProviderConfig = ProviderConfig(api_base="https://api.openai.com/v1")
    anthropic: ProviderConfig = ProviderConfig(api_base="https://api.anthropic.com")
    # LiteLLM appends /models/{model}:generateContent to this, so it carries the API version.
    gemini: ProviderConfig = ProviderConfig(api_base="https://generativelanguage.googleapis.com/v1beta")


class SummarizeNumbers(_Strict):
    """Numbers of a rolling summary (``mnx.summarize_config``); unset ones come from the preset."""

    # History above this many tokens has its older messages folded into the summary.
    start_at_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    # Older messages are folded in batches of about this many tokens.
    chunk_size: int | None = Field(default=None, ge=1, le=1_000_000)
    # The newest messages always replayed word for word.
    keep_recent_messages: int | None = Field(default=None, ge=0, le=10_000)
    # About how many tokens the summary may take.
    summary_target: int | None = Field(default=None, ge=1, le=100_000)


class MnxDefaults(_Strict):
    """Defaults for the ``mnx`` options a request leaves unset."""

    log: bool = True
    learn: bool | Literal["force"] = True
    recall: bool = False
    history: bool = True
    system_prompt: bool = True
    # mnx.cache: true keeps the prompt's prefix stable across a chat's turns for provider prompt
    # caches (docs/features.md, Prompt caching); false, the contract's order.
    cache: bool = False
    # mnx.summarize: false/"off", true (= "balanced"), "light", "balanced" or "aggressive"
    # (docs/summaries.md); summarize_config overrides the preset's numbers.
    summarize: bool | Literal["off", "light", "balanced", "aggressive"] = False
    summarize_config: SummarizeNumbers | None = None


class HistoryConfig(_Strict):
    # Prior turns prepended with history: true are cut to this many (estimated) tokens,
    # dropping the oldest first, so a long chat cannot overflow the model's context.
    token_budget: int = Field(default=8000, ge=0)
    # Upper bound on stored turns read per request, whatever their size.
    max_messages: int = Field(default=500, ge=1)
    # Cache mode (mnx.cache): the replayed window starts only at a multiple of this many messages
    # of the chat, so its prefix changes once per this many messages, not every turn (provider
    # prompt caches reuse an unchanged prefix). Keep it well below what the budget holds: a
    # window is up to this many minus one messages shorter than the budget allows.
    cut_chunk_messages: int = Field(default=16, ge=1)


class EdgeVectorsConfig(_Strict):
    # One directory holds the whole index; only one gateway process may open it.
    path: str = "./data/memories"
    # Threads Qdrant Edge searches a query's segments with. One: a gateway's index is a few
    # segments, and handing each query to a pool of one thread per CPU cost more than the
    # search (CPU per recall 498 -> 203 us at 300 memories, 552 -> 240 us at 10,000).
    search_threads: int = Field(default=1, ge=1, le=64)


class QdrantVectorsConfig(_Strict):
    """A Qdrant server or cluster, through qdrant-client."""

    # http(s)://host:6333 for a server. Alternatively ``location``: ":memory:" or a
    # directory, which runs qdrant-client's local mode (for tests; far too slow to serve).
    url: str | None = None
    location: str | None = None
    api_key: OptionalSecret = None
    collection: str = Field(default="mnx_memories", min_length=1)

    @model_validator(mode="after")
    def _one_target(self) -> QdrantVectorsConfig:
        if bool(self.url) == bool(self.location):
            raise ValueError("give exactly one of 'url' (a Qdrant server) or 'location' (local mode)")
        return self


class RedisVectorsConfig(_Strict):
    """Redis's own query engine (Redis 8, or Redis Stack's RediSearch): vectors, BM25 and tags."""

    # The query engine indexes database 0 only. It may be the Redis the store uses (storage.redis).
    url: str = "redis://127.0.0.1:6379/0"
    # Every key the index writes starts with this (points under <key_prefix>pt:).
    key_prefix: str = Field(default="mnx:vectors:", min_length=1)
    # The FT index name; fixed for the index's embedder dimensions and lexical kind.
    index: str = Field(default="mnx_memories", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    max_connections: int = Field(default=64, ge=1, le=10000)
    socket_timeout_seconds: float = Field(default=5.0, gt=0)


class VectorsConfig(_Strict):
    # edge | qdrant | redis, or an index another package registers (mnx_gateway.vector_indexes).
    backend: PluginName = "edge"
    edge: EdgeVectorsConfig = EdgeVectorsConfig()
    qdrant: QdrantVectorsConfig | None = None
    # Read by backend "redis" only (its defaults: a local Redis, database 0).
    redis: RedisVectorsConfig = RedisVectorsConfig()
    # Settings for an index from another package, handed to it as they are.
    options: dict[str, Any] = {}
    # A memory write notes a repair job before it touches the store; if the index write has
    # not completed (and removed the note) this many seconds later, the job worker rewrites
    # the memory's index point from the store.
    repair_after_seconds: float = Field(default=60.0, gt=0)
    # How a memory's BM25 vector is built (gateway.memory.lexical). "contextual": its text, its
    # neighbours' words (the subject's memories stored just before and after it) and adjacent
    # word pairs, which finds conversation turns by what surrounds them (bench/locomo).
    # "plain": Qdrant's BM25 of its own text alone: bulk inserts about 2.4x faster at a million
    # memories (bench/memory_search), no neighbour re-indexed on each write, and no match
    # through a neighbour's words, for stores of independent facts. Fixed for an index.
    lexical: Literal["contextual", "plain"] = "contextual"

    @model_validator(mode="after")
    def _backend_configured(self) -> VectorsConfig:
        if self.backend == "qdrant" and self.qdrant is None:
            raise ValueError("backend 'qdrant' needs a 'qdrant' section with a url or location")
        return self


class EmbedderConfig(_Strict):
    """The dense embedding model. BM25 (lexical) search is always on and needs none."""

    # "none": BM25 only. "litellm": a provider's embedding model (e.g. text-embedding-3-small).
    # "sentence-transformers": a local model (pip install 'mnx-gateway[local-embeddings]').
    # "fastembed": an ONNX model run by fastembed (pip install 'mnx-gateway[fastembed]'),
    # downloaded once into cache_dir, or read from model_path with no download.
    # Anything else names a plugin registered under the "mnx_gateway.embedders" entry point.
    provider: str = "none"
    model: str | None = None
    # The vector size the model returns; the index is created with it and checked on start.
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    api_key: OptionalSecret = None
    api_base: str | None = None
    # fastembed only: where downloaded models are kept, and a local model directory to load instead.
    cache_dir: str | None = None
    model_path: str | None = None

    @model_validator(mode="after")
    def _model_given(self) -> EmbedderConfig:
        if self.provider != "none" and not self.model:
            raise ValueError(f"embedder '{self.provider}' needs a 'model'")
        return self


class VersioningConfig(_Strict):
    """When a new memory skips, supersedes or sits beside the memories a subject has.

    Similarities are 0-1. The defaults are justified by tests/data/versioning_pairs.json
    (see tests/test_versioning_pairs.py for their precision and recall).
    """

    duplicate_threshold: float = Field(default=0.85, gt=0, le=1)
    supersede_threshold: float = Field(default=0.65, gt=0, le=1)
    # How many of the subject's closest active memories are compared with a new one.
    candidates: int = Field(default=8, ge=1, le=100)
    # Who decides for a learned memory when the extractor can judge (the litellm one can): "llm":
    # the extraction model itself, shown the subject's memories related to the turn in the same
    # call (no extra call), with these rules as the fallback and the safety net
    # (gateway/memory/judgement.py); "rules": these rules alone. The heuristic extractor and the
    # REST API's POST /memories always use the rules.
    judge: Literal["llm", "rules"] = "llm"
    # At most this many related memories are shown to the model, and at most judge_tokens of
    # their text (estimated at four characters a token); a memory that does not fit is left out.
    judge_memories: int = Field(default=10, ge=1, le=50)
    judge_tokens: int = Field(default=800, ge=50, le=20_000)
    # Weigh the offline paraphrase model (gateway/memory/paraphrase.py: a static embedder shipped
    # in the package, no download) as one more signal: the same meaning in other words is a
    # duplicate, a state said to have ended or been replaced on a topic of much the same meaning
    # an update; never on its own (the holder, numbers, names and polarity must agree too).
    paraphrase: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> VersioningConfig:
        if self.supersede_threshold > self.duplicate_threshold:
            raise ValueError("supersede_threshold must not exceed duplicate_threshold")
        return self


class RecallConfig(_Strict):
    """How ``mnx.recall`` picks the memories injected into a request."""

    limit: int = Field(default=8, ge=1, le=100)
    # Memories whose relevance (0-1: the share of the message's key terms they contain, or
    # cosine similarity with a dense model) is below this are not injected. Questions carry
    # several terms and a memory answering one matches only some of them, hence low.
    min_score: float = Field(default=0.2, ge=0, le=1)
    # The last few user/assistant messages are added to the query, most weight on the last.
    context_messages: int = Field(default=2, ge=0, le=10)
    # Recency decay: a memory's weight halves after this many days without being recalled.
    half_life_days: float = Field(default=180, gt=0)
    temporal_half_life_days: float = Field(default=14, gt=0)
    # The subject's current claim truths injected beside the memories, the latest to become
    # true first (those whose memory was recalled are not repeated); 0: none.
    truths: int = Field(default=20, ge=0, le=200)
    # Recall events and counts are written in one batch this long after the first answer that
    # has some (gateway/memory/recall_log.py). Longer: fewer, larger writes (the same memory
    # recalled by several turns is one tally row); what a SIGKILL or power loss can lose is the
    # recalls of the turns answered in this window.
    events_flush_ms: float = Field(default=5, ge=0, le=1000)


class MemoryConfig(_Strict):
    vectors: VectorsConfig = VectorsConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    versioning: VersioningConfig = VersioningConfig()
    recall: RecallConfig = RecallConfig()


class ExtractorConfig(_Strict):
    """What turns a conversation turn into memories (``mnx.learn``)."""

    # "heuristic": first-person patterns, no model (the offline default). "litellm": an LLM
    # with a JSON-schema answer. Anything else names a plugin ("mnx_gateway.extractors").
    provider: str = "heuristic"
    model: str | None = None
    api_key: OptionalSecret = None
    api_base: str | None = None

    @model_validator(mode="after")
    def _model_given(self) -> ExtractorConfig:
        if self.provider == "litellm" and not self.model:
            raise ValueError("the litellm extractor needs a 'model'")
        return self


class PromptsConfig(_Strict):
    # Render {{var}} tokens in system prompts whose template is enabled, from integration values
    # (the contract's MNX_PROMPT_TEMPLATE_RENDER_ENABLED; gateway/prompt_templates.py).
    templates_enabled: bool = False


class SummarizerConfig(_Strict):
    """What writes a chat's rolling summary (``mnx.summarize``, docs/summaries.md)."""

    # "extractive": keeps the sentences that carry names, numbers, dates and decisions, no model
    # (the offline default, and honest about being extractive). "litellm": an LLM. Anything else
    # names a plugin ("mnx_gateway.summarizers").
    provider: str = "extractive"
    model: str | None = None
    api_key: OptionalSecret = None
    api_base: str | None = None
    # Longest wait for one summary from the model.
    timeout_seconds: float = Field(default=60, gt=0, le=3600)

    @model_validator(mode="after")
    def _model_given(self) -> SummarizerConfig:
        if self.provider == "litellm" and not self.model:
            raise ValueError("the litellm summarizer needs a 'model'")
        return self


class SummarizationConfig(_Strict):
    summarizer: SummarizerConfig = SummarizerConfig()
    # A request's chunk_size below this is raised to it: each chunk is one summarizer call, paid
    # by the operator's key on retries, so a tiny chunk must not make every message a call.
    min_chunk_tokens: int = Field(default=256, ge=1, le=1_000_000)
    # A request's start_at_tokens above this is lowered to it: summarization replays history up
    # to start_at_tokens word for word, which must not exceed what the operator allows.
    max_start_at_tokens: int = Field(default=200_000, ge=1, le=10_000_000)


class LearningConfig(_Strict):
    extractor: ExtractorConfig = ExtractorConfig()
    # A claimed job's lease, renewed every third of it while the job runs (gateway/jobs/worker.py):
    # a job whose worker died or stalled this long runs again.
    lease_seconds: float = Field(default=120, gt=0)
    # Failed jobs are retried after retry_base_seconds, doubling each time, at most retry_max_seconds.
    retry_base_seconds: float = Field(default=2, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    # How often the worker looks for jobs it was not woken for (retries, other gateways' jobs).
    poll_seconds: float = Field(default=1, gt=0)
    batch: int = Field(default=16, ge=1, le=1000)


class EventsConfig(_Strict):
    """The memory event stream, ``GET /events/memories`` (gateway/memory/events.py)."""

    # Seconds between heartbeat frames on an open stream (the contract's 30).
    # 25, not the contract's 30: the mnexium SDK reads with a 30 s timeout, and a beat due at
    # exactly 30 s would race it.
    heartbeat_seconds: float = Field(default=25, gt=0, le=3600)
    # Events held for one subscriber that has not read them yet; past it the oldest are
    # dropped and the subscriber is told how many (a ``dropped`` event).
    queue_size: int = Field(default=1000, ge=1, le=100_000)
    # The latest events kept per project for a client that reconnects with Last-Event-ID.
    replay_size: int = Field(default=1000, ge=0, le=100_000)
    # Largest JSON data of one event; a larger one goes out shortened (its lists and maps left
    # out, its text cut) and marked "truncated", so the queues and replay buffers above hold
    # a bounded number of bytes.
    max_event_bytes: int = Field(default=16_384, ge=1024, le=4 * 1024 * 1024)
    # Event streams one project may have open on one gateway process; past it: 429.
    max_subscribers_per_project: int = Field(default=100, ge=1, le=100_000)


class RecordsRecallConfig(_Strict):
    """What ``mnx.records.recall`` injects into a turn."""

    # The most relevant records injected, over every recalled type together.
    limit: int = Field(default=5, ge=1, le=50)
    # Records whose relevance (the share of the message's words they hold, or cosine with a
    # dense model) is below this are left out.
    min_score: float = Field(default=0.2, ge=0, le=1)
    # The records' JSON in the system message stops before this many characters.
    max_chars: int = Field(default=4000, ge=200, le=100_000)


class RecordsConfig(_Strict):
    """Schema-backed records (contract §10)."""

    # A query whose filters no index narrows reads at most this many records of the type
    # before answering 400 query_too_broad (an indexed filter or order_by avoids the read).
    max_examined: int = Field(default=50_000, ge=100, le=10_000_000)
    recall: RecordsRecallConfig = RecordsRecallConfig()


_ALLOWED_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class IntegrationsConfig(_Strict):
    """Where integrations may call out to, and what they may take back (docs/integrations.md)."""

    # Hostnames pull integrations may call: exact names or "*.example.com" (its subdomains).
    # Empty: any public host.
    allowed_hosts: list[str] = []
    # Loopback, private, link-local, CGNAT, multicast and unspecified addresses are refused
    # unless this is true (an endpoint on the gateway's own network, or a test's fake).
    allow_private_networks: bool = False
    # An answer larger than this is dropped (result reason "response_too_large").
    max_response_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # The longest any integration's call may take, whatever its own timeout_ms says.
    max_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    # How far a webhook's x-mnx-webhook-timestamp may be from the gateway's clock.
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86_400)

    @field_validator("allowed_hosts")
    @classmethod
    def _hostnames(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _ALLOWED_HOST.match(host):
                raise ValueError(f"{host!r} is not a lowercase hostname or *.domain pattern")
        return hosts


class TrialConfig(_Strict):
    """Trial keys for key-less proxy requests (contract §14, gateway/keys/trial.py)."""

    # Off: a proxy request without a project key is a 401, as every other request.
    enabled: bool = False
    # Sent with a newly minted trial key (X-Mnx-Claim-Url, mnx.claim_url).
    claim_url: str = "https://mnexium.com/claim"
    # What a trial key may do in its own trial project: by default a chat turn with its memory.
    scopes: list[str] = Field(default_factory=lambda: ["chat:write", "responses:write", "history:read",
                                                       "history:write", "memories:search", "memories:write",
                                                       "state:read", "profiles:read"], min_length=1)


class AuditConfig(_Strict):
    """The audit log of proxied turns, ``GET /audit/requests`` (gateway/audit_log.py)."""

    # Off by default: when on, whole prompts and answers are kept for retention_days.
    enabled: bool = False
    # Records older than this vanish (a TTL on each, on every backend).
    retention_days: float = Field(default=30, gt=0, le=3650)
    # A request or answer body whose JSON is larger is kept as its first this many bytes, marked truncated.
    max_payload_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    # The surfaces whose turns are recorded.
    surfaces: tuple[Literal["chat", "responses", "messages", "gemini"], ...] = (
        "chat", "responses", "messages", "gemini")


class DashboardConfig(_Strict):
    """The browser dashboard at ``path`` (gateway/dashboard/): a page that calls the REST API with the
    project key its user types, so it shows and changes only what that key's scopes allow."""

    enabled: bool = True
    # Where the page is served; its script and stylesheet are served under it.
    path: str = Field(default="/dashboard", pattern=r"^(/[A-Za-z0-9_.\-]+)+$")

    @model_validator(mode="after")
    def _not_an_api_path(self) -> DashboardConfig:
        # The page must not shadow a route of the API or the provider surfaces.
        if self.path.split("/")[1] in ("api", "v1", "v1beta", "health", "metrics"):
            raise ValueError(f"dashboard.path {self.path!r} would shadow the gateway's own routes")
        return self


class AuthConfig(_Strict):
    trial: TrialConfig = TrialConfig()


class TracingConfig(_Strict):
    """OpenTelemetry spans for proxied turns and learning jobs, sent over OTLP/HTTP
    (gateway/tracing.py, gateway/trace_spans.py, gateway/otlp_export.py)."""

    # Off by default: off, no tracing code is imported or run.
    enabled: bool = False
    # The collector's OTLP/HTTP traces URL. Headers (a vendor's API key) come from the standard
    # OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS environment variables.
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = Field(default="mnx-gateway", min_length=1)
    # The share of turns traced (by trace id; a caller's sampled traceparent is followed).
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Debug only: context text (prompts, memories, records, summaries) in span attributes.
    # Provider keys never are, even then.
    include_text: bool = False


class GatewayConfig(_Strict):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    projects: list[ProjectConfig] = Field(min_length=1)
    providers: ProvidersConfig = ProvidersConfig()
    defaults: MnxDefaults = MnxDefaults()
    history: HistoryConfig = HistoryConfig()
    memory: MemoryConfig = MemoryConfig()
    learning: LearningConfig = LearningConfig()
    events: EventsConfig = EventsConfig()
    records: RecordsConfig = RecordsConfig()
    summarization: SummarizationConfig = SummarizationConfig()
    prompts: PromptsConfig = PromptsConfig()
    integrations: IntegrationsConfig = IntegrationsConfig()
    auth: AuthConfig = AuthConfig()
    audit: AuditConfig = AuditConfig()
    tracing: TracingConfig = TracingConfig()
    dashboard: DashboardConfig = DashboardConfig()

    @model_validator(mode="after")
    def _unique_projects_and_keys(self) -> GatewayConfig:
        ids = [p.id for p in self.projects]
        if len(ids) != len(set(ids)):
            raise ValueError("project ids must be unique")
        digests = [k.digest() for p in self.projects for k in p.keys]
        if len(digests) != len(set(digests)):
            raise ValueError("the same API key is configured twice")
        return self


def interpolate_env(value: Any, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a fallback)")

    return _ENV_PATTERN.sub(substitute, value)


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "gateway.yaml") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return GatewayConfig.model_validate(interpolate_env(data))
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def find_config(explicit: str | None = None) -> Path:
    """The config file to load (see ``BUILT_IN_CONFIG``); an explicit path is returned
    even if it does not exist, so that loading it says so."""
    chosen = explicit or os.environ.get(CONFIG_ENV_VAR)
    if chosen:
        return Path(chosen)
    if Path(CONFIG_FILE_NAME).exists():
        return Path(CONFIG_FILE_NAME)
    return BUILT_IN_CONFIG


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read {file}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from None
    return parse_config(data, str(file))
