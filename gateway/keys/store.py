"""Project keys kept in the document store: created, listed, revoked and rotated at run time.

A key is stored as the SHA-256 of its text, never the text: the key is printed once, when
it is made, and nothing the gateway keeps can give it back. The digest is the document id,
so authenticating a stored key is one ``get`` by id, on either backend. A presented key's
digest is computed from what the caller sent; the lookup's timing says nothing about a
stored key's bytes (finding a document by the digest of a guess is no oracle for another).

Where they live: every store call is partitioned by project id, and these documents sit
under ``KEY_STORE_PROJECT``, which no configured project can be: ``ProjectConfig.id``
only takes ``[A-Za-z0-9_.-]`` and this id starts with ``~``, and trial projects are named
``trial_<hex>`` (refused as configured ids too). No tenant's request ever names it,
because a request's project id only ever comes from its key.

Nothing is cached: a revocation (from ``mnx-gateway keys revoke``, another gateway, or a
trial key regenerated) takes effect on the very next request on every gateway sharing the
store, at the cost of one store read per request made with a stored key. Configured keys
never reach here (``gateway.auth`` answers them from memory first).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from gateway.clock import iso
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.store.base import Collection, DocumentStore

# The partition of the store holding every stored key (see the module docstring).
KEY_STORE_PROJECT = "~gateway-keys"
# Trial projects' ids start with this (gateway/keys/trial.py); configured ids may not.
TRIAL_PROJECT_PREFIX = "trial_"

LIVE_PREFIX = "mnx_live_"
# The contract's form (§14: `mnx_trial.…`).
TRIAL_PREFIX = "mnx_trial."
# Every key this module makes starts with one of these, so a value that starts with neither
# (a provider key, or a configured key of another form) never costs a store read.
STORED_KEY_PREFIXES = (LIVE_PREFIX, TRIAL_PREFIX)
# 32 random bytes: 43 urlsafe characters after the prefix.
_RANDOM_BYTES = 32

API_KEYS = Collection("api_keys", indexes=(("key_id",), ("project_id",), ("fingerprint",)))

# A scope as gateway.auth reads them: "*", "read", "memories:read", "memories:*".
_SCOPE = re.compile(r"^(\*|[a-z_]+(:(\*|[a-z_]+))?)$")
_NAME_MAX = 100

Status = Literal["active", "revoked", "expired"]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class StoredKey:
    """One stored key's record: everything but the key itself."""

    key_id: str
    project_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    # The key's last four characters, to tell keys apart in a listing.
    last4: str
    # Trial keys only: the hashed device fingerprint the key was minted for.
    fingerprint: str | None = None

    def status(self, now: datetime | None = None) -> Status:
        if self.revoked_at is not None:
            return "revoked"
        expires = _parse_time(self.expires_at)
        if expires is not None and expires <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def listing(self) -> dict[str, Any]:
        """What a listing shows of the key (never the key, never its digest)."""
        return {"key_id": self.key_id, "project_id": self.project_id, "name": self.name,
                "scopes": list(self.scopes), "last4": self.last4, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at, "status": self.status()}

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> StoredKey:
        return cls(key_id=doc["key_id"], project_id=doc["project_id"], name=doc["name"],
                   scopes=tuple(doc["scopes"]), created_at=doc["created_at"], expires_at=doc.get("expires_at"),
                   revoked_at=doc.get("revoked_at"), last4=doc["last4"], fingerprint=doc.get("fingerprint"))


def check_scopes(scopes: list[str]) -> tuple[str, ...]:
    if not scopes:
        raise BadRequest("a key needs at least one scope")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise BadRequest(f"{scope!r} is not a scope (e.g. '*', 'read', 'memories:read', 'memories:*')")
    return tuple(dict.fromkeys(scopes))


