"""The claims truth graph (contract §7): what is true about a subject now, and how it came to be.

A claim is one value asserted in one slot of a subject (``favorite_fruit`` = ``strawberry``;
what a slot is, and which predicates hold a set of values, is gateway/memory/claims.py's).
The graph is three kinds of documents:

* **claims**, each value ever asserted, with a status: ``active`` (the slot's truth; at most
  one per subject and slot), ``superseded`` (a newer claim in the slot, or the memory that
  stated it, replaced it) or ``retracted`` (declared false, or its memory deleted or rewritten);
  a claim that another active memory, or an API call, also states stays when its memory goes,
  with that memory (or none) as its source;
* **assertions**, each statement of a claim by a memory or an API call: the same value stated
  again while it is the truth adds an assertion to the claim it repeats (and raises its
  confidence to the higher of the two) instead of making a new claim;
* **edges** between claims: ``supersedes`` (a new truth to the one it replaced, a restored
  memory's claim to the truth it displaced, or a rewritten memory's new claim to the one it
  replaces in its slot) and ``retracts`` (a retracted truth to
  the earlier claim that became true again). The contract's other edge types (``supports``,
  ``duplicates``, ``related``) are not written: a repeated value is an assertion instead.

Retracting a slot's truth makes true again the claim it had superseded, following the
``supersedes`` edges back past claims retracted since. Retracting twice is a 409.

Reads stay cheap whatever the history: beside the claims, each slot's truth is kept as a
**truth row**, a small document in the shape ``GET /claims/subject/{id}/truth`` answers with,
written whenever a slot's truth changes (under the id of the claim it names, so that the
latest to become true is the newest row). One slot's truth, or a subject's latest few (what
recall reads on every turn), is then one index read of small documents, never a walk
through the history. ``GET .../truth`` lists every slot, so it reads a **snapshot**
instead, one document: the subject's rows as one JSON text, rebuilt from the rows by the
first read after a change. A writer changes the rows, counts the change (a tally, atomic on
both backends), then deletes the snapshot. A reader that rebuilds it reads the count (with
the time of the latest change: an erasure deletes the tally, so the count alone could come
back to the same number) before the rows and again after storing it, and deletes what it
stored if either moved: a change its rows may have missed has then either been counted by
that second read, or will delete the snapshot itself. No interleaving leaves a stale snapshot in use.

Writes to one subject's claims take turns (``TruthGraph.writing``, held by
gateway/memory/memories.py around each operation): in this process, and on Redis across the
gateways sharing it (gateway/subject_locks.py).

This module knows memories by id only; keeping claims and memory versioning in agreement
is gateway/memory/memories.py's business.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager

import orjson

from gateway.clock import from_timestamp
from gateway.errors import Conflict, NotFound
from gateway.ids import ordered_id
from gateway.memory.claims import claim_type_of, default_slot, value_key
from gateway.store import Collection, DocumentStore, Increment
from gateway.subject_locks import SubjectLocks

CLAIMS = Collection("claims", indexes=(("subject_id",), ("subject_id", "slot"), ("subject_id", "slot", "status"),
                                       ("source_memory_id",)))
# A slot's truth, one row per (subject, slot) with a truth, under the id of the claim it names.
TRUTHS = Collection("claim_truths", indexes=(("subject_id",), ("subject_id", "slot")))
# A subject's truth rows as one JSON text, under the subject's key; the tally CHANGES of that
# key counts the changes to the subject's rows.
SNAPSHOTS = Collection("claim_truth_snapshots", indexes=(("subject_id",),))
CHANGES = "changes"
ASSERTIONS = Collection("claim_assertions", indexes=(("claim_id",), ("memory_id",), ("subject_id",)))
EDGES = Collection("claim_edges", indexes=(("from_claim_id",), ("to_claim_id",), ("subject_id",)))

DEFAULT_RETRACT_REASON = "manual_retraction"

# A claim as stored (not gateway.memory.claims.Claim, a memory's statement before it is asserted).
ClaimDoc = dict[str, Any]
# Whether an earlier claim may become a slot's truth again when the truth is retracted.
MayReturn = Callable[[ClaimDoc], Awaitable[bool]]
# Whether a memory (by id) is active: while one still states a claim, that claim stands.
IsActive = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class NewClaim:
    """A claim to assert, checked by its author (the REST API, or a memory's claims)."""

    subject_id: str
    predicate: str
    object_value: str
    # None: the default rule (gateway.memory.claims.default_slot).
    slot: str | None = None
    # None: inferred from the predicate (contract §7).
    claim_type: str | None = None
    confidence: float = 0.8
    importance: float = 0.5
    tags: tuple[str, ...] = ()
    source_memory_id: str | None = None
    source_observation_id: str | None = None
    subject_entity: str = "self"
    valid_from: str | None = None
    valid_until: str | None = None
    # Who stated it: "api" (or the client's own word), or the stating memory's source_type.
    source_type: str = "api"
    source_text: str | None = None
    # The id the client chose; None: the gateway picks one.
    claim_id: str | None = None
    # Where a learned claim came from (chat, job, message ids, when it was learned).
    origin: dict[str, Any] | None = None


@dataclass(frozen=True)
class Asserted:
    # The new claim, or the active claim it repeats (created False).
    claim: ClaimDoc
    created: bool
    # The claims it replaced as the slot's truth.
    superseded: list[ClaimDoc] = field(default_factory=list)


@dataclass(frozen=True)
class Retracted:
    claim: ClaimDoc
    # The earlier claim that is the slot's truth again, if any.
    restored: ClaimDoc | None


def _stamp() -> str:
    return from_timestamp(time.time())


def _newest_first(docs: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda doc: doc.get(key) or "", reverse=True)


def truth_row(claim: ClaimDoc) -> dict[str, Any]:
    """A slot and the claim true in it, as the truth routes answer (contract §7)."""
    return {"slot": claim["slot"], "active_claim_id": claim["claim_id"], "predicate": claim["predicate"],
            "object_value": claim["object_value"], "claim_type": claim["claim_type"],
            "confidence": claim["confidence"], "updated_at": claim["updated_at"], "tags": claim["tags"],
            "source": {"memory_id": claim["source_memory_id"], "observation_id": claim["source_observation_id"]}}


def _subject_key(subject_id: str) -> str:
    """A subject's snapshot id: fixed length, whatever characters the subject id holds."""
    return hashlib.blake2b(subject_id.encode(), digest_size=16).hexdigest()


def _one_per_slot(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows newest first, one per slot: a truth moving to another claim writes the new row
    before deleting the old, so a reader in between (on Redis) may see both; the new one wins."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["slot"] not in seen:
            seen.add(row["slot"])
            kept.append(row)
    return kept


# Subjects whose latest truth rows ``TruthGraph.latest`` keeps in process (the least recently
# read go first): a few KB each.
_KEPT_SUBJECTS = 1024


class _KeptRows(NamedTuple):
    # The subject's change count (and time of the latest) the rows were read under.
    changes: tuple[int, float]
    rows: list[dict[str, Any]]
    # Every row the subject had (the read came back short of its limit).
    complete: bool


class TruthGraph:
    def __init__(self, store: DocumentStore, locks: SubjectLocks | None = None) -> None:
        self._store = store
        self._latest: OrderedDict[tuple[str, str], _KeptRows] = OrderedDict()
        # Writers of one subject's claims take turns (see ``writing``).
        self._locks = locks or SubjectLocks("claims")

    def writing(self, project_id: str, subject_id: str) -> AbstractAsyncContextManager[Any]:
        """The lock every writer of the subject's claims holds (``async with``) around its reads
        and writes: each write reads whole documents and stores them again, so two at once could
        lose a retraction or leave a slot two truths. Not re-entrant: take it once, at the top of
        an operation."""
        return self._locks.hold(project_id, subject_id)

    # --- reading -------------------------------------------------------------------------

    async def claim(self, project_id: str, claim_id: str) -> ClaimDoc | None:
        return await self._store.get(CLAIMS, project_id, claim_id)

    async def truth(self, project_id: str, subject_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The subject's truth rows (truth_row, plus ``subject_id``), one per slot, the latest
        to become true first; at most ``limit``. One index read."""
        return _one_per_slot(await self._rows(project_id, subject_id, limit))

    async def _rows(self, project_id: str, subject_id: str, limit: int | None) -> list[dict[str, Any]]:
        """The subject's newest ``limit`` truth rows as stored (a slot may have two: ``_one_per_slot``)."""
        return await self._store.find(TRUTHS, project_id, {"subject_id": subject_id}, limit=limit, newest_first=True)

    async def latest(self, project_id: str, subject_id: str, *, limit: int) -> list[dict[str, Any]]:
        """``truth(limit=limit)`` for a reader on every turn (recall): the rows read last are kept in
        this process with the subject's change count they were read under, and read again only
        once that count moved (a change here or by another gateway on the same store). One small
        tally read instead of ``limit`` rows. Read in the snapshot's order (count first, then
        rows: see the module docstring), so a change the rows missed has moved the count."""
        changes = await self._changes(project_id, _subject_key(subject_id))
        if changes is None:  # no change ever counted (or erased since): nothing worth keeping
            return await self.truth(project_id, subject_id, limit=limit)
        kept_key = (project_id, subject_id)
        kept = self._latest.get(kept_key)
        if kept is not None and kept.changes == changes and (kept.complete or len(kept.rows) >= limit):
            self._latest.move_to_end(kept_key)
            return _one_per_slot(kept.rows[:limit])
        rows = await self._rows(project_id, subject_id, limit)
        self._latest[kept_key] = _KeptRows(changes, rows, complete=len(rows) < limit)
        self._latest.move_to_end(kept_key)
        if len(self._latest) > _KEPT_SUBJECTS:
            self._latest.popitem(last=False)
        return _one_per_slot(rows)

    async def truth_json(self, project_id: str, subject_id: str) -> tuple[int, str]:
        """(how many slots, their truth rows as a JSON array, without ``subject_id``), the latest
        to become true first: what ``GET .../truth`` lists. One read while the snapshot stands;
        the first read after a change rebuilds it (see the module docstring)."""
        key = _subject_key(subject_id)
        snapshot = await self._store.get(SNAPSHOTS, project_id, key)
        if snapshot is not None:
            return snapshot["slot_count"], snapshot["slots"]
        changes = await self._changes(project_id, key)
        if changes is None:
            return 0, "[]"  # never given a truth (writing a row counts a change): nothing to read
        rows = [{k: v for k, v in row.items() if k != "subject_id"} for row in await self.truth(project_id, subject_id)]
        slots = orjson.dumps(rows).decode()
        if not rows:
            return 0, slots  # nothing worth keeping (nor left behind by a read racing an erasure)
        await self._store.put(SNAPSHOTS, project_id, key, {"subject_id": subject_id, "slot_count": len(rows),
                                                            "slots": slots})
        if await self._changes(project_id, key) != changes:
            # A change came in while it was built, and its rows may be older than that change.
            await self._store.delete(SNAPSHOTS, project_id, key)
        return len(rows), slots

    async def _changes(self, project_id: str, key: str) -> tuple[int, float] | None:
        """(how many changes the subject's truth rows have had, when the latest was), None if
        never one. Both, compared: an erasure deletes the tally, so a count alone could come back
        to the same number with other rows behind it (the time of the latest change does not)."""
        tally = (await self._store.tallies(SNAPSHOTS, project_id, [key])).get(key, {}).get(CHANGES)
        return (tally.count, tally.last_at) if tally is not None else None

    async def slot(self, project_id: str, subject_id: str, slot: str) -> dict[str, Any] | None:
        """The slot's truth row, or None."""
        rows = await self._store.find(TRUTHS, project_id, {"subject_id": subject_id, "slot": slot}, limit=1,
                                      newest_first=True)
        return rows[0] if rows else None

    async def active_in_slot(self, project_id: str, subject_id: str, slot: str) -> list[ClaimDoc]:
        """The slot's active claims: one, or none (two only after a race between writers)."""
        return await self._store.find(CLAIMS, project_id, {"subject_id": subject_id, "slot": slot, "status": "active"})

    async def slots(self, project_id: str, subject_id: str, *, limit: int) -> list[tuple[ClaimDoc, str]]:
        """Every slot the subject has held a claim in, most recently changed first: (the claim
        shown for it, the slot's status). The shown claim is its truth (status ``active``), or,
        with no truth left, its latest claim (``superseded`` or ``retracted``)."""
        by_slot: dict[str, list[ClaimDoc]] = {}
        for claim in await self._store.find(CLAIMS, project_id, {"subject_id": subject_id}):
            by_slot.setdefault(claim["slot"], []).append(claim)
        rows = []
        for claims in by_slot.values():
            active = [c for c in claims if c["status"] == "active"]
            shown = active[-1] if active else _newest_first(claims, "updated_at")[0]
            rows.append((shown, shown["status"]))
        rows.sort(key=lambda row: row[0]["updated_at"], reverse=True)
        return rows[:limit]

    async def graph(self, project_id: str, subject_id: str, *,
                    limit: int) -> tuple[list[ClaimDoc], list[dict[str, Any]]]:
        """The subject's latest ``limit`` claims and every edge touching them, newest first."""
        claims = await self._store.find(CLAIMS, project_id, {"subject_id": subject_id}, limit=limit,
                                        newest_first=True)
        return claims, await self._edges_touching(project_id, subject_id, claims)

    async def history(self, project_id: str, subject_id: str, *, slot: str | None,
                      limit: int) -> tuple[list[ClaimDoc], list[dict[str, Any]]]:
        """The subject's latest ``limit`` claims (of one slot, if given) and the supersedes
        edges touching them, newest first."""
        where = {"subject_id": subject_id, "slot": slot} if slot else {"subject_id": subject_id}
        claims = await self._store.find(CLAIMS, project_id, where, limit=limit, newest_first=True)
        edges = await self._edges_touching(project_id, subject_id, claims)
        return claims, [edge for edge in edges if edge["edge_type"] == "supersedes"]

    async def assertions(self, project_id: str, claim_id: str) -> list[dict[str, Any]]:
        return _newest_first(await self._store.find(ASSERTIONS, project_id, {"claim_id": claim_id}), "last_seen_at")

    async def edges(self, project_id: str, claim_id: str) -> list[dict[str, Any]]:
        """Every edge from or to the claim, newest first."""
        outgoing = await self._store.find(EDGES, project_id, {"from_claim_id": claim_id})
        incoming = await self._store.find(EDGES, project_id, {"to_claim_id": claim_id})
        return _newest_first({edge["edge_id"]: edge for edge in [*outgoing, *incoming]}.values(), "created_at")

    async def memory_assertions(self, project_id: str, memory_id: str) -> list[tuple[dict[str, Any], ClaimDoc]]:
        """What a memory stated: (its assertion, the claim asserted), oldest first."""
        rows = []
        for assertion in await self._store.find(ASSERTIONS, project_id, {"memory_id": memory_id}):
            claim = await self._store.get(CLAIMS, project_id, assertion["claim_id"])
            if claim is not None:
                rows.append((assertion, claim))
        return rows

    async def memories_behind(self, project_id: str, claim: ClaimDoc) -> list[str]:
        """The memories that stated ``claim``: its source first, then any that repeated it."""
        ids = [claim["source_memory_id"]] if claim.get("source_memory_id") else []
        for assertion in await self._store.find(ASSERTIONS, project_id, {"claim_id": claim["claim_id"]}):
            if assertion.get("memory_id") and assertion["memory_id"] not in ids:
                ids.append(assertion["memory_id"])
        return ids

    # --- writing -------------------------------------------------------------------------

    async def assert_claim(self, project_id: str, new: NewClaim, *, winner: bool = True) -> Asserted:
        """Assert ``new``: it becomes the truth of its slot, superseding the truth before it,
        unless it repeats that truth (then it is an assertion of the existing claim).
        ``winner=False`` stores it superseded, the slot unchanged (a claim of a memory that is
        not active: restoring the memory makes it the truth)."""
        if new.claim_id is not None and await self._store.get(CLAIMS, project_id, new.claim_id) is not None:
            raise Conflict(f"a claim with id {new.claim_id} already exists", code="claim_exists", param="claim_id")
        stamp = _stamp()
        slot = new.slot or default_slot(new.predicate, new.object_value)
        active = await self.active_in_slot(project_id, new.subject_id, slot) if winner else []
        repeated = next((c for c in active if value_key(c["object_value"]) == value_key(new.object_value)), None)
        if repeated is not None:
            repeated.update(updated_at=stamp, confidence=max(repeated["confidence"], new.confidence))
            await self._store.put(CLAIMS, project_id, repeated["claim_id"], repeated)
            await self._make_truth(project_id, repeated)
            await self._add_assertion(project_id, repeated, new, stamp)
            return Asserted(repeated, created=False)
        claim_id = new.claim_id or ordered_id("clm_")
        claim: ClaimDoc = {
            "claim_id": claim_id, "project_id": project_id, "subject_id": new.subject_id,
            "predicate": new.predicate, "object_value": new.object_value, "slot": slot,
            "claim_type": new.claim_type or claim_type_of(new.predicate), "confidence": new.confidence,
            "importance": new.importance, "tags": list(new.tags), "source_memory_id": new.source_memory_id,
            "source_observation_id": new.source_observation_id, "subject_entity": new.subject_entity,
            "status": "active" if winner else "superseded", "asserted_at": stamp, "updated_at": stamp,
            "retracted_at": None, "retract_reason": None, "valid_from": new.valid_from,
            "valid_until": new.valid_until, "source_type": new.source_type, "source_text": new.source_text,
            "origin": new.origin, "superseded_at": None if winner else stamp, "superseded_by": None,
            "superseded_reason": None if winner else "memory_not_active",
        }
        for old in active:
            old.update(status="superseded", superseded_at=stamp, superseded_by=claim_id, superseded_reason="new_value",
                       updated_at=stamp)
        await self._store.put_many(CLAIMS, project_id, [(c["claim_id"], c) for c in (claim, *active)])
        if winner:
            await self._make_truth(project_id, claim)
        await self._add_edges(project_id, new.subject_id, [(claim_id, old["claim_id"], "supersedes", "new_value", None)
                                                           for old in active], stamp)
        await self._add_assertion(project_id, claim, new, stamp)
        return Asserted(claim, created=True, superseded=active)

    async def retract(self, project_id: str, claim_id: str, reason: str = DEFAULT_RETRACT_REASON, *,
                      may_return: MayReturn | None = None) -> Retracted:
        """Declare a claim false. If it was its slot's truth, the claim it had superseded is the
        truth again (following supersedes edges past retracted claims, and past those
        ``may_return`` refuses), unless the slot has another truth already. 404 for an unknown
        claim, 409 if already retracted."""
        claim = await self._store.get(CLAIMS, project_id, claim_id)
        if claim is None:
            raise NotFound(f"no claim {claim_id}", code="claim_not_found", claim_id=claim_id)
        if claim["status"] == "retracted":
            raise Conflict("the claim is already retracted", code="claim_already_retracted", claim_id=claim_id,
                           retracted_at=claim["retracted_at"])
        stamp = _stamp()
        was_truth = claim["status"] == "active"
        claim.update(status="retracted", retracted_at=stamp, retract_reason=reason, updated_at=stamp)
        restored = None
        if was_truth:
            others = [c for c in await self.active_in_slot(project_id, claim["subject_id"], claim["slot"])
                      if c["claim_id"] != claim_id]
            if not others:  # another truth in the slot (a write that raced this one) stays the only one
                restored = await self._previous_truth(project_id, claim, may_return)
        changed = [claim]
        if restored is not None:
            restored.update(status="active", superseded_at=None, superseded_by=None, superseded_reason=None,
                            updated_at=stamp)
            changed.append(restored)
        await self._store.put_many(CLAIMS, project_id, [(c["claim_id"], c) for c in changed])
        if restored is not None:
            await self._make_truth(project_id, restored)
            await self._add_edges(project_id, claim["subject_id"],
                                  [(claim_id, restored["claim_id"], "retracts", DEFAULT_RETRACT_REASON, reason)], stamp)
        elif was_truth:
            await self._clear_slot(project_id, claim)
        return Retracted(claim, restored)

    async def memory_claims(self, project_id: str, memory_id: str) -> list[ClaimDoc]:
        """The claims whose source is the memory (any status)."""
        return await self._store.find(CLAIMS, project_id, {"source_memory_id": memory_id})

    async def supersede_memory_claims(self, project_id: str, memory_id: str, reason: str, *,
                                      is_active: IsActive) -> list[ClaimDoc]:
        """A memory was superseded: its claims that were truths are superseded with it, and their
        slots keep no truth (a memory's fate moves its own claims only), unless something else
        still states them (see _still_stated). Returns the claims moved."""
        return await self._memory_claims_leave(project_id, memory_id, ("active",), is_active,
                                               lambda claim, stamp: claim.update(
                                                   status="superseded", superseded_at=stamp, superseded_by=None,
                                                   superseded_reason=reason, updated_at=stamp))

    async def retract_memory_claims(self, project_id: str, memory_id: str, reason: str, *, is_active: IsActive,
                                    keep: Iterable[str] = ()) -> list[ClaimDoc]:
        """A memory was deleted, or its text rewritten: its claims, truths or superseded, are
        retracted (a restore must not bring back what it no longer says), but those in ``keep``
        (claim ids it still states) and those something else still states. Returns the claims moved."""
        kept = set(keep)

        def retract(claim: ClaimDoc, stamp: str) -> None:
            claim.update(status="retracted", retracted_at=stamp, retract_reason=reason, updated_at=stamp)

        return await self._memory_claims_leave(project_id, memory_id, ("active", "superseded"), is_active, retract,
                                               kept)

    async def _memory_claims_leave(self, project_id: str, memory_id: str, moving: tuple[str, ...],
                                   is_active: IsActive, leave: Callable[[ClaimDoc, str], None],
                                   keep: set[str] | None = None) -> list[ClaimDoc]:
        stamp = _stamp()
        changed = []
        for claim in await self.memory_claims(project_id, memory_id):
            if claim["status"] not in moving or claim["claim_id"] in (keep or ()):
                continue
            stated, new_source = await self._still_stated(project_id, claim, memory_id, is_active)
            if stated:
                # Another memory, or an API call, states it too: it stands, on that statement now.
                claim.update(source_memory_id=new_source, updated_at=stamp)
                await self._store.put(CLAIMS, project_id, claim["claim_id"], claim)
                if claim["status"] == "active":
                    await self._make_truth(project_id, claim)
                continue
            if claim["status"] == "active":
                await self._clear_slot(project_id, claim)
            leave(claim, stamp)
            changed.append(claim)
        if changed:
            await self._store.put_many(CLAIMS, project_id, [(c["claim_id"], c) for c in changed])
        return changed

    async def _still_stated(self, project_id: str, claim: ClaimDoc, leaving: str,
                            is_active: IsActive) -> tuple[bool, str | None]:
        """Whether an assertion of ``claim`` other than memory ``leaving``'s still stands, and the
        memory it names: an active memory's first (None: only an API call's, which names none)."""
        by_api = False
        for assertion in await self._store.find(ASSERTIONS, project_id, {"claim_id": claim["claim_id"]}):
            other = assertion.get("memory_id")
            if other is None:
                by_api = True
            elif other != leaving and await is_active(other):
                return True, other
        return by_api, None

    async def reinstate_memory_claims(self, project_id: str, memory_id: str) -> list[Asserted]:
        """A memory is active again: its superseded claims are the truths of their slots again,
        superseding whatever is true there now (a retracted claim stays retracted). Returns each
        claim reinstated with the claims it displaced."""
        stamp = _stamp()
        reinstated = []
        for claim in await self.memory_claims(project_id, memory_id):
            if claim["status"] != "superseded":
                continue
            current = [c for c in await self.active_in_slot(project_id, claim["subject_id"], claim["slot"])
                       if c["claim_id"] != claim["claim_id"]]
            for old in current:
                old.update(status="superseded", superseded_at=stamp, superseded_by=claim["claim_id"],
                           superseded_reason="memory_restored", updated_at=stamp)
            claim.update(status="active", superseded_at=None, superseded_by=None, superseded_reason=None,
                         updated_at=stamp)
            await self._store.put_many(CLAIMS, project_id, [(c["claim_id"], c) for c in (claim, *current)])
            await self._make_truth(project_id, claim)
            await self._add_edges(project_id, claim["subject_id"],
                                  [(claim["claim_id"], old["claim_id"], "supersedes", "memory_restored", None)
                                   for old in current], stamp)
            reinstated.append(Asserted(claim, created=False, superseded=current))
        return reinstated

    async def link_edit(self, project_id: str, new: ClaimDoc, old: ClaimDoc) -> None:
        """``new`` is what a memory says in ``old``'s slot since its text was rewritten: a
        supersedes edge from one to the other, so that retracting ``new`` makes true again what
        ``old`` had superseded (the walk back passes the retracted ``old``)."""
        await self._add_edges(project_id, new["subject_id"],
                              [(new["claim_id"], old["claim_id"], "supersedes", "memory_edited", None)], _stamp())

    async def erase_subject(self, project_id: str, subject_id: str) -> int:
        """Delete every claim, assertion and edge of the subject; returns how many claims."""
        await self._store.delete_where(TRUTHS, project_id, {"subject_id": subject_id})
        await self._store.delete_where(SNAPSHOTS, project_id, {"subject_id": subject_id})
        await self._store.delete_tallies(SNAPSHOTS, project_id, [_subject_key(subject_id)])
        await self._store.delete_where(ASSERTIONS, project_id, {"subject_id": subject_id})
        await self._store.delete_where(EDGES, project_id, {"subject_id": subject_id})
        return await self._store.delete_where(CLAIMS, project_id, {"subject_id": subject_id})

    # --- internals -----------------------------------------------------------------------

    async def _previous_truth(self, project_id: str, claim: ClaimDoc,
                              may_return: MayReturn | None) -> ClaimDoc | None:
        """The claim ``claim`` superseded, or, if that one was retracted since (or may not
        return), the one that one superseded, and so on; newest edge first, each claim once."""
        seen = {claim["claim_id"]}
        frontier = [claim["claim_id"]]
        while frontier:
            current = frontier.pop(0)
            for edge in await self._store.find(EDGES, project_id, {"from_claim_id": current}, newest_first=True):
                if edge["edge_type"] != "supersedes" or edge["to_claim_id"] in seen:
                    continue
                seen.add(edge["to_claim_id"])
                earlier = await self._store.get(CLAIMS, project_id, edge["to_claim_id"])
                if earlier is None or earlier["slot"] != claim["slot"]:
                    continue
                if earlier["status"] == "active":
                    return None  # the slot has a truth already (a concurrent write): leave it
                if earlier["status"] == "superseded" and (may_return is None or await may_return(earlier)):
                    return earlier
                frontier.append(earlier["claim_id"])
        return None

    async def _make_truth(self, project_id: str, claim: ClaimDoc) -> None:
        """Write ``claim``'s truth row, then delete every other row of its slot."""
        await self._store.put(TRUTHS, project_id, claim["claim_id"], {"subject_id": claim["subject_id"],
                                                                      **truth_row(claim)})
        await self._drop_rows(project_id, claim["subject_id"], claim["slot"], keep=claim["claim_id"])

    async def _clear_slot(self, project_id: str, claim: ClaimDoc) -> None:
        """``claim``'s slot has no truth now: delete its rows."""
        await self._drop_rows(project_id, claim["subject_id"], claim["slot"], keep=None)

    async def _drop_rows(self, project_id: str, subject_id: str, slot: str, *, keep: str | None) -> None:
        """Delete the slot's truth rows but ``keep``'s, then count a change of the subject's
        truths and delete its snapshot (always: the caller may have written a row too). In this
        order: see the module docstring. Every row of the slot, not only those of the claims a
        write replaced: a row a write interrupted by a crash left behind (its claim superseded
        since) goes at the slot's next change, for one index read."""
        for row in await self._store.find(TRUTHS, project_id, {"subject_id": subject_id, "slot": slot}):
            if row["active_claim_id"] != keep:
                await self._store.delete(TRUTHS, project_id, row["active_claim_id"])
        key = _subject_key(subject_id)
        await self._store.increment(SNAPSHOTS, project_id, [Increment(key, CHANGES, time.time())])
        await self._store.delete(SNAPSHOTS, project_id, key)

    async def _add_assertion(self, project_id: str, claim: ClaimDoc, new: NewClaim, stamp: str) -> None:
        assertion_id = ordered_id("ast_")
        await self._store.put(ASSERTIONS, project_id, assertion_id, {
            "id": assertion_id, "project_id": project_id, "subject_id": claim["subject_id"],
            "claim_id": claim["claim_id"], "memory_id": new.source_memory_id, "predicate": new.predicate,
            "type": "string", "value": new.object_value, "confidence": new.confidence,
            "source_type": new.source_type, "observation_id": new.source_observation_id,
            "first_seen_at": stamp, "last_seen_at": stamp,
        })

    async def _add_edges(self, project_id: str, subject_id: str,
                         edges: list[tuple[str, str, str, str, str | None]], stamp: str) -> None:
        """Store edges given as (from, to, type, reason code, reason text)."""
        docs = []
        for from_id, to_id, edge_type, reason_code, reason_text in edges:
            edge_id = ordered_id("edg_")
            docs.append((edge_id, {
                "edge_id": edge_id, "project_id": project_id, "subject_id": subject_id, "from_claim_id": from_id,
                "to_claim_id": to_id, "edge_type": edge_type, "weight": 1.0, "reason_code": reason_code,
                "reason_text": reason_text, "created_at": stamp,
            }))
        if docs:
            await self._store.put_many(EDGES, project_id, docs)

    async def _edges_touching(self, project_id: str, subject_id: str,
                              claims: list[ClaimDoc]) -> list[dict[str, Any]]:
        ids = {claim["claim_id"] for claim in claims}
        if not ids:
            return []
        edges = await self._store.find(EDGES, project_id, {"subject_id": subject_id}, newest_first=True)
        return [edge for edge in edges if edge["from_claim_id"] in ids or edge["to_claim_id"] in ids]
