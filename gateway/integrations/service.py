"""Integrations of a project: their definitions, pulls (``test`` and ``sync``) and pushed webhooks."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from gateway.clock import now_iso
from gateway.config import IntegrationsConfig
from gateway.erasure_fence import SubjectErased
from gateway.errors import BadRequest, NotFound
from gateway.integrations import output_map, webhook
from gateway.integrations.cache import ValuesCache, scope_id
from gateway.integrations.definitions import (INTEGRATIONS, MAX_ID_LENGTH, new_integration, to_api,
                                              updated_integration)
from gateway.integrations.fetch import FetchResult, build_request, fetch
from gateway.redaction import REDACTED, redact
from gateway.store import DocumentStore
from gateway.validation import Body, addressable_id

log = logging.getLogger("gateway.integrations")

MAX_SCOPE_ID_LENGTH = 256


class Integrations:
    def __init__(self, store: DocumentStore, settings: IntegrationsConfig, cache: ValuesCache) -> None:
        self._store = store
        self._settings = settings
        self.cache = cache

    # -- definitions ----------------------------------------------------------------------

    async def find(self, project_id: str, integration_id: str) -> dict[str, Any] | None:
        return await self._store.get(INTEGRATIONS, project_id, integration_id)

    async def get(self, project_id: str, integration_id: str) -> dict[str, Any]:
        integration = await self.find(project_id, integration_id)
        if integration is None:
            raise NotFound(f"no integration with id {integration_id!r}", code="not_found")
        return integration

    async def in_project(self, project_id: str, *, include_inactive: bool) -> list[dict[str, Any]]:
        return [to_api(i) for i in await self._store.find(INTEGRATIONS, project_id)
                if include_inactive or i["is_active"]]

    async def create(self, project_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        chosen = raw.get("integration_id")
        existing = None
        if isinstance(chosen, str) and chosen:
            # A 400 for an id no route could address, before it is looked up.
            existing = await self.find(project_id, addressable_id(chosen, MAX_ID_LENGTH) or chosen)
        integration = new_integration(project_id, raw, self._settings, existing)
        await self._store.put(INTEGRATIONS, project_id, integration["integration_id"], integration)
        if existing is not None:
            await self.cache.forget_integration(project_id, integration["integration_id"])
        return to_api(integration)

    async def update(self, project_id: str, integration_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        integration = updated_integration(await self.get(project_id, integration_id), raw, self._settings)
        await self._store.put(INTEGRATIONS, project_id, integration_id, integration)
        # Values mapped by the old definition (another endpoint, map or scope) are not this one's.
        await self.cache.forget_integration(project_id, integration_id)
        return to_api(integration)

    async def delete(self, project_id: str, integration_id: str) -> dict[str, Any]:
        integration = await self.get(project_id, integration_id)
        await self._store.delete(INTEGRATIONS, project_id, integration_id)
        await self.cache.forget_integration(project_id, integration_id)
        await self._store.delete_where(webhook.SEEN_EVENTS, project_id, {"integration_id": integration_id})
        return to_api(integration)

    # -- pull ------------------------------------------------------------------------------

    async def pull(self, project_id: str, integration: Mapping[str, Any], subject_id: str | None,
                   chat_id: str | None) -> FetchResult:
        """Call the integration's endpoint. Never raises: a failure is a result with a reason,
        logged without the integration's secret."""
        # (Not registered for process-wide redaction: tenants could grow that set without bound.
        # This call's own error texts are redacted with it below, and the HTTP library's request
        # log, which would show a URL carrying it, is off: gateway/integrations/fetch.py.)
        secret = integration.get("secrets", {}).get("auth")
        variables = {"subject_id": subject_id, "chat_id": chat_id, "project_id": project_id}
        started = time.monotonic()
        try:
            result = await fetch(build_request(integration, secret, variables), timeout_ms=integration["timeout_ms"],
                                 settings=self._settings)
        except Exception as error:  # a header the HTTP library refuses, say: a failed pull, not a 500
            result = FetchResult(False, "request_failed", round((time.monotonic() - started) * 1000),
                                 detail=redact(str(error), extra=[secret]))
        if not result.ok:
            log.info("integration %s pull failed: %s %s", integration["integration_id"], result.reason,
                     redact(result.detail, extra=[secret]))
        return result

    async def run(self, project_id: str, integration_id: str, raw: dict[str, Any], *, write_cache: bool
                  ) -> dict[str, Any]:
        """``test`` (a dry run: fetch and map) or ``sync`` (and keep the values)."""
        integration = await self.get(project_id, integration_id)
        if integration["mode"] == "webhook":
            raise BadRequest("this integration is webhook-only: nothing to pull", code="pull_not_configured")
        if write_cache and not integration["is_active"]:
            raise BadRequest("this integration is inactive", code="integration_inactive")
        body = Body(raw)
        subject_id = body.identifier("subject_id", max_length=MAX_SCOPE_ID_LENGTH)
        chat_id = body.identifier("chat_id", max_length=MAX_SCOPE_ID_LENGTH)
        key = scope_id(integration["scope"], subject_id, chat_id)
        started = time.time()
        fetched = await self.pull(project_id, integration, subject_id, chat_id)
        values = mapped_values(integration, fetched.document) if fetched.ok else {}
        written = False
        if fetched.ok and write_cache:
            written = await self.keep_values(project_id, integration, key, values, subject_id, started, merge=False)
        result = {"ok": fetched.ok, "reason": fetched.reason, "values": values, "latency_ms": fetched.latency_ms,
                  "integration_id": integration_id, "scope": integration["scope"], "cache_written": written}
        if fetched.status is not None:
            result["status"] = fetched.status
        return result

    async def keep_values(self, project_id: str, integration: dict[str, Any], key: str, values: dict[str, Any],
                    subject_id: str | None, started: float, *, merge: bool) -> bool:
        try:
            await self.cache.write(project_id, integration, key, values, subject_id=subject_id, started=started,
                                   merge=merge)
        except SubjectErased:
            # The subject was erased while the values were on their way: they stay unwritten.
            return False
        return True

    # -- webhook ---------------------------------------------------------------------------

    async def receive(self, project_id: str, integration_id: str, headers: Mapping[str, str],
                      raw_body: bytes) -> dict[str, Any]:
        """A pushed webhook: checked (signature, age), deduplicated by x-event-id, mapped and kept."""
        started = time.time()
        integration = await self.get(project_id, integration_id)
        if integration["mode"] == "pull":
            raise BadRequest("this integration is pull-only: it takes no webhooks", code="webhook_not_configured")
        if not integration["is_active"]:
            raise BadRequest("this integration is inactive", code="integration_inactive")
        secret = integration.get("secrets", {}).get("webhook")
        if not secret:
            raise BadRequest("this integration has no webhook_secret to check pushes with",
                             code="webhook_secret_not_set")
        stamp_header = headers.get("x-mnx-webhook-timestamp")
        timestamp = webhook.timestamp_of(stamp_header)
        payload = webhook.verify(secret, stamp_header or "", headers.get("x-mnx-webhook-signature"), raw_body)
        webhook.check_fresh(timestamp, time.time(), self._settings.webhook_tolerance_seconds)
        event_id = _header_id(headers, "x-event-id", webhook.MAX_EVENT_ID_LENGTH)
        seen_id = webhook.seen_event_id(integration_id, event_id) if event_id else None
        if seen_id and await self._store.get(webhook.SEEN_EVENTS, project_id, seen_id) is not None:
            return {"ok": True, "deduplicated": True, "integration_id": integration_id}
        subject_id = _header_id(headers, "x-mnx-subject-id", MAX_SCOPE_ID_LENGTH)
        chat_id = _header_id(headers, "x-mnx-chat-id", MAX_SCOPE_ID_LENGTH)
        key = scope_id(integration["scope"], subject_id, chat_id)
        values = output_map.apply(integration["output_map"], payload)
        written = await self.keep_values(project_id, integration, key, values, subject_id, started, merge=True)
        if seen_id:
            # Recorded after the write: a push that failed half-way may be retried. Two deliveries
            # of one event at the same instant may both apply: they write the same values.
            await self._store.put(webhook.SEEN_EVENTS, project_id, seen_id,
                                  {"integration_id": integration_id, "event_id": event_id, "received_at": now_iso()},
                                  ttl_seconds=webhook.EVENT_MEMORY_SECONDS)
        return {"ok": True, "deduplicated": False, "integration_id": integration_id, "values": values,
                "keys_written": list(values) if written else [],
                "latency_ms": round((time.time() - started) * 1000)}


def mapped_values(integration: Mapping[str, Any], document: Any) -> dict[str, Any]:
    """The values ``output_map`` reads from a pulled answer, with the auth secret blanked out
    wherever the endpoint echoed it back: values are shown by ``test`` and put into prompts."""
    secret = integration.get("secrets", {}).get("auth")
    values = output_map.apply(integration["output_map"], document)
    return _blank(values, secret) if secret else values


def _blank(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {key: _blank(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [_blank(item, secret) for item in value]
    return value


def _header_id(headers: Mapping[str, str], name: str, max_length: int) -> str | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > max_length or not value.isprintable():
        raise BadRequest(f"{name} must be at most {max_length} printable characters", code=f"invalid_{name}",
                         param=name)
    return value
