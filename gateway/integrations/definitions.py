"""The integration object (contract §16): what a create or update body may set, checked field by
field before anything is stored, and the public shape, which never holds a secret.

The two secrets (``auth_secret``, sent to the endpoint; ``webhook_secret``, which signs pushed
values) are kept under the document's ``secrets`` and are write-only: answers only say whether
they are set (``has_auth_secret``, ``has_webhook_secret``). An empty string removes one.
"""

from __future__ import annotations

import json
import re
import secrets as token_source
from collections.abc import Mapping
from typing import Any

from gateway.clock import now_iso
from gateway.config import IntegrationsConfig
from gateway.errors import BadRequest
from gateway.integrations import output_map, templates
from gateway.integrations.addresses import check_endpoint_url
from gateway.store import Collection
from gateway.validation import Body, addressable_id, invalid

INTEGRATIONS = Collection("integrations")

MODES = ("pull", "webhook", "both")
SCOPES = ("project", "subject", "chat")
METHODS = ("GET", "POST", "PUT", "PATCH")
AUTH_TYPES = ("none", "bearer", "api_key_header", "basic")

MAX_ID_LENGTH = 128
MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 4096
MAX_TEMPLATE_ENTRIES = 50
MAX_TEMPLATE_BYTES = 16_384
MAX_CACHE_TTL_SECONDS = 30 * 24 * 3600
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Set by the gateway for the call itself (pinning, framing); a template may not replace them.
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "upgrade",
                     "te", "trailer", "keep-alive", "proxy-authorization", "proxy-connection"}

WRITABLE = ("integration_id", "name", "description", "mode", "scope", "endpoint_url", "method", "timeout_ms",
            "cache_ttl_seconds", "allow_live_fetch", "headers_template", "query_template", "body_template",
            "output_map", "auth_type", "auth_config", "auth_secret", "webhook_secret", "is_active")
# Fields of the public shape a client may send back unchanged (a read, edited, written back).
_READ_ONLY = ("project_id", "created_at", "updated_at", "has_auth_secret", "has_webhook_secret")

DEFAULTS: dict[str, Any] = {
    "description": "", "scope": "project", "endpoint_url": None, "method": "GET", "timeout_ms": 5000,
    "cache_ttl_seconds": 300, "allow_live_fetch": False, "headers_template": {}, "query_template": {},
    "body_template": {}, "auth_type": "none", "auth_config": {}, "is_active": True,
}


def to_api(integration: dict[str, Any]) -> dict[str, Any]:
    """The public shape: everything but the secrets, and whether each is set."""
    public = {key: value for key, value in integration.items() if key != "secrets"}
    kept = integration.get("secrets", {})
    return {**public, "has_auth_secret": bool(kept.get("auth")), "has_webhook_secret": bool(kept.get("webhook"))}


def new_integration(project_id: str, raw: dict[str, Any], settings: IntegrationsConfig,
                    existing: dict[str, Any] | None) -> dict[str, Any]:
    """The integration a create body describes (a re-posted id replaces that integration's
    definition and keeps its secrets unless new ones are given)."""
    body = _body(raw)
    integration_id = (addressable_id(body.string("integration_id"), MAX_ID_LENGTH)
                      or "int_" + token_source.token_hex(10))
    stamp = now_iso()
    base = {"integration_id": integration_id, "project_id": project_id, **DEFAULTS,
            "secrets": dict(existing["secrets"]) if existing else {},
            "created_at": existing["created_at"] if existing else stamp}
    for required in ("name", "mode", "output_map"):
        if body.value(required) is None:
            raise BadRequest(f"{required} is required", code=f"{required}_required", param=required)
    integration = _apply(base, body, settings, previous=existing)
    integration["updated_at"] = stamp
    return integration


def updated_integration(current: dict[str, Any], raw: dict[str, Any], settings: IntegrationsConfig) -> dict[str, Any]:
    """``current`` with the fields a PATCH body sets (absent and null ones unchanged)."""
    body = _body(raw)
    given_id = body.value("integration_id")
    if given_id is not None and given_id != current["integration_id"]:
        raise BadRequest("integration_id cannot be changed", code="invalid_integration_id", param="integration_id")
    integration = _apply({**current, "secrets": dict(current.get("secrets", {}))}, body, settings, previous=current)
    integration["updated_at"] = now_iso()
    return integration


