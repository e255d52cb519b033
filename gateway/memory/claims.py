"""Structured claims read from a memory's wording: a slot (predicate) and its value.

"User's favorite fruit is blueberry" holds the claim favorite_fruit = blueberry.
Slots are single-valued, so a new memory with the same slot and another value
contradicts the old one however differently it is worded ("my new favorite fruit
is strawberry"): that is what lets versioning supersede it.

These are plain English patterns over the statements memories are written in
(first person, or about "the user"); an LLM extractor may supply claims of its
own, which take precedence.

What a claim means is also here: the slot it fills and its type (contract §7).
Most predicates hold one value at a time, so the slot is the predicate itself and a
new value replaces the old. A few hold a set ("likes_food" may be sushi and ramen
both): each of their values fills a slot of its own, ``likes_food:sushi``, so
"one truth per slot" still holds and a second value adds to the set instead of
replacing the first (MULTI_VALUED). The truth graph (gateway/memory/truth_graph.py)
stores them.
"""

from __future__ import annotations

import hashlib
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
    # "User is engaged to Tom", "I got married", "User divorced Mark": one relationship status at a
    # time, with the partner when named (married to Tom and married to Sam are two values).
    ("relationship_status", re.compile(rf"^(?:the\s+)?{_WHO}\s+(?:(?:is|am|are)\s+|'m\s+)?"
                                       rf"(?:now\s+|just\s+|recently\s+)?(?:got\s+|getting\s+)?(?P<value>(?:single|married|engaged|divorced|"
                                       rf"separated|widowed|dating)(?:\s+(?:to\s+|from\s+)?(?-i:[A-Z])[\w-]*)?)\b",
                                       re.I)),
    ("age", re.compile(rf"\b{_WHO}\s+(?:is|am|are|'m)?\s*(?P<value>\d{{1,3}})\s+(?:years?|yrs?)\s+old\b", re.I)),
    ("lives_in", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:live|lives|living|reside|resides|"
                            rf"(?:am|is|are)\s+based|(?:have|has)\s+moved|moved)\s+(?:in|to|into)\s+(?P<value>.+?){_END}",
                            re.I)),
    ("works_at", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:work|works|working)\s+(?:at|for)\s+"
                            rf"(?P<value>.+?){_END}", re.I)),
    ("occupation", re.compile(rf"\b{_WHO}\s+(?:now\s+|currently\s+)?(?:work|works|working)\s+as\s+(?:an?\s+)?"
                              rf"(?P<value>.+?){_END}", re.I)),
    ("name", re.compile(rf"\b{_WHO}\s+(?:is|am|are|'m)?\s*(?:called|named)\s+(?P<value>.+?){_END}", re.I)),
    # "my <attribute> is <value>": possessed attributes hold one value at a time.
    ("{0}", re.compile(rf"^{_POSSESSIVE}\s+(?P<slot>[a-z][a-z' -]{{0,40}}?)\s+(?:is|are|was)\s+(?!not\b)"
                       rf"(?P<value>.+?){_END}", re.I)),
]


# Predicates that hold a set of values: the word itself or the word and "_" (likes_food).
MULTI_VALUED = ("likes", "dislikes", "loves", "hates", "has", "owns", "speaks", "knows", "plays", "visited",
                "allergic_to", "interested_in")
# A value longer than this names its slot by a prefix and a hash (slots travel in URLs).
_SLOT_VALUE_LENGTH = 80


def claim_type_of(predicate: str) -> str:
    """The contract's rule (§7): favorite_/likes_/dislikes_ are preferences, and so on."""
    if predicate.startswith(("favorite_", "likes_", "dislikes_")):
        return "preference"
    if "goal" in predicate or predicate.startswith("wants_"):
        return "goal"
    if predicate.startswith(("did_", "event_")):
        return "event"
    return "fact"


def value_key(value: str) -> str:
    """The same for two values that differ only in case and spacing: "the same value again"."""
    return " ".join(value.casefold().split())


def is_multi_valued(predicate: str) -> bool:
    return any(predicate == stem or predicate.startswith(stem + "_") for stem in MULTI_VALUED)


def default_slot(predicate: str, value: str) -> str:
    """The slot a claim fills when its author names none: the predicate, or for a
    multi-valued predicate the predicate and the value (``likes_food:sushi``)."""
    if not is_multi_valued(predicate):
        return predicate
    key = value_key(value)
    if len(key) > _SLOT_VALUE_LENGTH:
        digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
        key = f"{key[:_SLOT_VALUE_LENGTH - 13]}~{digest}"
    return f"{predicate}:{key}"


@dataclass(frozen=True)
class Claim:
    predicate: str
    value: str
    # The slot it fills: the default rule (default_slot) unless given.
    slot: str = ""

    def __post_init__(self) -> None:
        if not self.slot:
            object.__setattr__(self, "slot", default_slot(self.predicate, self.value))

    @property
    def claim_type(self) -> str:
        return claim_type_of(self.predicate)


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
        if slot == "relationship_status":  # "married to Tom" and "married Tom": one value
            value = re.sub(r"\s+(?:to|from)\s+", " ", value)
        if slot.strip("_") and value and len(value) <= 120:
            return [Claim(slot.strip("_"), value)]
    return []
