"""Project keys: which project a request belongs to, and what it may do.

Keys are never kept in memory in clear: the key ring holds the SHA-256 of each
configured key. A presented key is hashed; the first 8 bytes of its digest pick a
bucket (a dict lookup whose timing depends only on what the caller sent), and the
full digest is then compared with ``hmac.compare_digest`` against every entry of
that bucket, so no byte-by-byte early exit ever touches a stored secret.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from starlette.datastructures import Headers

from gateway.config import GatewayConfig
from gateway.errors import Forbidden, Unauthorized
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


class KeyRing:
    def __init__(self, config: GatewayConfig) -> None:
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

    def _lookup(self, presented: str) -> Principal:
        found = self._find(presented)
        if found is None:
            raise Unauthorized("invalid API key")
        return found

    def is_project_key(self, value: str) -> bool:
        """Whether ``value`` is any project's key (of any project, not only the caller's)."""
        return self._find(value) is not None

    def _provider_keys(self, headers: Headers) -> dict[str, str]:
        keys = {}
        for name in PROVIDER_KEY_HEADERS:
            value = (headers.get(name) or "").strip()
            if value and not self.is_project_key(value):
                keys[name] = value
        return keys

    def authenticate(self, headers: Headers) -> Credentials:
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
            principal = self._lookup(explicit.strip())
            # The same (or another) project key in both headers is not a provider key.
            spare = bearer if bearer and not self.is_project_key(bearer) else None
            return Credentials(principal, spare, self._provider_keys(headers))
        if authorization is None:
            raise Unauthorized("missing API key: send x-mnexium-key or Authorization: Bearer")
        if not bearer:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return Credentials(self._lookup(bearer), None, self._provider_keys(headers))
