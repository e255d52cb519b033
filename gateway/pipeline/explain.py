"""Explain (dry run): what a turn would send the provider, and where each part came from.

``mnx.explain: true`` (or the header ``x-mnx-explain: true``) runs a turn up to the moment it
would be forwarded: the body is validated, the options and scopes resolved, every context stage
run as for a real turn. Then, instead of calling the provider, the answer is the request exactly
as the provider would get it, with each stage's contribution, its token count and its time. The
provider is not called and nothing is written: no history, no learn or summary job, no recall
event (the stages' writes run only for answered turns).

The first thing a team asks when the model says something odd is "what did it see?": this is
the answer, per stage. ``mnx-gateway explain`` (gateway/cli.py) does the same for a request file.
"""

from __future__ import annotations

from typing import Any

from gateway.pipeline.context import AssembledContext, StageReport
from gateway.redaction import redact
from gateway.summaries.tokens import count_text, count_tokens, tokenizer_name


def _stage_part(report: StageReport, context: AssembledContext, model: str | None) -> dict[str, Any]:
    layer = report.layer
    text = layer.system_text if layer is not None else None
    messages = list(layer.messages) if layer is not None else []
    # Where its text went: the gateway's system message, or (cache mode, a volatile stage) the
    # latest user message; its messages (history) go between the system message and the request's.
    placement: str | None = None
    if text:
        placement = "latest user message" if context.volatile_text is not None and report.volatile else "system"
    return {
        "stage": report.name,
        "contributed": bool(text or messages),
        "text_placement": placement,
        "text": text,
        "messages": len(messages),
        "tokens": (count_text(text, model) if text else 0) + sum(count_tokens(m, model) for m in messages),
        "ms": round(report.milliseconds, 3),
        **(dict(layer.report) if layer is not None and layer.report else {}),
    }


def explanation(*, surface: str, provider: str, model: str, native: bool, url: str | None,
                request: dict[str, Any], context: AssembledContext, request_messages: list[dict[str, Any]],
                options: dict[str, Any], timings: dict[str, float], secrets: tuple[str | None, ...]) -> dict[str, Any]:
    """The answer to an explained turn (docs/features.md, Explain)."""
    reports = context.stage_reports or []
    stages = [_stage_part(report, context, model) for report in reports]
    context_tokens = sum(stage["tokens"] for stage in stages)
    own_tokens = sum(count_tokens(m, model) for m in request_messages)
    return {
        "object": "mnx.explain",
        "surface": surface,
        "provider": provider,
        "model": model,
        # "native": sent as below to the provider's own API; "litellm": LiteLLM translates this body
        # into the provider's format first.
        "via": "native" if native else "litellm",
        "url": redact(url, secrets) if url else None,
        "request": request,
        "stages": stages,
        "tokens": {"context": context_tokens, "request_messages": own_tokens, "total": context_tokens + own_tokens,
                   "counted_with": tokenizer_name(model)},
        "timing_ms": {name: round(value, 3) for name, value in timings.items()},
        "options": options,
    }
