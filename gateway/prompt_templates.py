"""Prompt templates: ``{{var}}`` tokens in a system prompt, filled from integration values (contract §11).

A prompt's ``template`` says where each variable comes from::

    {"enabled": true,
     "variables": {"plan": {"source": "integration", "integration_id": "int_crm", "key": "plan",
                            "live_fetch": false, "default": "free"}}}

Rendering is substitution and nothing else: a token is ``{{`` a name ``}}`` (letters, digits,
``_``, ``-``, ``.``), replaced by the value's text (JSON for a number, list or object); no
expression, filter or code is ever evaluated, and a value's own braces are not rendered again.
A variable with no value (unknown, not declared, its integration unavailable or without that
key) renders its ``default``, or nothing; ``mnx.explain`` lists them.

Values come from the integration cache (gateway/integrations/values.py); ``live_fetch: true``
lets a cache miss fetch now, when the integration allows live fetches. Rendering is off unless
the operator turns it on (``prompts.templates_enabled``, the contract's
``MNX_PROMPT_TEMPLATE_RENDER_ENABLED``): a prompt's text is then sent exactly as stored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

TOKEN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]{0,63})\s*\}\}")
# A rendered value longer than this is cut: a prompt must not grow without bound from a value.
MAX_VALUE_CHARS = 4000
# All values rendered into one turn's prompts, together: past it tokens render empty (and explain
# says so), or a prompt repeating one token 20,000 times would grow 800-fold.
MAX_RENDERED_CHARS = 16_000


class ValueSource(Protocol):
    async def values(self, project_id: str, integration_id: str, *, subject_id: str | None, chat_id: str | None,
                     live_fetch: bool) -> dict[str, Any] | None: ...


@dataclass
class Rendering:
    """What rendering a turn's prompts did, for ``mnx.explain``."""

    # Variables rendered from a value.
    filled: list[str] = field(default_factory=list)
    # Variables with no value: rendered as their default (or nothing).
    unresolved: list[str] = field(default_factory=list)
    # Characters rendered so far; past MAX_RENDERED_CHARS the rest render empty.
    rendered_chars: int = 0
    cut: bool = False

    def report(self) -> dict[str, Any] | None:
        if not (self.filled or self.unresolved):
            return None
        report: dict[str, Any] = {"filled": sorted(set(self.filled)), "unresolved": sorted(set(self.unresolved))}
        if self.cut:
            report["cut_at_chars"] = MAX_RENDERED_CHARS
        return {"template_variables": report}

    def spend(self, text: str) -> str:
        """``text`` if the turn's rendering allowance holds it, else nothing."""
        if self.rendered_chars + len(text) > MAX_RENDERED_CHARS:
            self.cut = True
            return ""
        self.rendered_chars += len(text)
        return text


def _as_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text[:MAX_VALUE_CHARS]


def _declared(prompt: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The prompt's variables when its template is enabled (None: render nothing)."""
    template = prompt.get("template")
    if not isinstance(template, dict) or template.get("enabled") is not True:
        return None
    variables = template.get("variables")
    if not isinstance(variables, dict):
        return {}
    return {name: spec for name, spec in variables.items() if isinstance(name, str) and isinstance(spec, dict)}


async def _value_of(spec: dict[str, Any], source: ValueSource, project_id: str, subject_id: str,
                    chat_id: str, fetched: dict[tuple[str, bool], dict[str, Any] | None], allow_live: bool) -> Any:
    integration_id, key = spec.get("integration_id"), spec.get("key")
    if spec.get("source", "integration") != "integration" or not isinstance(integration_id, str) or \
            not isinstance(key, str):
        return None
    live = allow_live and spec.get("live_fetch") is True
    # One read (or fetch) per integration per turn, however many variables use it.
    if (integration_id, live) not in fetched:
        fetched[(integration_id, live)] = await source.values(project_id, integration_id, subject_id=subject_id,
                                                              chat_id=chat_id, live_fetch=live)
    values = fetched[(integration_id, live)]
    return values.get(key) if values else None


async def render(prompts: list[dict[str, Any]], source: ValueSource | None, *, project_id: str, subject_id: str,
                 chat_id: str, allow_live: bool = True) -> tuple[list[dict[str, Any]], Rendering]:
    """The prompts with their templates rendered (copies; the stored ones are untouched).

    ``source`` None: no values (a key without ``integrations:read`` renders defaults only);
    ``allow_live`` False: cached values only, nothing fetched or written (``mnx.explain``)."""
    rendering = Rendering()
    fetched: dict[tuple[str, bool], dict[str, Any] | None] = {}
    rendered = []
    for prompt in prompts:
        variables = _declared(prompt)
        text = prompt.get("prompt_text") or ""
        if variables is None or "{{" not in text:
            rendered.append(prompt)
            continue
        replacements: dict[str, str] = {}
        for name in dict.fromkeys(TOKEN.findall(text)):
            spec = variables.get(name)
            value = (await _value_of(spec, source, project_id, subject_id, chat_id, fetched, allow_live)
                     if spec and source is not None else None)
            if value is None:
                rendering.unresolved.append(name)
                default = spec.get("default") if spec else None
                replacements[name] = _as_text(default) if default is not None else ""
            else:
                rendering.filled.append(name)
                replacements[name] = _as_text(value)
        # One pass over the stored text: a value that itself holds "{{x}}" stays as it is.
        rendered.append({**prompt, "prompt_text": TOKEN.sub(
            lambda match, found=replacements: rendering.spend(found[match.group(1)]), text)})
    return rendered, rendering
