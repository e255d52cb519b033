"""Memory policies: what learning may store, scoped project -> subject -> chat (seed 001).

A policy's text instructs the extractor; its config filters what gets stored
(kinds, confidence, importance, a per-turn cap). Resolution layers the active
policies of the levels that apply; texts are joined in that order and configs
merged key by key, later scopes winning. Deleting a policy deactivates it and
keeps it for audit. (The learning pipeline that applies them arrives with issue 4.)
"""

from __future__ import annotations

import secrets
from typing import Any

from gateway.clock import now_iso
from gateway.errors import BadRequest, NotFound
from gateway.scoped import (
    check_scope_name, delete_subject_scoped, read_scoped_fields, resolve_levels, save_with_unique_default,
    scoped_collection,
)
from gateway.store import DocumentStore
from gateway.validation import Body, addressable_id

POLICIES = scoped_collection("memory_policies")
TEXT_SEPARATOR = "\n\n"

# config key -> (check, what it must be)
_CONFIG_RULES = {
    "include_kinds": (lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v), "an array of strings"),
    "exclude_kinds": (lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v), "an array of strings"),
    "confidence_min": (lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "importance_min": (lambda v: _number(v) and 0 <= v <= 100, "a number from 0 to 100"),
    "max_memories_per_turn": (lambda v: _integer(v) and 1 <= v <= 50, "an integer from 1 to 50"),
    # Not in the contract: which visibilities a learned memory may get when the extractor
    # proposes them. Learned memories are private otherwise (gateway.memory.learning).
    "learned_visibility": (lambda v: isinstance(v, list) and all(k in ("private", "shared", "public") for k in v),
                           'an array of "private", "shared", "public"'),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return _number(value) and value == int(value)


def validate_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """A policy config, checked key by key; a typo'd key is refused rather than silently ignored."""
    if config is None:
        return {}
    for key, value in config.items():
        if key not in _CONFIG_RULES:
            raise BadRequest(f"config.{key} is not a policy setting (known: {', '.join(_CONFIG_RULES)})",
                             code="invalid_config", param=f"config.{key}")
        check, expected = _CONFIG_RULES[key]
        if value is not None and not check(value):
            raise BadRequest(f"config.{key} must be {expected}", code="invalid_config", param=f"config.{key}")
    return {k: v for k, v in config.items() if v is not None}


def to_api(policy: dict[str, Any]) -> dict[str, Any]:
    """The seed's shape: flags as 1/0, plus the camelCase ids its create answer shows."""
    return {**policy, "is_active": int(policy["is_active"]), "is_default": int(policy["is_default"]),
            "projectId": policy["project_id"], "scopeId": policy["scope_id"]}


def combine(policies: list[dict[str, Any]]) -> dict[str, Any]:
    """Effective text and config of resolved policies, in resolution order."""
    config: dict[str, Any] = {}
    for policy in policies:
        config.update(policy["config"])
    return {
        "policy_text": TEXT_SEPARATOR.join(p["policy_text"] for p in policies if p["policy_text"]),
        "has_policy": bool(policies),
        "policy_ids": [p["id"] for p in policies],
        "config": config,
    }


class MemoryPolicies:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def delete_subject_scoped(self, project_id: str, subject_id: str) -> int:
        return await delete_subject_scoped(self._store, POLICIES, project_id, subject_id)

    async def create(self, project_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        body = Body(raw)
        fields = read_scoped_fields(body, "policy_text", 50_000, "policies")
        policy_id = addressable_id(body.string("id"), 128, ("resolve",)) or "mp_" + secrets.token_hex(10)
        existing = await self._store.get(POLICIES, project_id, policy_id)
        stamp = now_iso()
        policy = {
            "id": policy_id, "project_id": project_id, **fields,
            "config": validate_config(body.obj("config")),
            "metadata": body.obj("metadata") or {},
            "created_at": existing["created_at"] if existing else stamp, "updated_at": stamp,
        }
        await save_with_unique_default(self._store, POLICIES, project_id, policy)
        return policy

    async def get(self, project_id: str, policy_id: str) -> dict[str, Any]:
        policy = await self._store.get(POLICIES, project_id, policy_id)
        if policy is None:
            raise NotFound(f"no memory policy with id {policy_id!r}", code="policy_not_found")
        return policy

    async def in_project(self, project_id: str, *, scope: str | None, include_inactive: bool) -> list[dict[str, Any]]:
        if scope is not None:
            check_scope_name(scope)
        return [p for p in await self._store.find(POLICIES, project_id)
                if (scope is None or p["scope"] == scope) and (include_inactive or p["is_active"])]

    async def update(self, project_id: str, policy_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        policy = dict(await self.get(project_id, policy_id))
        body = Body(raw)
        policy.update(read_scoped_fields(body, "policy_text", 50_000, "policies", current=policy))
        if body.has("config"):
            policy["config"] = validate_config(body.obj("config"))
        if body.has("metadata"):
            policy["metadata"] = body.obj("metadata") or {}
        policy["updated_at"] = now_iso()
        await save_with_unique_default(self._store, POLICIES, project_id, policy)
        return policy

    async def deactivate(self, project_id: str, policy_id: str) -> bool:
        """Soft delete: the policy stops resolving but stays readable. False if it already was."""
        policy = await self.get(project_id, policy_id)
        if not policy["is_active"] and policy.get("deleted_at"):
            return False
        stamp = now_iso()
        await self._store.put(POLICIES, project_id, policy_id,
                              {**policy, "is_active": False, "is_default": False, "deleted_at": stamp,
                               "updated_at": stamp})
        return True

    async def resolve(self, project_id: str, subject_id: str | None, chat_id: str | None,
                      *, default_only: bool) -> list[dict[str, Any]]:
        return await resolve_levels(self._store, POLICIES, project_id, subject_id, chat_id, default_only=default_only)

    async def require_usable(self, project_id: str, policy_id: str) -> None:
        """An explicit ``mnx.memory_policy`` must name an active policy of this project."""
        policy = await self._store.get(POLICIES, project_id, policy_id)
        if policy is None or not policy["is_active"]:
            raise BadRequest(f"mnx.memory_policy names no active memory policy of this project: {policy_id!r}",
                             code="memory_policy_not_found", param="mnx.memory_policy")
