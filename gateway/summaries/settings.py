"""What ``mnx.summarize`` and ``mnx.summarize_config`` ask for, resolved into one value.

The presets are the contract's (§12.2): above ``start_at_tokens`` of history, older messages
are folded ``chunk_size`` tokens at a time into a rolling summary of about ``summary_target``
tokens, and the last ``keep_recent_messages`` always stay word for word. The contract gives
no chunk sizes: each preset's is about a fifth of its threshold, so a first crossing is folded
in about five summarizer calls and later chunks come one at a time.

``summarize: true`` is "balanced" (the contract leaves it open and suggests it). A
``summarize_config`` turns summarization on whatever ``summarize`` says: Mnexium's own test
client sends ``summarize: "off"`` with a config and expects summaries; its numbers override
the named preset's, or the project default's, or "balanced"'s. The operator's limits
(``within_limits``) apply to every request's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.config import MnxDefaults, SummarizeNumbers
from gateway.validation import Body, bool_from_text


@dataclass(frozen=True)
class SummarizeSettings:
    # The preset the numbers come from ("light", "balanced", "aggressive"), or "custom".
    preset: str
    start_at_tokens: int
    chunk_size: int
    keep_recent_messages: int
    summary_target: int

    def to_payload(self) -> dict[str, Any]:
        return {"preset": self.preset, "start_at_tokens": self.start_at_tokens, "chunk_size": self.chunk_size,
                "keep_recent_messages": self.keep_recent_messages, "summary_target": self.summary_target}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SummarizeSettings:
        return cls(str(payload["preset"]), int(payload["start_at_tokens"]), int(payload["chunk_size"]),
                   int(payload["keep_recent_messages"]), int(payload["summary_target"]))


PRESETS: dict[str, SummarizeSettings] = {
    "light": SummarizeSettings("light", start_at_tokens=70_000, chunk_size=14_000, keep_recent_messages=25,
                               summary_target=1_800),
    "balanced": SummarizeSettings("balanced", start_at_tokens=55_000, chunk_size=11_000, keep_recent_messages=15,
                                  summary_target=1_100),
    "aggressive": SummarizeSettings("aggressive", start_at_tokens=35_000, chunk_size=7_000, keep_recent_messages=8,
                                    summary_target=700),
}

# The bounds gateway.yaml's SummarizeNumbers holds a project default to, for a request's numbers too.
_BOUNDS = {"start_at_tokens": (1, 10_000_000), "chunk_size": (1, 1_000_000), "keep_recent_messages": (0, 10_000),
           "summary_target": (1, 100_000)}


def preset_name(value: Any) -> str | None:
    """The preset a ``summarize`` value names: None for off; ValueError if it is none of them.
    (Headers arrive as text: "true"/"1"/"yes" and any case of a name count too.)"""
    if isinstance(value, str):
        flag = bool_from_text(value.strip())
        value = flag if flag is not None else value.strip().lower()
    if value is False or value == "off":
        return None
    if value is True:
        return "balanced"
    if isinstance(value, str) and value in PRESETS:
        return value
    raise ValueError("not a summarize value")


def _with_numbers(base: SummarizeSettings, numbers: dict[str, int]) -> SummarizeSettings:
    return replace(base, preset="custom", **numbers) if numbers else base


def _request_numbers(read: Body, config: dict[str, Any]) -> dict[str, int]:
    """A request's ``summarize_config`` numbers (unknown keys ignored, as for every mnx option)."""
    numbers: dict[str, int] = {}
    for name, (low, high) in _BOUNDS.items():
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise read.invalid(f"summarize_config.{name}", f"an integer from {low} to {high:,}")
        numbers[name] = value
    return numbers


def _default_numbers(config: SummarizeNumbers | None) -> dict[str, int]:
    if config is None:
        return {}
    return {name: value for name, value in config.model_dump().items() if value is not None}


def parse_summarize(read: Body, defaults: MnxDefaults) -> SummarizeSettings | None:
    """The request's summarization (None: off), from its options, else the project defaults.

    A ``summarize_config`` (even an empty one) turns summarization on; its numbers override
    the preset the request names, else the project's default preset, else "balanced"."""
    asked = read.value("summarize")
    config = read.obj("summarize_config")
    try:
        requested = preset_name(asked) if asked is not None else None
    except ValueError:
        raise read.invalid("summarize", 'true, false, "off", "light", "balanced" or "aggressive"') from None
    default = preset_name(defaults.summarize)
    if config is not None:
        return _with_numbers(PRESETS[requested or default or "balanced"], _request_numbers(read, config))
    if asked is not None:
        return PRESETS[requested] if requested else None
    if defaults.summarize_config is not None:
        return _with_numbers(PRESETS[default or "balanced"], _default_numbers(defaults.summarize_config))
    return PRESETS[default] if default else None


def within_limits(settings: SummarizeSettings, *, min_chunk_tokens: int, max_start_at_tokens: int) -> SummarizeSettings:
    """``settings`` inside the operator's limits (``summarization.*`` in gateway.yaml): a request
    cannot make every message a paid summarizer call, nor replay more than the operator allows."""
    chunk = max(settings.chunk_size, min_chunk_tokens)
    start = min(settings.start_at_tokens, max_start_at_tokens)
    if (chunk, start) == (settings.chunk_size, settings.start_at_tokens):
        return settings
    return replace(settings, chunk_size=chunk, start_at_tokens=start)
