"""What the rest of the gateway reads of integrations: the values kept for a scope.

A prompt being rendered asks for an integration's values here. The cached ones are used; with
none cached, a live fetch happens only when the caller asks for it *and* the integration allows
it (``allow_live_fetch``). Anything that makes values unavailable (an unknown or inactive
integration, a scope id the call cannot name, a failed fetch) is None, never an exception:
a prompt renders its defaults instead.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import BadRequest
from gateway.integrations.cache import scope_id
from gateway.integrations.service import Integrations, mapped_values


class IntegrationValues:
    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations

    async def values(self, project_id: str, integration_id: str, *, subject_id: str | None, chat_id: str | None,
                     live_fetch: bool) -> dict[str, Any] | None:
        """The values cached for this scope; else, if ``live_fetch`` and the integration allows it,
        fetched now (and cached); else None."""
        integration = await self._integrations.find(project_id, integration_id)
        if integration is None or not integration["is_active"]:
            return None
        try:
            key = scope_id(integration["scope"], subject_id, chat_id)
        except BadRequest:
            return None
        cached = await self._integrations.cache.read(project_id, integration, key)
        if cached is not None:
            return cached
        if not (live_fetch and integration["allow_live_fetch"] and integration["mode"] in ("pull", "both")):
            return None
        started = time.time()
        fetched = await self._integrations.pull(project_id, integration, subject_id, chat_id)
        if not fetched.ok:
            return None
        values = mapped_values(integration, fetched.document)
        await self._integrations.keep_values(project_id, integration, key, values, subject_id, started, merge=False)
        return values