def _body(raw: dict[str, Any]) -> Body:
    unknown = sorted(set(raw) - set(WRITABLE) - set(_READ_ONLY))
    if unknown:
        # A misspelt field (auth_secrets) must not be dropped silently, least of all a secret.
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", code="unknown_field", param=unknown[0])
    return Body(raw)


# What decides where the auth secret goes and in which form: changing any of them with a secret
# already stored needs the secret again.
_SECRET_ROUTE = ("endpoint_url", "method", "auth_type", "auth_config", "headers_template", "query_template",
                 "body_template")
# The placeholders each scope's values may depend on: values cached for the whole project must
# not hold one subject's data (every subject's prompt would read them, and no erasure reaches them).
_SCOPE_PLACEHOLDERS = {"project": {"project_id", "secret"}, "subject": {"project_id", "secret", "subject_id"},
                       "chat": {"project_id", "secret", "subject_id", "chat_id"}}
# Shorter secrets are refused: redaction and the blanking of echoed secrets would garble ordinary text.
MIN_SECRET_LENGTH = 8


def _apply(integration: dict[str, Any], body: Body, settings: IntegrationsConfig, *,
           previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate every field ``body`` sets into ``integration``, then the rules across fields."""
    out = dict(integration)
    if body.value("name") is not None:
        out["name"] = body.string("name", required=True, max_length=200, strip=True)
    if body.value("description") is not None:
        out["description"] = body.string("description", max_length=2000)
    for field, allowed in (("mode", MODES), ("scope", SCOPES), ("auth_type", AUTH_TYPES)):
        if body.value(field) is not None:
            out[field] = body.choice(field, allowed)
    if body.value("method") is not None:
        method = body.string("method", max_length=10)
        if method is None or method.upper() not in METHODS:
            raise body.invalid("method", f"one of {', '.join(METHODS)}")
        out["method"] = method.upper()
    if body.value("endpoint_url") is not None:
        url = body.string("endpoint_url", max_length=MAX_URL_LENGTH, strip=True)
        out["endpoint_url"] = url or None
    if body.value("timeout_ms") is not None:
        out["timeout_ms"] = body.integer("timeout_ms", default=None, minimum=100, maximum=120_000)
    if body.value("cache_ttl_seconds") is not None:
        out["cache_ttl_seconds"] = body.integer("cache_ttl_seconds", default=None, minimum=0,
                                                maximum=MAX_CACHE_TTL_SECONDS)
    for flag in ("allow_live_fetch", "is_active"):
        if body.value(flag) is not None:
            out[flag] = body.flag(flag, default=bool(out[flag]))
    for field in ("headers_template", "query_template"):
        if body.value(field) is not None:
            out[field] = _flat_template(body, field)
    if body.value("body_template") is not None:
        out["body_template"] = _body_template(body)
    if body.value("output_map") is not None:
        out["output_map"] = output_map.validate(body.value("output_map"))
    if body.value("auth_config") is not None:
        out["auth_config"] = _auth_config(body)
    for field, slot in (("auth_secret", "auth"), ("webhook_secret", "webhook")):
        if body.value(field) is not None:
            secret = body.string(field, max_length=MAX_SECRET_LENGTH)
            if secret and len(secret) < MIN_SECRET_LENGTH:
                raise body.invalid(field, f"at least {MIN_SECRET_LENGTH} characters (or empty, to remove it)")
            if secret:
                out["secrets"][slot] = secret
            else:
                out["secrets"].pop(slot, None)
    _check_together(out, settings)
    if (out["secrets"].get("auth") and body.value("auth_secret") is None and previous is not None
            and any(out.get(field) != previous.get(field) for field in _SECRET_ROUTE)):
        # Else a key that may edit integrations but was never told the secret could send it
        # elsewhere (another host, a path that echoes, a template that spells it out) and read
        # it back with the next pull.
        changed = [field for field in _SECRET_ROUTE if out.get(field) != previous.get(field)]
        raise BadRequest(f"changing {', '.join(changed)} needs the auth_secret again", code="auth_secret_required",
                         param="auth_secret")
    return out


def _check_together(integration: dict[str, Any], settings: IntegrationsConfig) -> None:
    placeholders = templates.used([integration.get(field) for field in
                                   ("endpoint_url", "headers_template", "query_template", "body_template")])
    beyond = sorted(placeholders - _SCOPE_PLACEHOLDERS[integration["scope"]])
    if beyond:
        sharers = "subject" if integration["scope"] == "project" else "chat"
        raise BadRequest(f"a {integration['scope']}-scoped integration cannot use {{{{{beyond[0]}}}}}: its values "
                         f"are shared by every {sharers} of its scope", code="invalid_template", param="scope")
    if integration["mode"] in ("pull", "both"):
        if not integration["endpoint_url"]:
            raise BadRequest("endpoint_url is required for mode pull or both", code="endpoint_url_required",
                             param="endpoint_url")
    if integration["endpoint_url"]:
        check_endpoint_url(integration["endpoint_url"], settings)
    if integration["auth_type"] != "none" and not integration["secrets"].get("auth"):
        raise BadRequest(f"auth_type {integration['auth_type']} needs an auth_secret", code="auth_secret_required",
                         param="auth_secret")
    if integration["auth_type"] == "basic" and not integration["auth_config"].get("username"):
        raise BadRequest("auth_type basic needs auth_config.username", code="invalid_auth_config",
                         param="auth_config.username")


def _flat_template(body: Body, field: str) -> dict[str, Any]:
    """Header or query template: names to strings, numbers or booleans."""
    value = body.obj(field) or {}
    if len(value) > MAX_TEMPLATE_ENTRIES:
        raise invalid(field, f"an object of at most {MAX_TEMPLATE_ENTRIES} entries", "invalid_template")
    for name, item in value.items():
        if field == "headers_template" and (not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS):
            raise BadRequest(f"headers_template: {name!r} is not a header a template may set", code="invalid_template",
                             param=f"{field}.{name}")
        if field == "query_template" and not 0 < len(name) <= 256:
            raise invalid(f"{field}.{name}", "a parameter name of 1-256 characters", "invalid_template")
        if not isinstance(item, (str, int, float, bool)):
            raise invalid(f"{field}.{name}", "a string, number or boolean", "invalid_template")
        if isinstance(item, str) and (len(item) > 8192 or (field == "headers_template" and not item.isprintable())):
            raise invalid(f"{field}.{name}", "printable text of at most 8192 characters", "invalid_template")
    templates.check(value, field)
    return value


def _body_template(body: Body) -> dict[str, Any]:
    value = body.obj("body_template") or {}
    if len(json.dumps(value)) > MAX_TEMPLATE_BYTES:
        raise invalid("body_template", f"at most {MAX_TEMPLATE_BYTES} bytes of JSON", "invalid_template")
    templates.check(value, "body_template")
    return value


def _auth_config(body: Body) -> dict[str, Any]:
    value = body.obj("auth_config") or {}
    unknown = sorted(set(value) - {"header_name", "username"})
    if unknown:
        raise BadRequest(f"auth_config takes header_name and username only, not {', '.join(unknown)}",
                         code="invalid_auth_config", param="auth_config")
    header = value.get("header_name")
    if header is not None and (not isinstance(header, str) or not _HEADER_NAME.match(header)
                               or header.lower() in _RESERVED_HEADERS):
        raise invalid("auth_config.header_name", "an HTTP header name", "invalid_auth_config")
    username = value.get("username")
    if username is not None and (not isinstance(username, str) or len(username) > 256 or ":" in username
                                 or not username.isprintable()):
        raise invalid("auth_config.username", "printable text of at most 256 characters without ':'",
                      "invalid_auth_config")
    return {key: item for key, item in value.items() if item is not None}
