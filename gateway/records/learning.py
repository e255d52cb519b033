"""Learning records from a chat turn (``mnx.records.learn``, contract §10.8).

A turn that asks for it (``learn: "auto" | "force"``) hands its user messages and answer to
the records extractor, with the candidate types (``tables``, else every type of the project)
and, for each type, a few of the subject's own records that the user's words match: the
extractor may then update one of those rather than add a duplicate. What it proposes
(``ExtractedRecord``) is written through ``Records.insert`` / ``Records.update``, the path
the API takes (schema validation, references, index, audit trail, events), as the subject's
private records, with provenance ``{"source": "chat", "chat_id", "job_id"}``.

Two steps, so that a slow model never holds the erasure fence: ``RecordsLearner.extract``
reads (schemas, the subject's records, the model) and writes nothing; ``RecordsLearner.write``
writes, and its callers run it inside ``SubjectErasure.writing``. It runs

* in the learn job (gateway/memory/learning.py), after the turn's memories: a proposed
  record that fails validation is skipped and logged, the others are written;
* inline, before the answer, for ``sync: true`` on a non-streamed turn
  (gateway/proxy/surface.py): nothing is written unless every proposal validates, and a
  failure is the caller's to know (422 ``records_sync_write_failed``). The job of that turn
  then carries no records part: they are learned once.

Every proposal is checked before the first write, as the write itself will check it
(``Records.check_record``: the schema, and that each ``ref`` names a live record of its
type), so that a sync turn does not store some records and then fail on another. A reference
must name a record that exists before the turn: one proposal cannot point at a record another
proposal of the same turn creates (the extractor never knows the id that record will get).
What is left is a race with other writers: a referenced record deleted (or an updated record
changed) between the check and the write fails that write; the records a sync turn wrote
before it stay, and its 422 says how many.

A job may run more than once (a crash, a lost lease). A created record's id derives from the
job id, its position in the extractor's answer and its type (``record_id_for``), and one that
exists is not written again. A learned update's trail entry names the job and the position
(``by.job_id`` is ``"<job id>#<position>"``, ``update_mark``): a re-run skips an update whose
mark is in the record's trail, while two proposals of one answer that change the same record
are both applied. Each check-then-write holds a lock on the record id (``locks``), so that two
runs of a job at once (the second starting when the first's lease ran out) do not both find
the record missing and the second overwrite the first's record and trail. The default locks
are this process's; gateways that share a store need shared ones (RedisSubjectLocks), or a
re-run on another gateway can still overwrite in the few milliseconds between its check and
its write. A proposal is recognised by its job, position and type (a create) or record (an
update), not by its data: a re-run whose extractor answers differently keeps what the first
run wrote at a position and may write what it did not.
Learning never deletes: a null the extractor proposes for a field is ignored, not a removal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.memory.extraction import ExtractionError
from gateway.options import MAX_RECORD_TABLES, RecordsOption
from gateway.records.records import NewRecord, Provenance, RecordNotFound, Records
from gateway.records.schema import RecordSchema, json_schema, validate_data
from gateway.subject_locks import SubjectLocks

log = logging.getLogger("gateway.records.learning")

LearnMode = Literal["auto", "force"]
ACTIONS = ("create", "update")
# Each candidate type shows the extractor at most this many of the subject's matching records.
EXISTING_PER_TYPE = 3
# What one turn may write, whatever the extractor proposes.
MAX_RECORDS_PER_TURN = 20
# The user's words, as a search query for the subject's existing records, are cut to this.
_SEARCH_TEXT = 2000


@dataclass(frozen=True)
class CandidateType:
    """A record type the turn may write, with the subject's records its words already match."""

    schema: RecordSchema
    # API records (``record_id``, ``data``...) the subject owns, best match first.
    existing: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class RecordsExchange:
    """One answered turn, as a records extractor sees it."""

    user_messages: Sequence[str]
    assistant_message: str
    # "auto": the extractor decides; "force": the application asked it to try hard.
    mode: LearnMode
    types: Sequence[CandidateType]

    @property
    def force(self) -> bool:
        return self.mode == "force"

    def candidate(self, type_name: str) -> CandidateType | None:
        for candidate in self.types:
            if candidate.schema.type_name == type_name:
                return candidate
        return None


