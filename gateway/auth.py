"""Project keys: which project a request belongs to, and what it may do.

Keys are never kept in memory in clear: the key ring holds the SHA-256 of each
configured key. A presented key is hashed; the first 8 bytes of its digest pick a
bucket (a dict lookup whose timing depends only on what the caller sent), and the
full digest is then compared with ``hmac.compare_digest`` against every entry of
that bucket, so no byte-by-byte early exit ever touches a stored secret.

Keys made at run time (``mnx-gateway keys``, trial keys) live hashed in the document store
(gateway/keys/store.py). They are looked up second, only for a key the ring does not hold
and only when it has the prefix every stored key has, so a configured key costs no I/O and
neither does a provider key sent beside it. A stored key costs one store read per request;
a revoked one answers 401 ``token_revoked``, an expired one 401 ``token_expired``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.requests import Request

from gateway.config import GatewayConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.keys.store import KeyStore, StoredKey
from gateway.keys.trial import TrialKeys
from gateway.proxy.providers import PROVIDER_KEY_HEADERS

# Coarse scopes grant every fine-grained scope of the matching HTTP method.
_COARSE_BY_METHOD = {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "PATCH": "write",
                     "DELETE": "delete"}
# For what a request does besides its route (a chat turn's recall, history, learning): the
# coarse scope that grants each fine scope's action.
_COARSE_BY_ACTION = {"read": "read", "search": "read", "write": "write", "delete": "delete"}


@dataclass(frozen=True)
class Principal:
    project_id: str
    key_name: str
    scopes: frozenset[str]

    def _holds(self, scope: str, coarse: str) -> bool:
        resource = scope.split(":", 1)[0]
        return not self.scopes.isdisjoint({"*", scope, f"{resource}:*", coarse})

    def require(self, scope: str | tuple[str, ...], method: str) -> None:
        """Raise 403 unless this key holds ``scope`` (e.g. ``history:read``; a tuple: any of
        them) or the coarse scope of the HTTP method."""
        alternatives = (scope,) if isinstance(scope, str) else scope
        coarse = _COARSE_BY_METHOD.get(method, "")
        if not any(self._holds(name, coarse) for name in alternatives):
            raise Forbidden(f"this API key lacks the '{alternatives[0]}' scope")

    def allows(self, scope: str) -> bool:
        """Whether this key holds ``scope`` for something a request does besides its route;
        the coarse scope that grants it is the one of its action (``read`` for ``:search``)."""
        return self._holds(scope, _COARSE_BY_ACTION.get(scope.partition(":")[2], ""))


@dataclass(frozen=True)
class Credentials:
    principal: Principal
    # An ``Authorization: Bearer`` value that is *not* the project key (because
    # x-mnexium-key carried that); it is then the caller's provider key.
    provider_bearer: str | None
    # The provider keys the caller sent, by header (x-openai-key, x-api-key...). Whatever
    # reads a caller's key reads it here, never from the raw headers: a value that is a
    # project key has been left out, so a project key can never go upstream.
    provider_keys: dict[str, str] = field(default_factory=dict)


class MissingKey(Unauthorized):
    """The request carries no project key at all (a proxy route may then provision a trial key)."""


def _stored_principal(key: StoredKey) -> Principal:
    status = key.status()
    if status == "revoked":
        raise Unauthorized("this API key has been revoked", code="token_revoked")
    if status == "expired":
        raise Unauthorized("this API key has expired", code="token_expired")
    return Principal(key.project_id, key.name, frozenset(key.scopes))


class KeyRing:
    def __init__(self, config: GatewayConfig, stored: KeyStore | None = None) -> None:
        # None: configured keys only (nothing to read from a store).
        self.stored = stored
        # None: trials are off (auth.trial.enabled), key-less requests are refused.
        self.trials = TrialKeys(stored, config.auth.trial) if stored is not None and config.auth.trial.enabled else None
        # A stored key of a project since removed from the config file opens nothing.
        self._projects = frozenset(project.id for project in config.projects)
        self._buckets: dict[bytes, list[tuple[bytes, Principal]]] = {}
        for project in config.projects:
            for key in project.keys:
                digest = bytes.fromhex(key.digest())
                principal = Principal(project.id, key.name, frozenset(key.scopes))
                self._buckets.setdefault(digest[:8], []).append((digest, principal))

    def _find(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, principal in self._buckets.get(digest[:8], ()):
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    async def _lookup(self, presented: str) -> Principal:
        found = self._find(presented)
        if found is not None:
            return found
        stored = await self.stored.by_key(presented) if self.stored is not None else None
        if stored is None or not self._still_valid_project(stored):
            raise Unauthorized("invalid API key")
        return _stored_principal(stored)

    def _still_valid_project(self, key: StoredKey) -> bool:
        if key.fingerprint is not None:  # a trial key: refused once trials are turned off
            return self.trials is not None
        return key.project_id in self._projects

    async def is_project_key(self, value: str) -> bool:
        """Whether ``value`` is any project's key (of any project, not only the caller's),
        configured or stored, revoked and expired ones included: none may ever go upstream."""
        if self._find(value) is not None:
            return True
        return self.stored is not None and await self.stored.by_key(value) is not None

    async def _provider_keys(self, headers: Headers, project_key: str | None) -> dict[str, str]:
        """The caller's provider keys, ``project_key`` (the one just authenticated: known without
        another lookup) and every other project key left out."""
        keys = {}
        for name in PROVIDER_KEY_HEADERS:
            value = (headers.get(name) or "").strip()
            if value and value != project_key and not await self.is_project_key(value):
                keys[name] = value
        return keys

    async def authenticate(self, headers: Headers) -> Credentials:
        """Resolve the project key by the contract's rule.

        1. ``x-mnexium-key`` present: it is the project key, and a Bearer token on the
           same request is the caller's provider key.
        2. Otherwise ``Authorization: Bearer <token>`` is the project key.
        """
        explicit = headers.get("x-mnexium-key")
        authorization = headers.get("authorization")
        bearer = None
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            bearer = token.strip() if scheme.lower() == "bearer" else None
        if explicit is not None:
            if not explicit.strip():
                raise Unauthorized("the x-mnexium-key header is empty")
            project_key = explicit.strip()
            principal = await self._lookup(project_key)
            # The same (or another) project key in both headers is not a provider key.
            spare = bearer if bearer and bearer != project_key and not await self.is_project_key(bearer) else None
            return Credentials(principal, spare, await self._provider_keys(headers, project_key))
        if authorization is None:
            raise MissingKey("missing API key: send x-mnexium-key or Authorization: Bearer")
        if not bearer:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return Credentials(await self._lookup(bearer), None, await self._provider_keys(headers, bearer))

    async def admit(self, request: Request, *, trial: bool = False) -> Credentials:
        """``authenticate``; but on a ``trial`` route, with trials on, a request without any
        project key is served with its device's trial key (gateway/keys/trial.py)."""
        try:
            return await self.authenticate(request.headers)
        except MissingKey:
            if not trial or self.trials is None:
                raise
        record = await self.trials.for_device(request)
        return Credentials(_stored_principal(record), None, await self._provider_keys(request.headers, None))
