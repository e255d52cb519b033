"""What a memory statement is about, read from its wording: who holds the fact, the values it
states, whether it says something changed.

Versioning (gateway/memory/versioning.py) compares two memories of one subject. Word overlap
alone cannot tell "User is vegetarian" from "User's husband is vegetarian" (one word apart,
two people), "User has two children" from "User has three children" (one word apart, a new
value) or "User is vegetarian" from "User is vegan now" (a change). These are plain-English
readings of the statement that versioning weighs beside the overlap:

* the **holder**: the people or animals a fact is about, from the possessive chain that opens
  the statement ("User's son Leo", "Her mother", "Lena's husband"): the user is the empty
  holder; attributes in the chain ("User's birth year", "User's team") hold nothing;
* the **values**: quantities and dates ("two", "3", "$1,200", "Monday", "June"), read the same
  however they are written; a year alone is when something happened, not a value that changes
  (two trips in 2019 and 2023 are two trips);
* **change**: verbs that say a state began, ended or was replaced ("moved", "switched", "quit",
  "became", "was increased to", "no longer") and words of time that say a statement holds from
  some point on ("now", "these days"); **addition**: words that say the statement adds to what
  was known ("also", "another", "as well");
* a **normal form** for comparing wordings: without diacritics (Kraków, Krakow), number words as
  digits, thousands separators dropped, digits split from the letters glued to them ("3x",
  "8pm"), units by one name ("5 km", "5 kilometres"), "does not like" as "dislike", and
  inversions put back in subject order ("Alice is the user's manager").

Word classes here are general English, not tuned to any data set: relations between people (and
pets) as they are named in English, change-of-state verbs and the adverbs of time that mark a
new state.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# What one text reads as, kept per text for the functions marked @_reading: a learn job calls
# them on the same texts again and again (a new memory's text beside each of its ~8 candidates,
# and the subject's memories, candidates of one job after another).
_READINGS_CACHED = 8192
_READINGS: list[functools._lru_cache_wrapper[Any]] = []


def _reading(function: Callable[..., T]) -> functools._lru_cache_wrapper[T]:
    cached = functools.lru_cache(maxsize=_READINGS_CACHED)(function)
    _READINGS.append(cached)
    return cached


def forget_readings() -> None:
    """Empty every per-text cache here (a subject's erasure: no copy of its words stays in them)."""
    for cached in _READINGS:
        cached.cache_clear()


_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12,
    "once": 1, "twice": 2, "single": 1, "couple": 2, "both": 2,
}
# Words that count but are not a number when alone in a sentence ("User is single"): only read
# as numbers before a noun they count ("a single cat" is rare in memories; "User is single" common).
_AMBIGUOUS_NUMBER_WORDS = {"single", "couple", "both", "once", "twice"}
# Units by one name: an abbreviation counts only after a number ("5 km"), a plural anywhere.
_UNITS = {"km": "kilometre", "kms": "kilometre", "cm": "centimetre", "mm": "millimetre", "kg": "kilogram",
          "kgs": "kilogram", "lb": "pound", "lbs": "pound", "hr": "hour", "hrs": "hour", "h": "hour",
          "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "ft": "foot", "mi": "mile"}
_UNIT_PLURALS = {"kilometres": "kilometre", "kilometers": "kilometre", "kilometer": "kilometre",
                 "centimetres": "centimetre", "centimeters": "centimetre", "centimeter": "centimetre",
                 "kilograms": "kilogram", "kilos": "kilogram", "kilo": "kilogram", "pounds": "pound",
                 "hours": "hour", "minutes": "minute", "seconds": "second", "feet": "foot", "miles": "mile"}
_NOT_LIKE = re.compile(r"\b(?:(?:do|does|did)\s+not|(?:do|does|did)n'?t|can'?t|cannot)\s+(?:like|stand|bear)\b", re.I)
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_MONTH_ABBREVIATIONS = {month[:3]: month for month in _MONTHS} | {"sept": "september"}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# People (and pets) a fact may be about instead of the user, as English names the relation.
# Hyphenated forms ("mother-in-law", "ex-wife", "step-son") are relations of their own.
_RELATIONS = frozenset("""
mother father mom mum dad mommy mummy daddy parent parents sister brother sibling siblings twin son daughter
child children kid kids baby babies toddler teen teenager wife husband spouse partner girlfriend boyfriend
fiance fiancee ex grandmother grandfather grandma grandpa granny nana grandparent grandparents grandson
granddaughter grandchild grandchildren grandkid grandkids aunt uncle cousin niece nephew godmother godfather
godson goddaughter stepmother stepfather stepson stepdaughter stepbrother stepsister family relatives
friend friends bestie buddy pal roommate roommates flatmate flatmates housemate housemates neighbour neighbor
neighbours neighbors colleague colleagues coworker coworkers teammate teammates classmate classmates
boss manager supervisor lead mentor mentee employee employees report reports assistant client clients
customer customers landlord landlady tenant tenants doctor gp dentist therapist physiotherapist physio
psychiatrist psychologist counsellor counselor trainer coach teacher tutor professor student students
lawyer accountant nanny babysitter caregiver carer vet ceo cto cfo founder cofounder co-founder director
pet pets dog dogs puppy cat cats kitten horse pony parrot bird rabbit bunny hamster guinea fish tortoise
turtle snake lizard ferret
""".split())
_PLURAL_RELATIONS = {"parents": "parent", "siblings": "sibling", "children": "child", "kids": "child", "kid": "child",
                     "babies": "baby", "grandparents": "grandparent", "grandchildren": "grandchild",
                     "grandkids": "grandchild", "grandkid": "grandchild", "friends": "friend", "roommates": "roommate",
                     "flatmates": "flatmate", "housemates": "housemate", "neighbours": "neighbour",
                     "neighbors": "neighbour", "neighbor": "neighbour", "colleagues": "colleague",
                     "coworkers": "coworker", "teammates": "teammate", "classmates": "classmate",
                     "employees": "employee", "reports": "report", "clients": "client", "customers": "customer",
                     "tenants": "tenant", "students": "student", "pets": "pet", "dogs": "dog", "cats": "cat",
                     "mom": "mother", "mum": "mother", "mommy": "mother", "mummy": "mother", "dad": "father",
                     "daddy": "father", "counselor": "counsellor", "fiancee": "fiance"}
# Who the statement opens with, when it is the user: the empty holder.
_SELF = {"user", "users", "i", "i'm", "we", "he", "she", "they", "me"}
_SELF_POSSESSIVE = {"user's", "users'", "my", "our", "his", "her", "their"}
# The subject's noun phrase ends where the predicate begins: at one of these words, or at a
# word with a verb's inflection (below).
_PREDICATE_START = frozenset("""
is are was were am be been being has have had do does did can can't cannot could will would should shall may
might must won't isn't aren't wasn't doesn't don't didn't hasn't haven't now just also still recently already
never always usually often currently no not who which that and or but in on at for with from to of by as
since about after before until
""".split())
_LEADING_ARTICLE = {"the", "a", "an"}
_OPENERS = {"as", "since", "in", "on", "from", "after", "before", "until", "by", "at", "during"}
# Words that date or qualify a relation without naming another person ("best friend", "new roommate").
_QUALIFIERS = {"best", "new", "old", "current", "former", "younger", "older", "little", "big", "elder",
               "eldest", "youngest", "oldest", "only", "first", "second", "late", "dear", "close", "main"}

# A new state, said in time words: the statement holds from some point on ("now", "these days").
# On its own it says little about what changed ("User has three cats now").
_NEW_STATE = re.compile(r"""\b(?:
    now|nowadays|these\s+days|since|instead|recently|lately|currently|actually|got
    )\b""", re.I | re.X)
# A state that began, ended or was replaced, said by the verb ("quit smoking", "the ankle has
# healed", "extended the lease"): what it changes is the statement it shares its topic with.
_CHANGE = re.compile(r"""\b(?:
    no\s+longer|any\s*more|anymore|used\s+to|former(?:ly)?|ex-\w+|
    became|become|becomes|turned|turns|switch(?:ed|es)?|chang(?:ed|es)|mov(?:ed|es)|relocat(?:ed|es)|
    start(?:ed|s)|began|begun|stop(?:ped|s)|quit(?:s)?|gave\s+up|given\s+up|gives\s+up|dropped|
    retir(?:ed|es)|resign(?:ed|s)|left|finish(?:ed|es)|complet(?:ed|es)|graduat(?:ed|es)|
    divorc(?:ed|es)|married|marri(?:es)|engaged|separated|broke\s+up|split\s+up|widowed|
    promot(?:ed|es)|demot(?:ed|es)|hired|fired|laid\s+off|retrain(?:ed|s)|transferr(?:ed|s)|joined|
    upgrad(?:ed|es)|downgrad(?:ed|es)|increas(?:ed|es)|decreas(?:ed|es)|reduc(?:ed|es)|raised|lowered|
    went\s+(?:up|down)|goes\s+(?:up|down)|gone\s+(?:up|down|off)|gone|grew|grown|rose|risen|fell|fallen|
    extend(?:ed|s)|postpon(?:ed|es)|reschedul(?:ed|es)|delay(?:ed|s)|cancel(?:led|ed|s)|brought\s+forward|
    heal(?:ed|s)|recover(?:ed|s)|cured|ended|ends|sold|replac(?:ed|es)|found|lost|passed|reached|
    updated|corrected|ruled\s+out|renamed|rebranded
    )\b""", re.I | re.X)
# "... is Alice Chen" at the end of a statement: the name of what it is about.
_NAMED_RELATION = re.compile(r"\b(?:is|are)\s+(?P<name>(?-i:[A-Z])[\w.'-]*(?:\s+(?-i:[A-Z])[\w.'-]*){0,2})\s*[.!]?\s*$",
                             re.I)
_BEGINNING = re.compile(r"start(?:ed|s)|began|begun|joined", re.I)
_STATUS = re.compile(r"married|engaged|separated|divorced|widowed", re.I)
# A choice among alternatives: one value at a time ("prefers light mode" -> "prefers dark mode").
CHOICE_WORDS = "prefer prefers preferred favourite favorite go-to choice"
_CHOICE = re.compile(rf"\b(?:{'|'.join(CHOICE_WORDS.split())})\b", re.I)
# "from <old value> to <new value>": the old value named.
_FROM_TO = re.compile(r"\bfrom\s+(?P<old>[^,;]+?)\s+(?:to|into|for)\s+\S", re.I)
_JOINED = re.compile(r"\b(?:and|plus|but|while)\b|[;:]", re.I)
# The statement adds to what was known rather than replacing it.
_ADDITION = re.compile(r"\b(?:also|too|as\s+well|another|additionally|besides|second|other|both)\b", re.I)
_NEGATION = re.compile(r"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|unable|n't|don't|doesn't|"
                       r"didn't|isn't|aren't|wasn't|weren't|won't|cannot|can't|couldn't|hasn't|haven't|"
                       r"dislike|dislikes|hate|hates)\b|n't\b", re.I)

# When a statement held or happened, as opposed to what it says.
_TIME_PHRASE = re.compile(r"\b(?:(?:last|this|next|every|each)\s+(?:year|month|week|weekend|day|night|morning|"
                          r"afternoon|evening|spring|summer|autumn|fall|winter|time)|(?:a|an|one|two|three|a\s+few|"
                          r"several|\d+)\s+(?:days?|weeks?|months?|years?)\s+ago|yesterday|today|tonight|"
                          r"these\s+days|at\s+the\s+moment|for\s+now|so\s+far|yet)\b", re.I)
# Words in -ly that are not adverbs of manner (or that say how often, which is a value).
_NOT_ADVERBS = frozenset("family italy july daily weekly monthly yearly hourly nightly early only likely "
                         "friendly lovely silly ugly holy jelly belly bully rally ally supply reply apply".split())
_WORD = re.compile(r"[\w'’-]+")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", re.I)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.I)
# "Name is the user's <relation>" / "X is my favourite Y": said the other way round.
_INVERTED = re.compile(r"^(?P<value>[^,;]+?)\s+(?:is|are)\s+(?P<holder>the\s+user's|user's|my|our|his|her|their)\s+"
                       r"(?P<rest>[^,;]+?)\s*[.!]?\s*$", re.I)

_APPOSITION = re.compile(r"^(?P<name>[A-Z][\w-]*(?:\s+[A-Z][\w-]*)?),\s+(?P<holder>the\s+user's|user's|my|our|his|her|"
                         r"their)\s+(?P<relation>[^,]+?),\s+(?P<rest>.+)$")


@_reading
def strip_diacritics(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@_reading
def normal_form(text: str) -> str:
    """The wording compared for overlap: no diacritics, numbers as digits, units by their name
    ("5 km" as "5 kilometre"), "does not like" as "dislike"."""
    text = strip_diacritics(text).replace("’", "'")
    text = _NOT_LIKE.sub("dislike", text)
    text = _THOUSANDS.sub("", text)
    text = _ORDINAL.sub(r"\1", text)
    text = _DIGIT_LETTER.sub(" ", text)
    words = text.split(" ")
    out = []
    for i, word in enumerate(words):
        bare = word.lower().strip(".,;:!?")
        following = words[i + 1].lower() if i + 1 < len(words) else ""
        if bare in _NUMBER_WORDS and (bare not in _AMBIGUOUS_NUMBER_WORDS or following.isalpha()
                                      and following not in _PREDICATE_START):
            word = word.lower().replace(bare, str(_NUMBER_WORDS[bare]))
        elif bare in _UNITS and i > 0 and _NUMBER.fullmatch(words[i - 1].strip(".,")):
            word = word.lower().replace(bare, _UNITS[bare])
        elif bare in _UNIT_PLURALS:
            word = word.lower().replace(bare, _UNIT_PLURALS[bare])
        out.append(word)
    return " ".join(out)


@_reading
def uninverted(text: str) -> str:
    """"Alice is the user's manager" -> "user's manager is Alice", "Nina, the user's sister, is a
    chef" -> "user's sister Nina is a chef": the holder chain first."""
    apposition = _APPOSITION.match(text.strip())
    if apposition:
        return f"{apposition.group('holder')} {apposition.group('relation')} {apposition.group('name')} " \
               f"{apposition.group('rest')}"
    match = _INVERTED.match(text.strip())
    if not match or len(match.group("value").split()) > 4:
        return text
    return f"{match.group('holder')} {match.group('rest')} is {match.group('value')}"


def _relation(word: str) -> str | None:
    word = word.lower().strip(".,;:!?'")
    if word.endswith("'s") or word.endswith("s'"):
        word = word[:-2] if word.endswith("'s") else word[:-1]
    if word in _RELATIONS or word in _PLURAL_RELATIONS:
        return _PLURAL_RELATIONS.get(word, word)
    parts = word.split("-")
    # "mother-in-law", "ex-wife", "step-son", "great-nephews", "half-brother": a relation of its own.
    if len(parts) > 1 and any(p in _RELATIONS or p in _PLURAL_RELATIONS for p in parts):
        return "-".join(_PLURAL_RELATIONS.get(p, p) for p in parts)
    return None


@_reading
def holder(text: str) -> tuple[str, ...]:
    """Who the fact is about, as the chain of relations that opens the statement: () for the
    user ("User ...", "I ...", "Lives in ..."), ("husband",) for "User's husband ...",
    ("son:leo",) for "User's son Leo ...", ("manager", "manager") for "User's manager's
    manager ...". Attributes in the chain ("User's birth year", "User's team") are not holders."""
    sentence = uninverted(strip_diacritics(text).replace("’", "'"))
    # A leading clause that dates the statement ("As of March 2024, ...", "Since the reorg, ...").
    head, comma, rest = sentence.partition(",")
    if comma and len(head.split()) <= 6 and head.split()[0].lower() in _OPENERS:
        sentence = rest
    words = _WORD.findall(sentence)
    while words and words[0].lower() in _LEADING_ARTICLE:
        words = words[1:]
    if not words:
        return ()
    first = words[0].lower()
    possessive = first in _SELF_POSSESSIVE or first.endswith("'s") or first.endswith("s'")
    if not possessive:
        return ()
    chain: list[str] = []
    for word in words[1:]:
        lower = word.lower()
        if lower in _PREDICATE_START:
            break
        if lower in _QUALIFIERS:
            continue
        relation = _relation(word)
        if relation is not None:
            chain.append(relation)
        elif word[:1].isupper() and chain and ":" not in chain[-1]:
            # "User's son Leo": the relation, named.
            chain[-1] = f"{chain[-1]}:{word.lower().rstrip('.,')}"
        elif not lower.endswith("'s") and not lower.endswith("s'") and _looks_like_verb(lower) and chain:
            break
    return tuple(chain)


def same_holder(a: str, b: str) -> bool:
    """Whether two statements are about the same person (or pet). "User has a cat named Luna"
    and "User's cat is called Luna" are: a statement about the user that names the relation
    (or who it is) may be the same fact as one about that relation."""
    holder_a, holder_b = holder(a), holder(b)
    if holder_a == holder_b:
        return True
    if holder_a and holder_b:
        return False
    (named, named_text), plain = ((holder_a, a), b) if holder_a else ((holder_b, b), a)
    if len(named) != 1:
        return False
    plain_words = _WORD.findall(strip_diacritics(plain))
    # The relation as a common noun ("Manager" in "Product Manager" is part of a title).
    nouns = {relation_name(w) for w in plain_words if w.islower()}
    nouns |= {w[:-1] for w in nouns if w.endswith("s")}  # "David mentors the user": his mentor
    relation, _, name = named[0].partition(":")
    # "User's boss is Alice Chen" names who the relation is: "User reports to Alice Chen" may
    # say the same of the user.
    who = _NAMED_RELATION.search(strip_diacritics(uninverted(named_text)))
    named_as = ([name] if name else []) + (who.group("name").lower().split() if who else [])
    mentioned = relation in nouns or bool(set(named_as) & {w.lower() for w in plain_words})
    # Only with a name both statements give: "User is allergic to cats" is not about "User's
    # cat" ("... is allergic to fish"), "User has a cat named Luna" may be ("... is called Luna").
    return mentioned and bool(_capitalised(a) & _capitalised(b))


def _capitalised(text: str) -> frozenset[str]:
    """Capitalised words, the first too ("David mentors the user"), but not the user or a word
    that only opens a sentence ("The", "In")."""
    return frozenset(w.lower() for w in _WORD.findall(strip_diacritics(text)) if w[:1].isupper()) - _SELF \
        - _LEADING_ARTICLE - _OPENERS - _PREDICATE_START


def _looks_like_verb(word: str) -> bool:
    """A third-person or past-tense verb after the subject ("User's wife works ...")."""
    return word.endswith(("s", "ed")) and len(word) > 3


@_reading
def values(text: str, *, years: bool = False) -> frozenset[str]:
    """The quantities and calendar values a statement states, in one spelling: numbers, months,
    weekdays. Years only if asked: a year says when something happened, not a value the fact
    holds (two trips in 2019 and 2023 are two trips), yet two statements with different years
    are not the same statement."""
    normal = normal_form(text)
    found: set[str] = set()
    for number in _NUMBER.findall(normal):
        if years or not (len(number) == 4 and number.isdigit() and 1900 <= int(number) <= 2100):
            found.add(str(float(number)).removesuffix(".0"))
    for word in _WORD.findall(normal):
        lower = word.lower().rstrip(".")
        lower = lower[:-1] if lower.endswith("s") and lower[:-1] in _WEEKDAYS else lower
        if lower in _WEEKDAYS:
            found.add(lower)
        elif lower in _MONTHS and (lower != "may" or word[0].isupper()):
            found.add(lower)
        elif lower in _MONTH_ABBREVIATIONS and word[0].isupper():
            found.add(_MONTH_ABBREVIATIONS[lower])
    return frozenset(found)


@_reading
def without_qualifiers(text: str) -> str:
    """``text`` without what only qualifies a statement: when ("last year", "every morning",
    "two weeks ago"), how ("socially", "completely": adverbs in -ly) and negation (compared
    apart). What is left says what the statement is about."""
    text = _TIME_PHRASE.sub(" ", text)
    words = [w for w in text.split() if not _is_adverb(w.strip(".,;:!?").lower())]
    return _NEGATION.sub(" ", " ".join(words))


def _is_adverb(word: str) -> bool:
    return len(word) > 5 and word.endswith("ly") and word not in _NOT_ADVERBS


@_reading
def value_words(text: str) -> frozenset[str]:
    """The words of ``text`` (normal form, lower case) that are values, for taking them out of
    a comparison of what two statements are about."""
    normal = normal_form(text)
    out = set()
    for word in _WORD.findall(normal):
        lower = word.lower().rstrip(".")
        if _NUMBER.fullmatch(lower) or lower.rstrip("s") in _WEEKDAYS or lower in _MONTHS \
                or lower in _MONTH_ABBREVIATIONS:
            out.add(lower)
    return frozenset(out)


@_reading
def change_words(text: str) -> frozenset[str]:
    """The words of ``text`` that say a state began, ended or was replaced (verbs of change)."""
    return frozenset(" ".join(match.lower().split()) for match in _CHANGE.findall(text))


@_reading
def turns(text: str) -> frozenset[str]:
    """The change words of ``text`` that say a state ended or was replaced, not only that one
    began ("started") or that the user's relationship is in one ("married", "engaged")."""
    return frozenset(w for w in change_words(text) if not _BEGINNING.fullmatch(w) and not _STATUS.fullmatch(w))


def begins_only(words: frozenset[str]) -> bool:
    """Whether these change words only say something began ("started", "joined"): a beginning
    may add to what was (started learning Italian, still learning Spanish) rather than end it."""
    return bool(words) and all(_BEGINNING.fullmatch(word) for word in words)


@_reading
def time_words(text: str) -> frozenset[str]:
    """The words of ``text`` that say it holds from some point on ("now", "these days")."""
    return frozenset(" ".join(match.lower().split()) for match in _NEW_STATE.findall(text))


@_reading
def names(text: str) -> frozenset[str]:
    """The capitalised words after the first (names of people, places, products): the values
    a statement is about rather than what it says of them."""
    words = _WORD.findall(strip_diacritics(text))
    return frozenset(w for w in words[1:] if w[:1].isupper() and w.lower() not in _SELF
                     and w.lower() not in _MONTHS and w.lower().rstrip("s") not in _WEEKDAYS)


def parallel(a: str, b: str) -> bool:
    """Whether two statements are one frame with other words in it, each word swapped on its own
    ("drinks tea in the morning" / "drinks coffee in the afternoon", "has a cat named Luna" /
    "has a cat named Mochi"): the shape of two facts of one kind, not of a rewording."""
    words_a = normal_form(a).lower().rstrip(".!").split()
    words_b = normal_form(b).lower().rstrip(".!").split()
    if len(words_a) != len(words_b):
        return False
    differ = [i for i, (x, y) in enumerate(zip(words_a, words_b)) if x != y]
    return bool(differ) and all(j - i > 1 for i, j in zip(differ, differ[1:]))


def says_change(text: str) -> bool:
    return bool(_CHANGE.search(text) or _NEW_STATE.search(text))


def replaced_value(text: str) -> str | None:
    """What a statement says was left: "switched from Firefox to Chrome" -> "Firefox"."""
    match = _FROM_TO.search(text)
    return match.group("old") if match else None


def states_choice(text: str) -> bool:
    return bool(_CHOICE.search(text))


def adds_a_fact(text: str) -> bool:
    """Whether a statement joins facts ("lives in Berlin and works as a teacher")."""
    return bool(_JOINED.search(text))


@_reading
def says_addition(text: str) -> bool:
    return bool(_ADDITION.search(text))


@_reading
def negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


def relation_name(word: str) -> str:
    """One name for a relation however it is written ("kids" and "children", "mum" and "mother");
    any other word as it is."""
    return _PLURAL_RELATIONS.get(word, word)
