"""Documents scoped project -> subject -> chat: system prompts and memory policies.

Both live at one scope level (the project, one subject, or one chat, named by
``scope_id``), have at most one default per level, and resolve by layering the
levels that apply to a request in that order, each ordered by ``priority``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import BadRequest
from gateway.store import Collection, DocumentStore
from gateway.validation import Body

SCOPES = ("project", "subject", "chat")


def scoped_collection(name: str) -> Collection:
    return Collection(name, indexes=(("scope", "scope_id"),))


def check_scope_name(scope: str) -> None:
    if scope not in SCOPES:
        raise BadRequest("scope must be one of project, subject, chat", code="invalid_scope", param="scope")


def validate_scope(scope: str, scope_id: str | None, noun: str) -> str:
    """The stored scope_id for ``scope`` ("" for the project level)."""
    check_scope_name(scope)
    if scope == "project":
        return ""
    if not scope_id:
        raise BadRequest(f"scope_id is required for {scope}-scoped {noun}", code="scope_id_required", param="scope_id")
    return scope_id


def read_scoped_fields(body: Body, text_field: str, text_max: int, noun: str,
                       current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields every scoped document has, read from a request body.

    Creating (``current`` is None): every field, with its default when absent.
    Patching: only the fields the body names; ``null`` keeps the current value.
    """
    creating = current is None
    base = current or {"scope": "project", "scope_id": "", "is_active": True, "is_default": False, "priority": 100}
    fields: dict[str, Any] = {}
    if creating or body.has("name"):
        fields["name"] = body.string("name", required=True, code="name_required", max_length=200)
    if creating or body.has(text_field):
        fields[text_field] = body.string(text_field, required=True, code=f"{text_field}_required", max_length=text_max)
    if creating or body.has("scope") or body.has("scope_id"):
        scope = body.string("scope") or base["scope"]
        fields["scope_id"] = validate_scope(scope, body.string("scope_id", max_length=256) or base["scope_id"], noun)
        fields["scope"] = scope
    for flag in ("is_active", "is_default"):
        if creating or body.has(flag):
            fields[flag] = body.flag(flag, default=base[flag])
    if creating or body.has("priority"):
        fields["priority"] = body.integer("priority", default=base["priority"], minimum=-1_000_000, maximum=1_000_000)
    return fields


def layered(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order resolved documents project -> subject -> chat, then by priority (lower first)."""
    return sorted(docs, key=lambda d: (SCOPES.index(d["scope"]), d["priority"], d["created_at"]))


async def resolve_levels(store: DocumentStore, collection: Collection, project_id: str, subject_id: str | None,
                         chat_id: str | None, *, default_only: bool) -> list[dict[str, Any]]:
    """The active documents of every level that applies, in resolution order."""
    [resolved] = await resolve_levels_of(store, [collection], project_id, subject_id, chat_id,
                                         default_only=default_only)
    return resolved


async def resolve_levels_of(store: DocumentStore, collections: Sequence[Collection], project_id: str,
                            subject_id: str | None, chat_id: str | None, *,
                            default_only: bool) -> list[list[dict[str, Any]]]:
    """``resolve_levels`` of several scoped collections, read together (one statement on SQLite):
    a list per collection, in the same order."""
    levels = [("project", "")]
    if subject_id:
        levels.append(("subject", subject_id))
    if chat_id:
        levels.append(("chat", chat_id))
    found = await store.find_each(project_id, [(collection, {"scope": scope, "scope_id": scope_id})
                                               for collection in collections for scope, scope_id in levels])
    resolved = []
    for start in range(0, len(found), len(levels)):
        docs = [doc for level in found[start:start + len(levels)] for doc in level]
        resolved.append(layered([d for d in docs if d["is_active"] and (d["is_default"] or not default_only)]))
    return resolved


async def save_with_unique_default(store: DocumentStore, collection: Collection, project_id: str,
                                   doc: dict[str, Any]) -> None:
    """Store ``doc``; if it is a default, its level's previous default stops being one."""
    if doc["is_default"]:
        siblings = await store.find(collection, project_id, {"scope": doc["scope"], "scope_id": doc["scope_id"]})
        for sibling in siblings:
            if sibling["id"] != doc["id"] and sibling["is_default"]:
                await store.put(collection, project_id, sibling["id"], {**sibling, "is_default": False})
    await store.put(collection, project_id, doc["id"], doc)


async def delete_subject_scoped(store: DocumentStore, collection: Collection, project_id: str, subject_id: str) -> int:
    """Every document scoped to one subject (erasure)."""
    return await store.delete_where(collection, project_id, {"scope": "subject", "scope_id": subject_id})