class KeyStore:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def _save(self, digest: str, key: StoredKey) -> None:
        doc: dict[str, Any] = {"digest": digest, "key_id": key.key_id, "project_id": key.project_id,
                               "name": key.name, "scopes": list(key.scopes), "created_at": key.created_at,
                               "expires_at": key.expires_at, "revoked_at": key.revoked_at, "last4": key.last4}
        if key.fingerprint is not None:
            doc["fingerprint"] = key.fingerprint
        await self._store.put(API_KEYS, KEY_STORE_PROJECT, digest, doc)

    async def _doc_by_id(self, key_id: str) -> dict[str, Any]:
        found = await self._store.find(API_KEYS, KEY_STORE_PROJECT, {"key_id": key_id}, limit=1)
        if not found:
            raise NotFound(f"no stored key with id {key_id!r}", code="key_not_found")
        return found[0]

    async def create(self, project_id: str, *, name: str = "default", scopes: list[str] | None = None,
                     expires_at: datetime | None = None, prefix: str = LIVE_PREFIX,
                     fingerprint: str | None = None) -> tuple[str, StoredKey]:
        """A new key for ``project_id``: (the key, shown this once; its record)."""
        if not name or len(name) > _NAME_MAX:
            raise BadRequest(f"a key name is 1 to {_NAME_MAX} characters")
        if prefix not in STORED_KEY_PREFIXES:
            raise ValueError(f"unknown key prefix {prefix!r}")
        key = prefix + secrets.token_urlsafe(_RANDOM_BYTES)
        record = StoredKey(key_id="key_" + secrets.token_hex(8), project_id=project_id, name=name,
                           scopes=check_scopes(scopes if scopes is not None else ["*"]),
                           created_at=iso(datetime.now(UTC)), expires_at=iso(expires_at) if expires_at else None,
                           revoked_at=None, last4=key[-4:], fingerprint=fingerprint)
        await self._save(key_digest(key), record)
        return key, record

    async def by_key(self, presented: str) -> StoredKey | None:
        """The record of the key ``presented`` (revoked and expired ones too), or None. One read."""
        if not presented.startswith(STORED_KEY_PREFIXES):
            return None
        doc = await self._store.get(API_KEYS, KEY_STORE_PROJECT, key_digest(presented))
        return StoredKey._from_doc(doc) if doc is not None else None

    async def get(self, key_id: str) -> StoredKey:
        return StoredKey._from_doc(await self._doc_by_id(key_id))

    async def in_project(self, project_id: str) -> list[StoredKey]:
        docs = await self._store.find(API_KEYS, KEY_STORE_PROJECT, {"project_id": project_id})
        return [StoredKey._from_doc(doc) for doc in docs]

    async def with_fingerprint(self, fingerprint: str) -> list[StoredKey]:
        docs = await self._store.find(API_KEYS, KEY_STORE_PROJECT, {"fingerprint": fingerprint})
        return [StoredKey._from_doc(doc) for doc in docs]

    async def revoke(self, key_id: str) -> StoredKey:
        """Revoke a key (again: no change, it keeps its first revocation time)."""
        doc = await self._doc_by_id(key_id)
        record = StoredKey._from_doc(doc)
        if record.revoked_at is None:
            record = replace(record, revoked_at=iso(datetime.now(UTC)))
            await self._save(doc["digest"], record)
        return record

    async def rotate(self, key_id: str, *, expires_at: datetime | None = None,
                     grace: timedelta | None = None) -> tuple[str, StoredKey, StoredKey]:
        """A new key with the old one's project, name and scopes: (new key, its record, the old
        record). The old key is revoked now, or with ``grace`` keeps working that much longer
        (its expiry, never later than it already was). Without ``expires_at`` the new key gets
        the old one's lifetime (none if it had none)."""
        doc = await self._doc_by_id(key_id)
        old = StoredKey._from_doc(doc)
        if old.revoked_at is not None:
            raise Conflict(f"key {key_id} is revoked: create a new key instead", code="key_revoked")
        now = datetime.now(UTC)
        if expires_at is None and old.expires_at is not None:
            created, expired = _parse_time(old.created_at), _parse_time(old.expires_at)
            assert created is not None and expired is not None
            expires_at = now + (expired - created)
        key, record = await self.create(old.project_id, name=old.name, scopes=list(old.scopes),
                                        expires_at=expires_at, fingerprint=old.fingerprint,
                                        prefix=TRIAL_PREFIX if old.fingerprint else LIVE_PREFIX)
        if grace is None:
            old = replace(old, revoked_at=iso(now))
        else:
            current = _parse_time(old.expires_at)
            ends = now + grace if current is None else min(current, now + grace)
            old = replace(old, expires_at=iso(ends))
        await self._save(doc["digest"], old)
        return key, record, old
