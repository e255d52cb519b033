"""System prompts, scoped project -> subject -> chat (contract §11).

A prompt belongs to one scope level: the project, one subject (``scope_id`` =
subject_id) or one chat (``scope_id`` = chat_id). At most one prompt per level is
the default; setting ``is_default`` on one clears it on its siblings. Resolution
layers the active defaults project, then subject, then chat (each level ordered
by ``priority``, lower first) and joins their texts.
"""

from __future__ import annotations

import secrets
from typing import Any

from gateway.clock import now_iso
from gateway.errors import BadRequest, NotFound
from gateway.scoped import (
    delete_subject_scoped, read_scoped_fields, resolve_levels, resolve_levels_of, save_with_unique_default,
    scoped_collection,
)
from gateway.store import Collection, DocumentStore
from gateway.validation import Body, addressable_id

PROMPTS = scoped_collection("prompts")
LAYER_SEPARATOR = "\n\n"


def combined_text(prompts: list[dict[str, Any]]) -> str:
    return LAYER_SEPARATOR.join(p["prompt_text"] for p in prompts if p["prompt_text"])


class SystemPrompts:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def delete_subject_scoped(self, project_id: str, subject_id: str) -> int:
        return await delete_subject_scoped(self._store, PROMPTS, project_id, subject_id)

    async def create(self, project_id: str, raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create (or, when ``id`` names an existing prompt, replace) a prompt. Returns (prompt, created)."""
        body = Body(raw)
        fields = read_scoped_fields(body, "prompt_text", 100_000, "prompts")
        prompt_id = addressable_id(body.string("id"), 128, ("resolve",)) or "sp_" + secrets.token_hex(10)
        existing = await self._store.get(PROMPTS, project_id, prompt_id)
        stamp = now_iso()
        prompt = {
            "id": prompt_id,
            "project_id": project_id,
            **fields,
            "template": body.obj("template"),
            "metadata": body.obj("metadata"),
            "created_at": existing["created_at"] if existing else stamp,
            "updated_at": stamp,
        }
        await self._save(project_id, prompt)
        return prompt, existing is None

    async def get(self, project_id: str, prompt_id: str) -> dict[str, Any]:
        prompt = await self._store.get(PROMPTS, project_id, prompt_id)
        if prompt is None:
            raise NotFound(f"no prompt with id {prompt_id!r}", code="prompt_not_found")
        return prompt

    async def in_project(self, project_id: str, scope: str | None = None) -> list[dict[str, Any]]:
        prompts = await self._store.find(PROMPTS, project_id)
        return [p for p in prompts if scope is None or p["scope"] == scope]

    async def update(self, project_id: str, prompt_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        prompt = dict(await self.get(project_id, prompt_id))
        body = Body(raw)
        prompt.update(read_scoped_fields(body, "prompt_text", 100_000, "prompts", current=prompt))
        for field in ("template", "metadata"):
            if body.has(field):
                prompt[field] = body.obj(field)
        prompt["updated_at"] = now_iso()
        await self._save(project_id, prompt)
        return prompt

    async def delete(self, project_id: str, prompt_id: str) -> bool:
        return await self._store.delete(PROMPTS, project_id, prompt_id)

    async def _save(self, project_id: str, prompt: dict[str, Any]) -> None:
        await save_with_unique_default(self._store, PROMPTS, project_id, prompt)

    async def resolve(self, project_id: str, subject_id: str | None, chat_id: str | None,
                      *, default_only: bool = True) -> list[dict[str, Any]]:
        """The prompts that apply to a request, in injection order."""
        return await resolve_levels(self._store, PROMPTS, project_id, subject_id, chat_id, default_only=default_only)

    async def for_request(self, project_id: str, selection: bool | str, subject_id: str, chat_id: str, *,
                          also: Collection | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """What ``mnx.system_prompt`` selects: the resolved defaults, nothing, or one prompt by id;
        and with ``also`` (another scoped collection: the memory policies a learning turn follows)
        while the resolved defaults are selected, that collection's resolved defaults, read in the
        same statement (else None)."""
        if selection is False:
            return [], None
        if selection is True:
            if also is None:
                return await self.resolve(project_id, subject_id, chat_id), None
            prompts, others = await resolve_levels_of(self._store, [PROMPTS, also], project_id, subject_id, chat_id,
                                                      default_only=True)
            return prompts, others
        prompt = await self._store.get(PROMPTS, project_id, selection)
        if prompt is None:
            raise BadRequest(f"mnx.system_prompt names no prompt of this project: {selection!r}",
                             code="prompt_not_found", param="mnx.system_prompt")
        if not prompt["is_active"]:
            raise BadRequest(f"prompt {selection!r} is inactive", code="prompt_inactive", param="mnx.system_prompt")
        return [prompt], None