@dataclass(frozen=True)
class ExtractedRecord:
    """A record to create, or the fields of an existing record to change."""

    action: Literal["create", "update"]
    type_name: str
    data: Mapping[str, Any]
    # The record an update changes (one of the exchange's existing records); None for a create.
    record_id: str | None = None


class RecordExtractor(Protocol):
    async def extract_records(self, exchange: RecordsExchange, *,
                              api_key: str | None = None) -> list[ExtractedRecord]:
        """The records a turn states, best first; validation happens after."""


class RecordsSyncFailed(GatewayError):
    """``sync: true`` and the turn's records could not all be written (contract §10.8)."""

    status = 422
    code = "records_sync_write_failed"


@dataclass(frozen=True)
class RecordsTurn:
    """What a turn asks records learning to do, from its options or its learn job's payload."""

    subject_id: str
    chat_id: str
    user_messages: Sequence[str]
    assistant_message: str
    mode: LearnMode
    # The types it may write; None: every type of the project.
    tables: Sequence[str] | None = None


def records_payload(option: RecordsOption | None) -> dict[str, Any] | None:
    """The learn job's ``records`` part for ``mnx.records``, or None when it learns no records."""
    if option is None or option.learn is False:
        return None
    return {"learn": option.learn, "tables": list(option.tables) if option.tables else None}


def record_id_for(run_id: str, position: int, type_name: str) -> str:
    """The id of the record a learning run creates at ``position``: the same on every run of a
    job (so a re-run finds it), and never one of another type (so a re-run whose extractor
    answered differently cannot overwrite a record of another type)."""
    return "rec_" + hashlib.sha256(f"{run_id}:{position}:{type_name}".encode()).hexdigest()[:24]


def update_mark(job_id: str, position: int) -> str:
    """The ``job_id`` a learning job's update at ``position`` leaves in the record's trail: what
    a re-run looks for, so that it repeats none of the job's updates and skips no other."""
    return f"{job_id}#{position}"


def _write_entry(record: Mapping[str, Any], action: str) -> dict[str, Any]:
    return {"record_id": record["record_id"], "type_name": record["type_name"], "action": action}


@dataclass
class _Checked:
    """A proposal that passed validation: the data to write and the record to create or update."""

    position: int
    proposal: ExtractedRecord
    data: dict[str, Any]
    record_id: str


@dataclass
class _Problems:
    """Proposals that failed validation; fatal only when the caller syncs."""

    strict: bool
    found: list[dict[str, Any]] = field(default_factory=list)

    def add(self, position: int, proposal: ExtractedRecord, error: GatewayError, job: str) -> None:
        problem = {"index": position, "type_name": proposal.type_name, "action": proposal.action,
                   "code": error.code, "message": error.message,
                   **({"param": error.extra["param"]} if error.extra.get("param") else {})}
        self.found.append(problem)
        if not self.strict:
            log.warning("%s: a proposed %s record was not written (%s: %s)", job, proposal.type_name, error.code,
                        error.message)


