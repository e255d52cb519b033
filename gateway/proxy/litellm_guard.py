"""LiteLLM's process-wide callback lists, fixed once LiteLLM is loaded.

LiteLLM keeps its loggers in module-level lists (``litellm.callbacks``,
``success_callback``...) that any call may extend: a ``callbacks`` argument on one
request appends to them, and every later call of every tenant then runs through that
logger, prompts, recalled memories and keys included. The gateway gives LiteLLM no
such argument (``body_fields``); on top of that, the lists are fixed here, so no code
path (a plugin, a LiteLLM release that starts reading another argument) can add a
logger after startup.

A change after startup is ignored and logged, not raised: LiteLLM registers entries of
its own from some lazily imported modules (a module-level ``Cache`` object appends
"cache"), and a request must not fail because of that. The modules known to do so are
imported before the lists are fixed (``IMPORTED_BEFORE_FREEZING``).
"""

from __future__ import annotations

import importlib
import logging
import types
from typing import Any

log = logging.getLogger("gateway.litellm")

# Every module-level list LiteLLM dispatches log events to.
CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                  "_async_failure_callback", "input_callback", "_async_input_callback", "service_callback",
                  "audit_log_callbacks")
# LiteLLM modules that register callbacks of their own when first imported (on the first
# Gemini request, for this one): imported at startup, so their entries are part of the
# fixed lists rather than a change refused mid-request.
IMPORTED_BEFORE_FREEZING = ("litellm.llms.vertex_ai.context_caching.vertex_ai_context_caching",)

_reported: set[str] = set()


def _ignored(what: str) -> None:
    if what not in _reported:  # once per kind of attempt: LiteLLM may repeat it on every call
        _reported.add(what)
        log.warning("ignored a change to LiteLLM's callbacks after startup (%s): they are fixed", what)


class FrozenCallbackList(list[Any]):
    """A list LiteLLM can read and iterate as before; every change is ignored."""

    def __init__(self, name: str, entries: list[Any]) -> None:
        super().__init__(entries)
        self._name = name

    def _change(self, operation: str) -> None:
        _ignored(f"litellm.{self._name}.{operation}")

    def append(self, *_: Any) -> None:
        self._change("append")

    def extend(self, *_: Any) -> None:
        self._change("extend")

    def insert(self, *_: Any) -> None:
        self._change("insert")

    def remove(self, *_: Any) -> None:
        self._change("remove")

    def pop(self, *_: Any) -> None:
        self._change("pop")

    def clear(self) -> None:
        self._change("clear")

    def sort(self, *_: Any, **__: Any) -> None:
        self._change("sort")

    def reverse(self) -> None:
        self._change("reverse")

    def __setitem__(self, *_: Any) -> None:
        self._change("__setitem__")

    def __delitem__(self, *_: Any) -> None:
        self._change("__delitem__")

    def __iadd__(self, _: Any) -> FrozenCallbackList:  # type: ignore[misc]
        self._change("__iadd__")
        return self

    def __imul__(self, _: Any) -> FrozenCallbackList:  # type: ignore[misc]
        self._change("__imul__")
        return self


class _GuardedLiteLLM(types.ModuleType):
    """The litellm module, keeping its callback lists once they are fixed."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in CALLBACK_LISTS and self.__dict__.get("_mnx_callbacks_frozen"):
            _ignored(f"litellm.{name} = ...")
            return
        super().__setattr__(name, value)


def freeze_global_callbacks(litellm: types.ModuleType) -> None:
    """Fix LiteLLM's callback lists as they are now (idempotent)."""
    if litellm.__dict__.get("_mnx_callbacks_frozen"):
        return
    for module in IMPORTED_BEFORE_FREEZING:
        importlib.import_module(module)
    for name in CALLBACK_LISTS:
        current = getattr(litellm, name, None)
        if isinstance(current, list):
            setattr(litellm, name, FrozenCallbackList(name, current))
    litellm.__class__ = _GuardedLiteLLM
    litellm._mnx_callbacks_frozen = True  # type: ignore[attr-defined]


def callback_snapshot(litellm: types.ModuleType) -> dict[str, list[str]]:
    """What each callback list holds, as text: for tests and health checks to compare."""
    return {name: [repr(entry) for entry in getattr(litellm, name, [])] for name in CALLBACK_LISTS}
