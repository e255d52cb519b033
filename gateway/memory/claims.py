"""Structured claims read from a memory's wording: a slot (predicate) and its value.

"User's favorite fruit is blueberry" holds the claim favorite_fruit = blueberry.
Slots are single-valued, so a new memory with the same slot and another value
contradicts the old one however differently it is worded ("my new favorite fruit
is strawberry"): that is what lets versioning supersede it.

These are plain English patterns over the statements memories are written in
(first person, or about "the user"); an LLM extractor may supply claims of its
own, which take precedence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WHO = r"(?:i|i'm|i am|we|user|the user|they|he|she)"
_POSSESSIVE = r"(?:my|our|user's|the user's|users'|their|his|her)"
# Words that date a value without changing the slot it fills.
_QUALIFIERS = {"new", "current", "latest", "old", "previous", "former", "present", "actual", "real", "all-time",
               "absolute", "very", "main", "top"}
_END = r"\s*[.!]?\s*$"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # "<value> is my favorite <thing>"
    ("favorite_{0}", re.compile(rf"^(?P<value>.+?)\s+(?:is|are)\s+{_POSSESSIVE}\s+(?:\w+\s+)?favou?rite\s+"
                                rf"(?P<slot>[a-z][a-z ]{{0,30}}?){_END}", re.I)),
    # "my favorite <thing> is <value>", "favorite <thing>: <value>"
    ("favorite_{0}", re.compile(rf"^(?:{_POSSESSIVE}\s+)?(?:(?:\w+\s+)?(?:now\s+)?)?favou?rite\s+"
                                rf"(?P<slot>[a-z][a-z ]{{0,30}}?)\s*(?:is|are|was|:|=)\s+(?P<value>.+?){_END}", re.I)),
    ("age", re.compile(rf"\b{_WHO}\s+(?:is|am|are|'m)?\s*(?P<value>\d{{1,3}})\s+(?:years?|yrs?)\s+old\b", re.I)),
    ("lives_in", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:live|lives|living|reside|resides|"
                            rf"(?:am|is|are)\s+based|(?:have|has)\s+moved|moved)\s+(?:in|to)\s+(?P<value>.+?){_END}",
                            re.I)),
    ("works_at", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:work|works|working)\s+(?:at|for)\s+"
                            rf"(?P<value>.+?){_END}", re.I)),
    ("occupation", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:work|works|working)\s+as\s+(?:an?\s+)?"
                              rf"(?P<value>.+?){_END}", re.I)),
    ("name", re.compile(rf"\b{_WHO}\s+(?:is|am|are|'m)?\s*(?:called|named)\s+(?P<value>.+?){_END}", re.I)),
    # "my <attribute> is <value>": possessed attributes hold one value at a time.
    ("{0}", re.compile(rf"^{_POSSESSIVE}\s+(?P<slot>[a-z][a-z' ]{{0,40}}?)\s+(?:is|are|was)\s+(?!not\b)"
                       rf"(?P<value>.+?){_END}", re.I)),
]


@dataclass(frozen=True)
class Claim:
    predicate: str
    value: str

    @property
    def claim_type(self) -> str:
        """The contract's rule (§7): favorite_/likes_/dislikes_ are preferences, and so on."""
        if self.predicate.startswith(("favorite_", "likes_", "dislikes_")):
            return "preference"
        if "goal" in self.predicate or self.predicate.startswith("wants_"):
            return "goal"
        if self.predicate.startswith(("did_", "event_")):
            return "event"
        return "fact"


def _slot_name(raw: str) -> str:
    words = [w for w in re.split(r"[\s']+", raw.lower().replace("'s ", " ")) if w and w != "s"]
    words = [w for w in words if w not in _QUALIFIERS]
    return "_".join(words)


def normalized_value(value: str) -> str:
    value = re.sub(r"^(?:now\s+|a\s+|an\s+|the\s+)", "", value.strip().lower())
    return re.sub(r"[\s.!,;:]+$", "", re.sub(r"\s+", " ", value))


def extract_claims(text: str) -> list[Claim]:
    """The claims one memory states (at most one per slot); none for questions."""
    sentence = text.strip()
    if not sentence or sentence.endswith("?") or len(sentence) > 300:
        return []
    for template, pattern in _PATTERNS:
        match = pattern.search(sentence)
        if not match:
            continue
        slot = template.format(_slot_name(match.group("slot"))) if "slot" in pattern.groupindex else template
        value = normalized_value(match.group("value"))
        if slot.strip("_") and value and len(value) <= 120:
            return [Claim(slot.strip("_"), value)]
    return []
