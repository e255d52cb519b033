"""Checks on a pushed webhook: its signature, its age, and whether it was seen before.

The signature is the lowercase hex HMAC-SHA256, keyed by the integration's webhook_secret,
of ``"<x-mnx-webhook-timestamp>.<raw body>"`` (an optional ``sha256=`` prefix is accepted).
The raw body is checked first. The mnexium Python SDK signs ``json.dumps(payload)`` (``", "``
and ``": "`` separators, ASCII escapes) but sends httpx's compact UTF-8 JSON, so a body that
fails is parsed and checked once more as ``json.dumps`` writes it, keys in the same order
(contract §16, "Gotcha"). Both comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from gateway.errors import BadRequest, GatewayError
from gateway.store import Collection
from gateway.validation import InvalidJson, parse_json

# Event ids already applied, per integration, kept this long.
SEEN_EVENTS = Collection("integration_webhook_events", indexes=(("integration_id",),), expiring=True)
EVENT_MEMORY_SECONDS = 24 * 3600
MAX_EVENT_ID_LENGTH = 256


class WebhookRejected(GatewayError):
    """401: the push is not the integration's (bad signature) or not fresh (stale timestamp)."""

    status = 401


def timestamp_of(header: str | None) -> int:
    if not header:
        raise BadRequest("x-mnx-webhook-timestamp is required (unix seconds)", code="webhook_timestamp_required",
                         param="x-mnx-webhook-timestamp")
    try:
        return int(header.strip())
    except ValueError:
        raise BadRequest("x-mnx-webhook-timestamp must be unix seconds", code="invalid_webhook_timestamp",
                         param="x-mnx-webhook-timestamp") from None


def check_fresh(timestamp: int, now: float, tolerance_seconds: int) -> None:
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookRejected(f"the webhook timestamp is more than {tolerance_seconds} s from the gateway's clock",
                              code="stale_timestamp")


def _signature_of(header: str | None) -> str:
    if not header or not header.strip():
        raise BadRequest("x-mnx-webhook-signature is required", code="webhook_signature_required",
                         param="x-mnx-webhook-signature")
    value = header.strip()
    if value.lower().startswith("sha256="):
        value = value.split("=", 1)[1]
    return value.lower()


def _sign(secret: str, timestamp_header: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp_header.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp_header: str, signature_header: str | None, raw_body: bytes) -> Any:
    """The parsed body of a push signed with ``secret``; WebhookRejected if the signature matches
    neither the raw body nor its Python re-serialization, a 400 if the signed body is not JSON."""
    given = _signature_of(signature_header).encode()
    stamp = timestamp_header.strip()
    if hmac.compare_digest(_sign(secret, stamp, raw_body).encode(), given):
        return _parsed(raw_body)
    try:
        parsed = parse_json(raw_body)
    except InvalidJson:
        raise WebhookRejected("the webhook signature does not match", code="invalid_signature") from None
    # The form the mnexium SDK signed: json.dumps defaults (", " / ": ", ASCII escapes), same key order.
    if hmac.compare_digest(_sign(secret, stamp, json.dumps(parsed).encode()).encode(), given):
        return parsed
    raise WebhookRejected("the webhook signature does not match", code="invalid_signature")


def _parsed(raw_body: bytes) -> Any:
    if not raw_body.strip():
        return {}
    try:
        return parse_json(raw_body)
    except InvalidJson as error:
        raise BadRequest(f"webhook body is not usable JSON: {error}", code="invalid_json_body") from None


def seen_event_id(integration_id: str, event_id: str) -> str:
    return f"{len(integration_id)}:{integration_id}:{event_id}"
