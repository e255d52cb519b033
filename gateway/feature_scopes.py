"""What a proxied turn may read and write, by the scopes of the key that sent it.

A chat turn does more than call the provider: it replays the subject's history, recalls
their memories, loads their agent state, and afterwards logs the turn and learns from
it. Each of those reads or writes a REST resource that has a scope of its own, so a
turn needs that scope too, as if it had called the route:

    mnx.history (replay)       history:read
    mnx.log (store the turn)   history:write
    mnx.recall                 memories:search
    mnx.learn (true, "force")  memories:write
    mnx.state (load)           state:read
    mnx.profile                profiles:read
    mnx.records.recall         records:read
    mnx.records.learn          records:write

(``*``, ``<resource>:*`` and the coarse ``read``/``write`` scopes grant them as they grant
the routes.) The profile fields learning writes come with ``memories:write``, as the
memories they are learned with: each one names its memory, and learning never replaces
a value set through ``PATCH /profiles``. The scoped system prompt and the memory policy
are the project's own configuration and come with the route's ``chat:write``.

A feature the caller turns on (in ``mnx`` or an ``x-mnx-*`` header) without the scope is
a 403 naming the scope, and nothing is read, forwarded or stored. A feature on only
because gateway.yaml's defaults turn it on is left off for a key without its scope: a
``chat:write``-only key is a plain proxy with the project's prompts, not a 403 on every
request.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.auth import Principal
from gateway.errors import Forbidden
from gateway.options import MnxOptions

# option -> the scope it needs, when the option is on
_FEATURE_SCOPES = {"history": "history:read", "log": "history:write", "recall": "memories:search",
                   "learn": "memories:write", "state": "state:read", "profile": "profiles:read"}


def _is_on(options: MnxOptions, feature: str) -> bool:
    if feature == "state":
        return options.state is not None and options.state.load
    return getattr(options, feature) is not False


def authorize_features(options: MnxOptions, principal: Principal) -> MnxOptions:
    """``options`` with the defaulted features this key may not use turned off; raises
    Forbidden for a requested one."""
    turned_off: dict[str, Any] = {}
    for feature, scope in _FEATURE_SCOPES.items():
        if not _is_on(options, feature) or principal.allows(scope):
            continue
        if feature in options.given:
            raise Forbidden(f"this API key lacks the '{scope}' scope that mnx.{feature} needs",
                            param=f"mnx.{feature}")
        turned_off[feature] = None if feature == "state" else False
    _authorize_records(options, principal)
    return dataclasses.replace(options, **turned_off) if turned_off else options


def _authorize_records(options: MnxOptions, principal: Principal) -> None:
    """``mnx.records`` is only ever on because the caller asked: a missing scope is a 403."""
    records = options.records
    if records is None:
        return
    for part, on, scope in (("recall", records.recall, "records:read"),
                            ("learn", records.learn is not False, "records:write")):
        if on and not principal.allows(scope):
            raise Forbidden(f"this API key lacks the '{scope}' scope that mnx.records.{part} needs",
                            param=f"mnx.records.{part}")
