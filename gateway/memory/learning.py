"""Learning from a turn (``mnx.learn``): a durable job per answered turn, run by the worker.

The proxy enqueues the job before the answer's last byte leaves (``learn_payload``
says what goes in it: the turn's user messages and the answer, never a key). The
worker then resolves the memory policy, asks the extractor for candidates, keeps
those the policy allows, and stores them through memory versioning, so a new
favourite supersedes the old one. The profile fields a stored memory states ("my
name is Alice") are written beside it (gateway.profiles). Memory ids derive from the
job id, so a job run twice (after a crash) stores nothing twice. A job completes only once
Redis holds the memory events of its writes; a re-run announces those its killed run may
not have sent (gateway/memory/reannounce.py).

A turn with ``mnx.records.learn`` on carries a ``records`` part (``{"learn", "tables"}``),
also when memory learning is off: after the memories, the job learns records
(gateway/records/learning.py), written inside the same erasure fence.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

from gateway import metrics
from gateway.erasure import SubjectErased, SubjectErasure
from gateway.errors import Conflict, GatewayError, NotFound, UpstreamError
from gateway.history import content_text
from gateway.jobs.queue import Job, JobError
from gateway.memory.changes import MemoryFields, NewMemory
from gateway.memory.claims import Claim
from gateway.memory.extraction import (Exchange, ExtractedMemory, ExtractionError, Extractor, UnstorableMemory,
                                       judges_versioning, require_storable)
from gateway.memory.judgement import NOTHING_SHOWN, Shown, shown_memories, verdict_for
from gateway.memory.memories import Memories
from gateway.memory.reannounce import announce_again
from gateway.memory_policies import MemoryPolicies, combine
from gateway.options import RecordsOption
from gateway.profiles import BUILTIN_FIELDS, EXTRACTED, LEARNED, ProfileField, Profiles
from gateway.records.learning import ExtractedRecord, RecordsLearner, RecordsTurn, records_payload
from gateway.redaction import redact

log = logging.getLogger("gateway.learning")

LEARN_JOB = "learn"
# The policies a turn read ride in its job while their texts are this short (characters): longer
# ones would make every job row (written and deleted each turn) that much bigger, and the job
# reads those itself.
MAX_CARRIED_POLICY_TEXT = 4_000
# What learn: "force" stores when nothing else qualifies: the user's own words, as a note.
FORCED_KIND = "note"


def learn_payload(*, subject_id: str, chat_id: str, learn: Any, memory_policy: bool | str,
                  new_messages: Sequence[dict[str, Any]], answer: dict[str, Any], model: str,
                  request_type: str, message_ids: Sequence[str] = (),
                  records: RecordsOption | None = None,
                  policy: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The job for one answered turn, or None when there is nothing to learn from. ``records``:
    the turn's ``mnx.records`` when the job is to learn records (None when it is not, or when
    they were learned already: ``sync``). ``policy``: the memory policies that applied to the
    turn, combined (``memory_policies.combine``), when it read them: the job follows them (unless
    their text is long: MAX_CARRIED_POLICY_TEXT); without them it resolves them when it runs."""
    records_part = records_payload(records)
    if learn is False and records_part is None:
        return None
    user_messages = [content_text(m.get("content")) for m in new_messages if m.get("role") == "user"]
    user_messages = [text for text in user_messages if text.strip()]
    if not user_messages:
        return None
    payload = {"subject_id": subject_id, "chat_id": chat_id, "learn": learn, "memory_policy": memory_policy,
               "user_messages": user_messages, "assistant": content_text(answer.get("content")), "model": model,
               "request_type": request_type, "message_ids": list(message_ids)}
    if records_part is not None:
        payload["records"] = records_part
    if policy is not None and memory_policy is True and len(policy["policy_text"]) <= MAX_CARRIED_POLICY_TEXT:
        payload["policy"] = dict(policy)
    return payload


