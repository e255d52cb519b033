"""Usage limits (contract §2): requests per minute, memory actions per month, tokens per day,
per project and per key name, answered 429 ``usage_limit_exceeded`` with ``current``, ``limit``
and ``Retry-After``.

What counts (docs/configuration.md, "Usage limits", says the same to operators):

* a **request**: every authenticated call to an API route, whatever its answer;
* a **memory action** (the contract's memory.create/update/delete/search/list/get): one per call
  to a ``/memories`` route (list, create, search, superseded, recalls, get, update, delete,
  restore, a memory's claims), and for a proxied turn one ``memory.search`` when it recalls and
  one ``memory.create`` when it learns (``learn`` not false), however many memories the
  extractor ends up writing: a turn is refused before it runs, so it is charged for what it asks;
* **tokens**: the provider's own ``usage`` (input + output) of each proxied answer, added after
  the answer (streamed too); a turn is refused once the day's count has reached the limit.

Each limit is a fixed window (UTC minute, day, calendar month) counted in the document store
(``DocumentStore.charge``), so every gateway sharing the store shares the counts, and one
atomic charge per check keeps "exactly ``limit`` successes" true under any concurrency. A
request's charges (project and key counters together) go in one call: on Redis one round trip,
on SQLite one short transaction; a refused request adds to no counter.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from gateway.auth import Principal
from gateway.config import ProjectConfig, UsageLimits
from gateway.errors import GatewayError
from gateway.store.base import Charge, DocumentStore

log = logging.getLogger("gateway.usage")

# The REST family whose calls are memory actions (relative to /api/v1).
MEMORY_ROUTES = "/memories"

_MINUTE, _DAY = 60, 86_400


class UsageLimitExceeded(GatewayError):
    status = 429
    code = "usage_limit_exceeded"

    def __init__(self, message: str, *, current: int, limit: int, retry_after: int) -> None:
        super().__init__(message, current=current, limit=limit)
        self.headers = {"Retry-After": str(retry_after)}


@dataclass(frozen=True)
class _Window:
    start: float
    end: float


def _minute(now: float) -> _Window:
    start = now - now % _MINUTE
    return _Window(start, start + _MINUTE)


def _day(now: float) -> _Window:
    start = now - now % _DAY  # epoch days are UTC days
    return _Window(start, start + _DAY)


def _month(now: float) -> _Window:
    moment = datetime.fromtimestamp(now, UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return _Window(start.timestamp(), end.timestamp())


@dataclass(frozen=True)
class _Kind:
    field: str  # the UsageLimits field
    window: Callable[[float], _Window]
    what: str  # for the message


REQUESTS = _Kind("requests_per_minute", _minute, "requests per minute")
MEMORY_ACTIONS = _Kind("memory_actions_per_month", _month, "memory actions per month")
TOKENS = _Kind("tokens_per_day", _day, "tokens per day")


def tokens_of(usage_holder: Any) -> int:
    """Input + output tokens of a provider answer (or stream event) in any of the surfaces' shapes:
    OpenAI ``usage.prompt_tokens/completion_tokens``, Responses and Anthropic
    ``usage.input_tokens/output_tokens``, Gemini ``usageMetadata``; 0 when it has none."""
    if not isinstance(usage_holder, dict):
        return 0
    used_in, used_out = _usage_parts(usage_holder)
    return used_in + used_out


def _usage_parts(holder: dict[str, Any]) -> tuple[int, int]:
    usage = holder.get("usage")
    if not isinstance(usage, dict):
        for nested in ("response", "message"):  # Responses' and Anthropic's stream events
            inner = holder.get(nested)
            if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
                usage = inner["usage"]
                break
    if isinstance(usage, dict):
        used_in = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
        used_out = _count(usage.get("completion_tokens", usage.get("output_tokens")))
        return (used_in, used_out) if used_in or used_out else (_count(usage.get("total_tokens")), 0)
    metadata = holder.get("usageMetadata")
    if isinstance(metadata, dict):
        used_in, used_out = _count(metadata.get("promptTokenCount")), _count(metadata.get("candidatesTokenCount"))
        return (used_in, used_out) if used_in or used_out else (_count(metadata.get("totalTokenCount")), 0)
    return 0, 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class StreamTokens:
    """The tokens a provider's event stream reports, read off the bytes as they are relayed.
    Counts are cumulative in every format (Anthropic's input in message_start and output in
    message_delta, Gemini's usageMetadata on each chunk), so the largest seen of each is kept."""

    def __init__(self) -> None:
        self._pending = b""
        self._in = self._out = 0

    @property
    def tokens(self) -> int:
        return self._in + self._out

    def feed(self, chunk: bytes) -> None:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:") and b"sage" in line:  # usage / usageMetadata: skip the rest unparsed
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(event, dict):
                    used_in, used_out = _usage_parts(event)
                    self._in, self._out = max(self._in, used_in), max(self._out, used_out)


class UsageLimiter:
    """The configured limits of every project, checked and counted in the store."""

    def __init__(self, store: DocumentStore, projects: Sequence[ProjectConfig],
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._limits = {project.id: project.limits for project in projects
                        if _any_set(project.limits) or any(_any_set(k) for k in project.limits.keys.values())}

    def _scopes(self, principal: Principal) -> list[tuple[str, str, UsageLimits]]:
        """(counter prefix, who for the message, limits) that apply to this key's requests."""
        project = self._limits.get(principal.project_id)
        if project is None:
            return []
        scopes: list[tuple[str, str, UsageLimits]] = [("project", f"project {principal.project_id!r}", project)]
        per_key = project.keys.get(principal.key_name)
        if per_key is not None:
            scopes.append((f"key:{principal.key_name}", f"key {principal.key_name!r}", per_key))
        return scopes

    async def admit(self, principal: Principal, path: str, *, proxy: bool) -> None:
        """Before a request's handler runs: count the request (and a /memories call's memory
        action), and on a ``proxy`` route check that the day's tokens are not used up."""
        kinds: list[tuple[_Kind, int]] = [(REQUESTS, 1)]
        if path == MEMORY_ROUTES or path.startswith(MEMORY_ROUTES + "/"):
            kinds.append((MEMORY_ACTIONS, 1))
        if proxy:
            kinds.append((TOKENS, 0))
        await self._charge(principal, kinds)

    async def memory_actions(self, principal: Principal, actions: int) -> None:
        """A proxied turn's memory actions (its recall and learning), before it runs."""
        if actions:
            await self._charge(principal, [(MEMORY_ACTIONS, actions)])

    async def add_tokens(self, principal: Principal, tokens: int) -> None:
        """After an answer: its tokens count, limit or not (they were spent)."""
        if tokens:
            await self._charge(principal, [(TOKENS, tokens)], enforce=False)

    def counting_stream(self, principal: Principal, stream: AsyncIterator[bytes],
                        estimate: Callable[[], int] | None = None) -> AsyncIterator[bytes]:
        """``stream`` relayed as it is, its tokens added once it ends (however it ends). A stream
        that reports no usage (OpenAI's Chat Completions send it only when the client asks with
        ``stream_options.include_usage``) is counted by ``estimate`` instead: unreported tokens
        must not be free under a token limit."""
        if not self._scopes(principal):
            return stream
        return self._counted(principal, stream, estimate)

    async def _counted(self, principal: Principal, stream: AsyncIterator[bytes],
                       estimate: Callable[[], int] | None) -> AsyncIterator[bytes]:
        seen = StreamTokens()
        try:
            async for chunk in stream:
                seen.feed(chunk)
                yield chunk
        finally:
            # Shielded: a client that leaves mid-stream still spent what the provider reported.
            with anyio.CancelScope(shield=True):
                close = getattr(stream, "aclose", None)
                if close is not None:  # the relay closes the provider's stream now, not when collected
                    await close()
                try:
                    tokens = seen.tokens or (estimate() if estimate is not None else 0)
                    await self.add_tokens(principal, tokens)
                except Exception:
                    log.warning("the tokens of a streamed turn could not be counted (storage failed)")

    async def _charge(self, principal: Principal, kinds: list[tuple[_Kind, int]], *, enforce: bool = True) -> None:
        scopes = self._scopes(principal)
        if not scopes:
            return
        now = self._clock()
        charges: list[Charge] = []
        described: list[tuple[str, _Kind, _Window]] = []
        for prefix, who, limits in scopes:
            for kind, by in kinds:
                limit = getattr(limits, kind.field)
                if limit is None:
                    continue
                window = kind.window(now)
                charges.append(Charge(f"{prefix}:{kind.field}:{int(window.start)}", by,
                                      limit if enforce else None, window.end))
                described.append((who, kind, window))
        if not charges:
            return
        charged = await self._store.charge(principal.project_id, charges)
        if charged.refused is None:
            return
        who, kind, window = described[charged.refused]
        limit = charges[charged.refused].limit
        assert limit is not None
        current = charged.counts[charged.refused]
        raise UsageLimitExceeded(f"usage limit reached for {who}: {current} of {limit} {kind.what}",
                                 current=current, limit=limit, retry_after=max(1, math.ceil(window.end - now)))


def _any_set(limits: UsageLimits) -> bool:
    return any(getattr(limits, name) is not None for name in UsageLimits.model_fields)