class RecordsLearner:
    def __init__(self, records: Records, extractor: Any, *, locks: SubjectLocks | None = None) -> None:
        self._records = records
        # Held on a record id while a job checks whether an earlier run wrote it and writes it.
        self._locks = locks or SubjectLocks("records-learning")
        # Third-party memory extractors need not extract records: then none are learned. The
        # caller's key for it is the memory extractor's (Learner.keys_for): the same plugin.
        method = getattr(extractor, "extract_records", None)
        self._extractor: RecordExtractor | None = extractor if callable(method) else None

    # --- reading: what the turn proposes ----------------------------------------------

    async def exchange(self, project_id: str, turn: RecordsTurn, *,
                       embedder_key: str | None = None) -> RecordsExchange | None:
        """The extractor's view of the turn, or None when there is no type to write."""
        if turn.tables:
            schemas = []
            for type_name in turn.tables:
                try:
                    schemas.append(await self._records.schema(project_id, type_name))
                except NotFound:
                    log.info("records learning: no type %r in project %s; skipped", type_name, project_id)
        else:
            # Every type of the project, as many as ``tables`` may name (each costs a search, and
            # the model's prompt grows with each): a project with more names the ones it means.
            docs = (await self._records.schema_docs(project_id))[:MAX_RECORD_TABLES]
            schemas = [await self._records.schema(project_id, doc["type_name"]) for doc in docs]
        if not schemas:
            return None
        text = "\n".join(turn.user_messages)[:_SEARCH_TEXT]
        types = []
        for schema in schemas:
            hits = await self._records.search(project_id, schema.type_name, text, limit=EXISTING_PER_TYPE,
                                              owner_id=turn.subject_id, api_key=embedder_key) if text.strip() else []
            types.append(CandidateType(schema, tuple(hit.record for hit in hits if hit.similarity > 0)))
        return RecordsExchange(tuple(turn.user_messages), turn.assistant_message, turn.mode, tuple(types))

    async def extract(self, project_id: str, turn: RecordsTurn, *, api_key: str | None = None,
                      embedder_key: str | None = None, strict: bool = False,
                      job: str = "records learning") -> list[ExtractedRecord]:
        """What the extractor proposes for the turn; writes nothing.

        A malformed answer from the extractor is nothing to write (logged), or with ``strict``
        a RecordsSyncFailed; other failures (the model unreachable) propagate, so that a job
        retries, or with ``strict`` become a RecordsSyncFailed too."""
        if self._extractor is None:
            if strict:
                raise RecordsSyncFailed("the configured extractor does not extract records "
                                        "(learning.extractor: heuristic or litellm do)", reason="no_records_extractor")
            log.warning("%s: the configured extractor does not extract records; none learned", job)
            return []
        exchange = await self.exchange(project_id, turn, embedder_key=embedder_key)
        if exchange is None:
            return []
        try:
            proposals = await self._extractor.extract_records(exchange, api_key=api_key)
        except ExtractionError as error:
            if strict:
                raise RecordsSyncFailed(f"the records extractor's answer could not be read: {error}",
                                        reason="extraction_failed") from None
            log.warning("%s: %s; no records written", job, error)
            return []
        except GatewayError:
            raise
        except Exception as error:
            if strict:
                # Only the error's type: a provider may echo the key it was sent.
                raise RecordsSyncFailed(f"the records extraction model failed: {type(error).__name__}",
                                        reason="extraction_failed") from None
            raise
        return list(proposals)[:MAX_RECORDS_PER_TURN]

    # --- writing ------------------------------------------------------------------------

    async def write(self, project_id: str, turn: RecordsTurn, proposals: Sequence[ExtractedRecord], *,
                    run_id: str, job_id: str | None, embedder_key: str | None = None,
                    strict: bool = False) -> list[dict[str, Any]]:
        """Validate and write ``proposals`` as the subject's private records; returns the writes
        ``[{"record_id", "type_name", "action": "created"|"updated"}]``. The caller holds the
        erasure fence. ``run_id`` makes created ids stable (a job's id); ``job_id`` goes into
        the provenance and marks the updates a re-run must not repeat.

        Every proposal is checked (schema and references) before the first write. Not
        ``strict``: a proposal that fails is skipped and logged. ``strict`` (sync): any failure
        is a RecordsSyncFailed naming each problem, and nothing is written (if a write itself
        fails, a race with another writer, the error says what was written before it)."""
        label = f"job {job_id}" if job_id else "records sync"
        problems = _Problems(strict)
        checked: list[_Checked] = []
        for position, proposal in enumerate(proposals):
            try:
                checked.append(await self._check(project_id, turn.subject_id, proposal, run_id, position))
            except (BadRequest, NotFound, Conflict) as error:
                problems.add(position, proposal, error, label)
        if strict and problems.found:
            first = problems.found[0]
            raise RecordsSyncFailed(f"{len(problems.found)} of the turn's {len(proposals)} proposed record(s) did "
                                    f"not validate ({first['type_name']}: {first['message']}); nothing was written",
                                    problems=problems.found, written=[])
        written: list[dict[str, Any]] = []
        for item in checked:
            try:
                entry = await self._write_one(project_id, turn, item, job_id, embedder_key)
            except (BadRequest, NotFound, Conflict) as error:
                problems.add(item.position, item.proposal, error, label)
                if strict:
                    raise RecordsSyncFailed(f"a proposed {item.proposal.type_name} record could not be written: "
                                            f"{error.message} ({len(written)} written before it)",
                                            problems=problems.found, written=written) from None
                continue
            if entry is not None:
                written.append(entry)
        return written

    async def _check(self, project_id: str, subject_id: str, proposal: ExtractedRecord, run_id: str,
                     position: int) -> _Checked:
        """The proposal checked as its write will check it (schema, references: writing
        nothing), and the record it writes; an update may only change a live record of that
        type the subject owns."""
        if proposal.action not in ACTIONS:
            raise BadRequest(f"action must be create or update, not {proposal.action!r}", code="invalid_action",
                             param="action")
        if proposal.action == "create":
            data = await self._records.check_record(project_id, proposal.type_name, proposal.data)
            return _Checked(position, proposal, data, record_id_for(run_id, position, proposal.type_name))
        schema = await self._records.schema(project_id, proposal.type_name)
        if not proposal.record_id:
            raise BadRequest("an update names the record_id it changes", code="invalid_record_id", param="record_id")
        current = await self._records.get(project_id, proposal.type_name, proposal.record_id)
        if current.get("owner_id") != subject_id:
            # A chat may change its subject's own records only, never another's or a project-wide one.
            raise RecordNotFound(f"no {proposal.type_name} record '{proposal.record_id}' of this subject",
                                 param="record_id")
        if not isinstance(proposal.data, Mapping):
            validate_data(schema, proposal.data, partial=True)  # the 400 naming it
        # Learning never removes a field: a null proposed is left out, not a deletion.
        changes = {name: value for name, value in proposal.data.items() if value is not None}
        # The changed fields with their references, as Records.update checks them; then the
        # merged record must still be whole (its unchanged references are not checked again,
        # as Records.update does not).
        data = await self._records.check_record(project_id, proposal.type_name, changes, partial=True)
        validate_data(schema, {**current["data"], **data})
        return _Checked(position, proposal, data, proposal.record_id)

    async def _write_one(self, project_id: str, turn: RecordsTurn, item: _Checked, job_id: str | None,
                         embedder_key: str | None) -> dict[str, Any] | None:
        """Write one checked proposal; None when there is nothing to change, or an earlier run of
        the same job already wrote it."""
        if item.proposal.action == "update" and not item.data:
            return None  # nothing left to change
        if job_id is None:
            return await self._apply(project_id, turn, item, Provenance("chat", chat_id=turn.chat_id), embedder_key)
        mark = job_id if item.proposal.action == "create" else update_mark(job_id, item.position)
        # Another run of the job could otherwise write between this check and this write.
        async with self._locks.hold(project_id, item.record_id):
            if await self._written_by(project_id, item, mark):
                return None
            return await self._apply(project_id, turn, item, Provenance("chat", chat_id=turn.chat_id, job_id=mark),
                                     embedder_key)

    async def _apply(self, project_id: str, turn: RecordsTurn, item: _Checked, provenance: Provenance,
                     embedder_key: str | None) -> dict[str, Any]:
        type_name = item.proposal.type_name
        if item.proposal.action == "create":
            record = await self._records.insert(project_id, type_name,
                                                NewRecord(item.data, owner_id=turn.subject_id, visibility="private"),
                                                provenance=provenance, api_key=embedder_key,
                                                record_id=item.record_id)
            return _write_entry(record, "created")
        record = await self._records.update(project_id, type_name, item.record_id, item.data,
                                            provenance=provenance, api_key=embedder_key)
        return _write_entry(record, "updated")

    async def _written_by(self, project_id: str, item: _Checked, mark: str) -> bool:
        """Whether an earlier run of the job wrote this proposal: for a create, the record exists
        at all (deleted since included: it is not brought back); for an update, the record's
        trail holds the update ``mark`` names."""
        try:
            trail, _ = await self._records.history(project_id, item.proposal.type_name, item.record_id)
        except RecordNotFound:
            return False
        if item.proposal.action == "create":
            return True
        # The trail keeps the latest MAX_TRAIL writes: a re-run comes long before that many more.
        return any(entry.get("action") == "updated" and (entry.get("by") or {}).get("job_id") == mark
                   for entry in trail)


