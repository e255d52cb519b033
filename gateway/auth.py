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
from dataclasses import dataclass

from starlette.datastructures import Headers

from gateway.config import GatewayConfig
from gateway.errors import Forbidden, Unauthorized

# Coarse scopes grant every fine-grained scope of the matching HTTP method.
_COARSE_BY_METHOD = {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "PATCH": "write",
                     "DELETE": "delete"}


@dataclass(frozen=True)
class Principal:
    project_id: str
    key_name: str
    scopes: frozenset[str]

    def require(self, scope: str, method: str) -> None:
        """Raise 403 unless this key holds ``scope`` (e.g. ``history:read``)."""
        resource = scope.split(":", 1)[0]
        granted = {"*", scope, f"{resource}:*", _COARSE_BY_METHOD.get(method, "")}
        if self.scopes.isdisjoint(granted):
            raise Forbidden(f"this API key lacks the '{scope}' scope")


@dataclass(frozen=True)
class Credentials:
    principal: Principal
    # An ``Authorization: Bearer`` value that is *not* the project key (because
    # x-mnexium-key carried that); it is then the caller's provider key.
    provider_bearer: str | None


class KeyRing:
    def __init__(self, config: GatewayConfig) -> None:
        self._buckets: dict[bytes, list[tuple[bytes, Principal]]] = {}
        for project in config.projects:
            for key in project.keys:
                digest = bytes.fromhex(key.digest())
                principal = Principal(project.id, key.name, frozenset(key.scopes))
                self._buckets.setdefault(digest[:8], []).append((digest, principal))

    def _lookup(self, presented: str) -> Principal:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, principal in self._buckets.get(digest[:8], ()):
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise Unauthorized("invalid API key")
        return found

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
            return Credentials(self._lookup(explicit.strip()), bearer or None)
        if authorization is None:
            raise Unauthorized("missing API key: send x-mnexium-key or Authorization: Bearer")
        if not bearer:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return Credentials(self._lookup(bearer), None)