def apply_policy(candidates: Sequence[ExtractedMemory], config: dict[str, Any]) -> list[ExtractedMemory]:
    """The candidates a policy config lets through, most important first, capped per turn."""
    include = config.get("include_kinds")
    exclude = set(config.get("exclude_kinds") or ())
    kept = [m for m in candidates
            if (not include or m.kind in include) and m.kind not in exclude
            and m.confidence >= config.get("confidence_min", 0) and m.importance >= config.get("importance_min", 0)]
    kept.sort(key=lambda m: m.importance, reverse=True)
    cap = config.get("max_memories_per_turn")
    return kept[:cap] if cap else kept


def memory_id_for(job_id: str, position: int) -> str:
    return "mem_" + hashlib.sha256(f"{job_id}:{position}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class CallerKeys:
    """The caller's own provider keys for the paid models a job may call."""

    extractor: str | None = None
    embedder: str | None = None


def _key_or_none(plugin: Any, headers: Mapping[str, str]) -> str | None:
    try:
        return plugin.key_for(headers) if plugin is not None else None
    except GatewayError:
        return None  # The caller brought no key for it: the plugin falls back to a configured one.


@dataclass(frozen=True)
class _MemoryPlan:
    """The memories a job stores: the kept candidates, and how."""

    kept: Sequence[ExtractedMemory]
    forced: bool
    origin: dict[str, Any]
    policy_config: dict[str, Any]
    # The subject's memories the extractor was shown to judge versioning by.
    shown: Shown = NOTHING_SHOWN


class JobFailed(JobError):
    """A learn job failed; the message, kept as the job's last error, holds no secret."""


def learned_visibility(proposed: str, policy_config: dict[str, Any]) -> str:
    """A learned memory is private unless the memory policy lets the extractor's choice
    through: one user's words reach other subjects only when the application said so."""
    allowed = policy_config.get("learned_visibility") or ()
    return proposed if proposed in allowed else "private"


class Learner:
    def __init__(self, memories: Memories, policies: MemoryPolicies, extractor: Extractor,
                 erasure: SubjectErasure, profiles: Profiles | None = None,
                 records: RecordsLearner | None = None) -> None:
        self._memories = memories
        self._policies = policies
        self.extractor = extractor
        self._erasure = erasure
        # Where the profile fields a stored memory states are written (None: nowhere).
        self._profiles = profiles
        # What learns a turn's records (mnx.records.learn; None: no records are learned).
        self.records = records
        # Callers' own provider keys for a job's first run, in memory only: never persisted,
        # and taken out when that run starts, so retries and re-runs after a restart use the
        # configured keys.
        self._keys: dict[str, CallerKeys] = {}

    def keys_for(self, caller_keys: Mapping[str, str]) -> CallerKeys:
        """The caller's own keys for the extraction and embedding models, from its request headers."""
        return CallerKeys(_key_or_none(self.extractor, caller_keys), _key_or_none(self._memories.embedder, caller_keys))

    def remember_keys(self, job_id: str, caller_keys: Mapping[str, str]) -> None:
        keys = self.keys_for(caller_keys)
        if keys.extractor or keys.embedder:
            self._keys[job_id] = keys

    def forget_keys(self, job_ids: Sequence[str]) -> None:
        """Drop the keys held for jobs that will never run (their subject was erased)."""
        for job_id in job_ids:
            self._keys.pop(job_id, None)

    async def _policy(self, project_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        choice = payload.get("memory_policy", True)
        if choice is False:
            return combine([])
        if choice is True and payload.get("policy") is not None:
            return payload["policy"]  # the policies that applied when the turn was answered
        if isinstance(choice, str):
            try:
                policy = await self._policies.get(project_id, choice)
            except NotFound:  # Deleted since the request named it: learn without a policy.
                return combine([])
            return combine([policy] if policy["is_active"] else [])
        return combine(await self._policies.resolve(project_id, payload["subject_id"], payload["chat_id"],
                                                    default_only=True))

    async def handle(self, job: Job) -> None:
        # The caller's keys serve the first run only, whatever its outcome.
        keys = self._keys.pop(job.id, CallerKeys())
        try:
            # The job is done (not run again) only once Redis holds the events of its writes.
            async with self._memories.events.acknowledged():
                await self._learn(job, keys)
        except SubjectErased:
            log.info("job %s: its subject was erased after the turn; nothing stored", job.id)
        except Exception as error:
            # Kept as the job's last_error (readable through GET /jobs) and logged: a provider
            # that echoes the key it was sent must not put it there.
            raise JobFailed(redact(f"{type(error).__name__}: {error}", (keys.extractor, keys.embedder))) from None

    async def _learn(self, job: Job, keys: CallerKeys) -> None:
        payload = job.payload
        memories = await self._memory_candidates(job, keys) if payload["learn"] is not False else None
        records_turn = self._records_turn(payload)
        proposals: list[ExtractedRecord] = []
        if records_turn is not None and self.records is not None:
            proposals = await self.records.extract(job.project_id, records_turn, api_key=keys.extractor,
                                                   embedder_key=keys.embedder, job=f"job {job.id}")
        if memories is None and not proposals:
            return
        # Written only if the subject was not erased since the turn (the job's creation).
        async with self._erasure.writing(job.project_id, payload["subject_id"], since=job.created_at):
            if memories is not None:
                if job.attempts > 1:
                    # An earlier run may have died before the events of its writes left it:
                    # those first, then this run's own (it skips what is stored already).
                    await announce_again(self._memories, self._profiles, job.project_id, payload["subject_id"],
                                         [memory_id_for(job.id, position) for position in range(len(memories.kept))],
                                         since=job.created_at)
                await self._store(job, payload, memories.kept, memories.forced, memories.origin,
                                  memories.policy_config, keys, shown=memories.shown)
            if proposals and records_turn is not None and self.records is not None:
                await self.records.write(job.project_id, records_turn, proposals, run_id=job.id, job_id=job.id,
                                         embedder_key=keys.embedder)

    @staticmethod
    def _records_turn(payload: dict[str, Any]) -> RecordsTurn | None:
        """What the job's ``records`` part asks (None: no records learning)."""
        part = payload.get("records")
        if not part:
            return None
        return RecordsTurn(payload["subject_id"], payload["chat_id"], payload["user_messages"],
                           payload.get("assistant", ""), part["learn"], part.get("tables"))

    async def _memory_candidates(self, job: Job, keys: CallerKeys) -> _MemoryPlan | None:
        """The memories to store from the job's turn, or None when there are none."""
        payload = job.payload
        policy = await self._policy(job.project_id, payload)
        force = payload["learn"] == "force"
        shown = await self._related(job.project_id, payload["subject_id"], payload["user_messages"])
        exchange = Exchange(payload["user_messages"], payload.get("assistant", ""), policy["policy_text"], force,
                            profile_fields=self._profile_schema(job.project_id), related=shown.memories)
        try:
            candidates = await self.extractor.extract(exchange, api_key=keys.extractor)
        except ExtractionError as error:
            # A malformed answer is the model's mistake, not a reason to retry forever.
            log.warning("job %s: %s; nothing stored", job.id, error)
            candidates = []
        kept = apply_policy(candidates, policy["config"])
        forced = force and not kept
        if forced:
            kept = [ExtractedMemory(payload["user_messages"][-1][:10_000], FORCED_KIND, 50, 1.0)]
        if not kept:
            return None
        for memory in kept:
            require_storable(memory)
        origin = {"chat_id": payload["chat_id"], "message_ids": payload.get("message_ids", []), "job_id": job.id,
                  "request_type": payload.get("request_type"), "policy_ids": policy["policy_ids"]}
        return _MemoryPlan(kept, forced, origin, policy["config"], shown)

    async def _related(self, project_id: str, subject_id: str, user_messages: Sequence[str]) -> Shown:
        """The subject's memories the turn may be about, shown to an extractor that judges
        versioning (gateway/memory/judgement.py); none when the rules alone decide."""
        settings = self._memories.versioning
        if settings.judge != "llm" or not judges_versioning(self.extractor):
            return NOTHING_SHOWN
        found = await self._memories.related(project_id, subject_id, "\n".join(user_messages),
                                             limit=settings.judge_memories)
        return shown_memories(found, limit=settings.judge_memories, token_budget=settings.judge_tokens)

    async def _store(self, job: Job, payload: dict[str, Any], kept: Sequence[ExtractedMemory], forced: bool,
                     origin: dict[str, Any], policy_config: dict[str, Any], keys: CallerKeys, *,
                     shown: Shown = NOTHING_SHOWN) -> None:
        planned = [(memory_id_for(job.id, position), memory) for position, memory in enumerate(kept)]
        # Only a run after the first (a claim counts one attempt) can find its memories stored already.
        stored = {memory_id for memory_id, _ in planned
                  if job.attempts > 1 and await self._memories.exists(job.project_id, memory_id)}
        # The new memories' texts in one embedder call, before any is stored: each is then
        # stored in turn, so versioning still sees the ones stored just before it.
        fresh = [memory for memory_id, memory in planned if memory_id not in stored]
        vectors = iter(await self._memories.dense_vectors([memory.text.strip() for memory in fresh],
                                                          api_key=keys.embedder))
        for memory_id, memory in planned:
            if memory_id in stored:
                # Stored by an earlier run of this job, which may have died before indexing it
                # (or before writing its profile fields: writing them again changes nothing).
                await self._memories.reindex(job.project_id, memory_id, api_key=keys.embedder)
                await self._learn_profile(job.project_id, payload["subject_id"], memory, memory_id)
                continue
            await self._store_one(job.project_id, payload["subject_id"], memory, memory_id, forced=forced,
                                  origin=origin, policy_config=policy_config, keys=keys, dense=next(vectors),
                                  shown=shown)

    async def _store_one(self, project_id: str, subject_id: str, memory: ExtractedMemory, memory_id: str | None, *,
                         forced: bool, origin: dict[str, Any], policy_config: dict[str, Any],
                         keys: CallerKeys, profile_source: str = LEARNED,
                         dense: list[float] | None = None, shown: Shown = NOTHING_SHOWN) -> dict[str, Any]:
        """One kept candidate stored through versioning (a duplicate is skipped and reinforces the
        original), then the profile fields it states (their ``source_type`` ``profile_source``);
        returns ``Memories.create``'s answer. ``memory_id``: the id ``_store`` named it after its
        job, known to be unused (None: one is picked). ``dense``: its text's vector, embedded with
        the others of its turn (``Memories.dense_vectors``). ``shown``: the memories the extractor
        judged it against (its Judgement is weighed with the rules')."""
        fields = MemoryFields(kind=memory.kind, importance=memory.importance, confidence=memory.confidence,
                              tags=list(memory.tags), is_temporal=memory.is_temporal,
                              visibility=learned_visibility(memory.visibility, policy_config))
        # A forced note is stored even if it repeats something: that is what force asks for.
        new = NewMemory(subject_id, memory.text.strip(), fields, id=memory_id, source_type="inferred",
                        no_supersede=forced)
        # A forced note is never judged: it replaces nothing.
        verdict = verdict_for(memory.judgement, shown) if shown.memories and not forced else None
        result, _ = await self._memories.create(project_id, new, origin=origin, api_key=keys.embedder,
                                                claims=[Claim(c.predicate, c.value) for c in memory.claims] or None,
                                                dense=dense, verdict=verdict, id_unused=memory_id is not None)
        metrics.memory_learned(result)
        # A memory skipped as a duplicate still states its fields: they name the original.
        await self._learn_profile(project_id, subject_id, memory, result["id"] or result.get("duplicate_of"),
                                  source_type=profile_source)
        return result

    # --- POST /memories/extract ----------------------------------------------------------

    async def extract_text(self, project_id: str, subject_id: str, text: str, *, context: Sequence[str],
                           force: bool, memory_policy: bool | str, store: bool,
                           caller_keys: Mapping[str, str]) -> dict[str, Any]:
        """What the extractor finds in ``text`` (the subject's words), kept by the memory policy
        as a turn's candidates are; stored as a turn's learning stores them when ``store``.

        The answer is the contract's (§6): ``memories`` are the candidates, or with ``store``
        what became of each (``memory_id`` None for a duplicate of ``duplicate_of``)."""
        started = time.time()  # an erasure after this point voids what the request would store
        keys = CallerKeys(_key_or_none(self.extractor, caller_keys), _key_or_none(self._memories.embedder, caller_keys))
        policy = await self._policy(project_id, {"memory_policy": memory_policy, "subject_id": subject_id,
                                                 "chat_id": None})
        # Judged versioning only matters when the memories are stored.
        shown = await self._related(project_id, subject_id, [text]) if store else NOTHING_SHOWN
        exchange = Exchange([text], "", policy["policy_text"], force, profile_fields=self._profile_schema(project_id),
                            context=tuple(context), related=shown.memories)
        try:
            candidates = await self.extractor.extract(exchange, api_key=keys.extractor)
        except ExtractionError as error:
            raise UpstreamError(f"the extractor's answer could not be read: {error}", code="extraction_failed",
                                status=502) from None
        except GatewayError:
            raise
        except Exception as error:
            # The model behind a plugin failed (unreachable, refused the operator's settings...):
            # the gateway's upstream, not the caller's request. Only the error's type is told, as
            # a provider may echo the key it was sent.
            raise UpstreamError(f"the extraction model failed: {type(error).__name__}", code="extraction_failed",
                                status=502) from None
        kept = apply_policy(candidates, policy["config"])
        forced = force and not kept
        if forced:
            kept = [ExtractedMemory(text[:10_000], FORCED_KIND, 50, 1.0)]
        try:
            for memory in kept:
                require_storable(memory)
        except UnstorableMemory as error:  # a plugin's mistake, not the caller's
            raise UpstreamError(str(error), code="extraction_failed", status=502) from None
        mode = "force" if force else "auto"
        if not store:
            return {"ok": True, "learned": False, "mode": mode, "extracted_count": len(kept),
                    "memories": [_candidate_to_api(memory) for memory in kept]}
        origin = {"source": "memories_extract", "policy_ids": policy["policy_ids"]}
        learned = []
        # The extractor may have taken seconds: a subject erased meanwhile stays erased (409).
        try:
            vectors = await self._memories.dense_vectors([memory.text.strip() for memory in kept],
                                                         api_key=keys.embedder)
            async with self._erasure.writing(project_id, subject_id, since=started):
                for memory, dense in zip(kept, vectors):
                    result = await self._store_one(project_id, subject_id, memory, None, forced=forced,
                                                   origin=origin, policy_config=policy["config"], keys=keys,
                                                   profile_source=EXTRACTED, dense=dense, shown=shown)
                    memory_id = result["id"]
                    claim_ids = ([row["claim_id"] for row in await self._memories.claims(project_id, memory_id)]
                                 if memory_id else [])
                    learned.append({"memory_id": memory_id, "text": result["text"], "kind": result["kind"],
                                    "claim_ids": claim_ids, "created": result["created"],
                                    **({"skipped": True, "reason": result["reason"],
                                        "duplicate_of": result["duplicate_of"]} if not result["created"] else {})})
        except SubjectErased:
            raise Conflict("the subject was erased while its text was being extracted; nothing was stored",
                           code="subject_erased") from None
        return {"ok": True, "learned": True, "mode": mode, "extracted_count": len(kept),
                "learned_memory_count": sum(1 for m in learned if m["created"]),
                "learned_claim_count": sum(len(m["claim_ids"]) for m in learned), "memories": learned}

    def _profile_schema(self, project_id: str) -> Sequence[ProfileField]:
        return self._profiles.schema(project_id) if self._profiles is not None else BUILTIN_FIELDS

    async def _learn_profile(self, project_id: str, subject_id: str, memory: ExtractedMemory,
                             memory_id: str | None, *, source_type: str = LEARNED) -> None:
        """The profile fields ``memory`` states, with its confidence (gateway.profiles decides
        whether each replaces the current value: never a manual one)."""
        if self._profiles is not None and memory.profile_fields:
            await self._profiles.learn(project_id, subject_id, memory.profile_fields, confidence=memory.confidence,
                                       memory_id=memory_id, source_type=source_type)


def _candidate_to_api(memory: ExtractedMemory) -> dict[str, Any]:
    return {"text": memory.text, "kind": memory.kind, "importance": memory.importance,
            "confidence": memory.confidence, "tags": list(memory.tags), "visibility": memory.visibility,
            "is_temporal": memory.is_temporal,
            "claims": [{"predicate": c.predicate, "value": c.value} for c in memory.claims],
            "profile_fields": dict(memory.profile_fields)}