# --- the LLM extractor's request and answer --------------------------------------------------

def records_extraction_schema(exchange: RecordsExchange) -> dict[str, Any]:
    """The JSON schema of a records extractor's answer: ``{"records": [...]}``, each item a
    create of one candidate type (its data as ``json_schema`` describes it) or an update of
    one of the existing records shown (only the fields that change: nothing is required)."""
    variants: list[dict[str, Any]] = []
    for candidate in exchange.types:
        name = candidate.schema.type_name
        data = json_schema(candidate.schema)
        variants.append({"type": "object", "additionalProperties": False,
                         "required": ["action", "type_name", "data"],
                         "properties": {"action": {"type": "string", "enum": ["create"]},
                                        "type_name": {"type": "string", "enum": [name]}, "data": data}})
        if candidate.existing:
            partial = {key: value for key, value in data.items() if key != "required"}
            variants.append({"type": "object", "additionalProperties": False,
                             "required": ["action", "type_name", "record_id", "data"],
                             "properties": {"action": {"type": "string", "enum": ["update"]},
                                            "type_name": {"type": "string", "enum": [name]},
                                            "record_id": {"type": "string",
                                                          "enum": [r["record_id"] for r in candidate.existing]},
                                            "data": partial}})
    return {"type": "object", "additionalProperties": False, "required": ["records"],
            "properties": {"records": {"type": "array", "items": {"anyOf": variants}}}}


