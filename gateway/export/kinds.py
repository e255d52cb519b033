"""What an export file holds: one kind of line per stored collection, and each document's id.

An export is a dump of the store's own documents, not of the API's shapes: the API shows
less than is stored (version links, index bookkeeping, audit trails), and an import must
give back exactly what was there, ids included, or superseded chains and claim graphs would
point at nothing. Each document line names its collection as its ``kind``.

The store does not return a document's id with it (``DocumentStore.find`` gives bodies), so
each kind says how its id follows from the body: the same rule the service that writes the
collection uses (a test checks every exported id reads its document back).

Kinds split in three:

* ``SUBJECT_KINDS``: a subject's own data. Erasing a subject deletes exactly these
  collections (gateway/erasure.py), and a subject export reads exactly these (a test
  compares the two, so a new collection is not forgotten by one of them);
* ``PROJECT_KINDS``: the project's configuration, in a project-wide export (and a subject's
  record schemas beside its records, which mean nothing without them);
* collections never exported, in ``NOT_EXPORTED`` with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.audit_log import AUDIT
from gateway.history import CHATS, MESSAGES
from gateway.integrations.cache import VALUES
from gateway.integrations.definitions import INTEGRATIONS
from gateway.memory.index_upkeep import MEMORIES
from gateway.memory.memories import DUPLICATE_WORDINGS, LEGACY_CLAIMS
from gateway.memory.recalls import RECALL_TURNS, RECALLS
from gateway.memory.truth_graph import ASSERTIONS, CLAIMS, EDGES, SNAPSHOTS, TRUTHS
from gateway.memory_policies import POLICIES
from gateway.profiles import PROFILE_FIELDS, PROFILE_HISTORY
from gateway.prompts import PROMPTS
from gateway.records.records import RECORDS, SCHEMAS
from gateway.state import STATE
from gateway.store import Collection
from gateway.summaries.store import SUMMARIES

FORMAT = "mnx-gateway-export"
FORMAT_VERSION = 1
HEADER = "header"
# The last line: a file cut short (a dropped connection) is refused rather than half-imported.
END = "end"
# A subject's count of changes to its claim truths (gateway/memory/truth_graph.py): a truth
# read trusts its cached snapshot only while this count stands, so it travels with the claims.
# The snapshot itself is a cache and is rebuilt at the first read after an import.
CLAIM_TRUTH_CHANGES = "claim_truth_changes"


def _paired(subject_field: str, second_field: str) -> Callable[[Mapping[str, Any]], str]:
    """The "<length>:<subject>:<second>" ids of chats, summaries, state and profile fields."""
    def doc_id(doc: Mapping[str, Any]) -> str:
        subject = doc[subject_field]
        return f"{len(subject)}:{subject}:{doc[second_field]}"
    return doc_id


def _field(name: str) -> Callable[[Mapping[str, Any]], str]:
    def doc_id(doc: Mapping[str, Any]) -> str:
        return str(doc[name])
    return doc_id


def _integration_value_id(doc: Mapping[str, Any]) -> str:
    integration_id = doc["integration_id"]
    return f"{len(integration_id)}:{integration_id}:{doc['scope']}:{doc['scope_id']}"


def _message_id(doc: Mapping[str, Any]) -> str:
    if doc.get("message_id"):
        return str(doc["message_id"])
    # Messages stored before they carried their own id: a stable stand-in from what they say,
    # so that importing the file twice still writes each message once.
    digest = hashlib.blake2b(repr(sorted(doc.items())).encode(), digest_size=12).hexdigest()
    return f"msg_import_{digest}"


def _state_expiry(doc: Mapping[str, Any]) -> float | None:
    expires = doc.get("expires_at")
    return datetime.fromisoformat(expires).timestamp() if isinstance(expires, str) else None


@dataclass(frozen=True)
class Kind:
    collection: Collection
    doc_id: Callable[[Mapping[str, Any]], str]
    # Documents with tallies beside them (recall and reinforcement counts): exported with them.
    tallied: bool = False
    # When an expiring collection's document goes (epoch seconds; None: never), from its body.
    expires_at: Callable[[Mapping[str, Any]], float | None] | None = None

    @property
    def name(self) -> str:
        return self.collection.name


# In import order: what a later kind refers to is written first (schemas before records,
# memories before the claims and recalls naming them).
SUBJECT_KINDS: tuple[Kind, ...] = (
    Kind(MEMORIES, _field("id"), tallied=True),
    Kind(DUPLICATE_WORDINGS, _field("id")),
    Kind(CLAIMS, _field("claim_id")),
    Kind(TRUTHS, _field("active_claim_id")),
    Kind(ASSERTIONS, _field("id")),
    Kind(EDGES, _field("edge_id")),
    Kind(LEGACY_CLAIMS, _field("id")),
    Kind(PROFILE_FIELDS, _paired("subject_id", "field_key")),
    Kind(PROFILE_HISTORY, _field("id")),
    Kind(RECORDS, _field("record_id")),
    Kind(MESSAGES, _message_id),
    Kind(CHATS, _paired("subject_id", "chat_id")),
    Kind(SUMMARIES, _paired("subject_id", "chat_id")),
    Kind(STATE, _paired("subject_id", "key"), expires_at=_state_expiry),
    Kind(PROMPTS, _field("id")),
    Kind(POLICIES, _field("id")),
    # Expiry of cached integration values comes from their integration (see gateway.export.dump).
    Kind(VALUES, _integration_value_id),
    Kind(RECALL_TURNS, _field("turn_id")),
    Kind(RECALLS, _field("event_id")),
    # Kept for the importing gateway's audit.retention_days from when the turn was answered.
    Kind(AUDIT, _field("audit_id")),
)
PROJECT_KINDS: tuple[Kind, ...] = (
    Kind(SCHEMAS, _field("type_name")),
    # Without their secrets (auth and webhook): an import keeps the target's, if it has them.
    Kind(INTEGRATIONS, _field("integration_id")),
)
# Collections of subject data without a document line of their own.
SUBJECT_COLLECTIONS_BESIDE_KINDS = {SNAPSHOTS.name: CLAIM_TRUTH_CHANGES}
NOT_EXPORTED = {
    "api_keys": "the gateway's credentials (hashes), not project data; keys are made per gateway",
    "integration_webhook_events": "a few minutes of webhook delivery ids, kept only to drop repeats",
}

KINDS: dict[str, Kind] = {kind.name: kind for kind in (*PROJECT_KINDS, *SUBJECT_KINDS)}
# The order an import writes in.
IMPORT_ORDER = [kind.name for kind in (*PROJECT_KINDS, *SUBJECT_KINDS)]