def records_extraction_input(exchange: RecordsExchange) -> str:
    """The turn and the candidate types, as the user message of the extraction call."""
    types = []
    for candidate in exchange.types:
        schema = candidate.schema
        types.append({"type_name": schema.type_name, "display_name": schema.display_name,
                      "description": schema.description,
                      "fields": {name: definition.to_api() for name, definition in schema.fields.items()},
                      "existing_records": [{"record_id": r["record_id"], "data": r["data"]}
                                           for r in candidate.existing]})
    return json.dumps({"user": list(exchange.user_messages), "assistant": exchange.assistant_message,
                       "record_types": types}, ensure_ascii=False)


def parse_records_answer(raw: str, exchange: RecordsExchange) -> list[ExtractedRecord]:
    """An extractor's JSON answer as proposals; ExtractionError if it is not what the schema
    says (one malformed item rejects the answer: a model that broke the format is not trusted
    with the rest of it). The data itself is validated when it is written."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ExtractionError(f"the records extractor's answer is not JSON: {raw[:200]!r}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("records"), list) or set(answer) != {"records"}:
        raise ExtractionError('the records extractor\'s answer is not {"records": [...]}')
    proposals = []
    for index, item in enumerate(answer["records"]):
        where = f"records[{index}]"
        if not isinstance(item, dict):
            raise ExtractionError(f"{where} is not an object")
        action, type_name, data = item.get("action"), item.get("type_name"), item.get("data")
        allowed = {"action", "type_name", "data"} | ({"record_id"} if action == "update" else set())
        if action not in ACTIONS:
            raise ExtractionError(f"{where}.action is not create or update")
        if not set(item) <= allowed:
            raise ExtractionError(f"{where} has unexpected keys: {sorted(set(item) - allowed)}")
        candidate = exchange.candidate(type_name) if isinstance(type_name, str) else None
        if candidate is None or not isinstance(type_name, str):
            raise ExtractionError(f"{where}.type_name is not one of the candidate types")
        if not isinstance(data, dict):
            raise ExtractionError(f"{where}.data is not an object")
        record_id = item.get("record_id")
        if action == "update" and record_id not in {r["record_id"] for r in candidate.existing}:
            raise ExtractionError(f"{where}.record_id is not one of the existing {type_name} records shown")
        proposals.append(ExtractedRecord(action, type_name, data, record_id if action == "update" else None))
    return proposals


__all__ = ["CandidateType", "ExtractedRecord", "RecordExtractor", "RecordsExchange", "RecordsLearner",
           "RecordsSyncFailed", "RecordsTurn", "parse_records_answer", "record_id_for", "records_extraction_input",
           "records_extraction_schema", "records_payload", "update_mark"]
