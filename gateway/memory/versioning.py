"""Skip, supersede or create: what a new memory does to the subject's existing ones (seed 003).

Each of the subject's closest active memories is compared with the new one:

* who each is about first (gateway/memory/statements.py): facts about different people ("User
  is vegetarian" / "User's husband is vegetarian") never duplicate or replace each other;
* same claim slot (e.g. favorite_fruit): same value is a duplicate, another value
  a conflict, however the two are worded (a multi-valued predicate's values each
  fill a slot of their own: "likes sushi" and "likes ramen" do not conflict);
* then rules (RULES) on their wording, normalised (number words, diacritics, word order): the
  same key terms (similarity at or above ``duplicate_threshold``) or one statement restating
  the other is a duplicate; another quantity or date for the same statement, a change said in
  words ("now", "moved", "quit", "from X to Y") on the same topic, a new choice, or a
  negation of the same statement (similarity at or above ``supersede_threshold``) a conflict;
  with a paraphrase model, the same meaning in other words a duplicate and a change said of
  much the same meaning a conflict.

A pair no rule settles keeps both memories: an ambiguous pair must not lose one (a distinct
fact superseded, or a new value skipped, is the error users notice most). Any duplicate means
the new memory is skipped; otherwise it is created and every conflicting memory is superseded
by it. Similarity is the larger of the lexical overlap of the two texts' key terms and, with
a dense model, their cosine. bench/versioning measures the rules on labelled pairs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Literal
from collections.abc import Callable, Sequence

from gateway.config import VersioningConfig
from gateway.memory.claims import Claim, value_key
from gateway.memory import statements
from gateway.memory.lexical import Lexicon

# Wordings of the same relation, folded together so "likes coffee" and "enjoys coffee" match.
_SYNONYMS = {
    "enjoy": "like", "enjoys": "like", "enjoyed": "like", "love": "like", "loves": "like", "loved": "like",
    "adore": "like", "adores": "like", "fond": "like", "likes": "like", "liked": "like",
    "hate": "dislike", "hates": "dislike", "detest": "dislike", "detests": "dislike", "dislikes": "dislike",
    # a choice among alternatives, however it is said
    "prefers": "prefer", "preferred": "prefer", "favourite": "prefer", "favorite": "prefer", "choice": "prefer",
    "go-to": "prefer",
    "resides": "live", "reside": "live", "lives": "live", "based": "live",
    "employed": "work", "works": "work", "job": "work", "called": "named",
}
# Who a memory is about says nothing about what it says.
_SUBJECT_WORDS = {"user", "users", "user's", "the", "i", "me", "my", "i'm"}
# Words that only date or negate a statement; negation is compared separately.
_FILLER_WORDS = {"longer", "anymore", "now", "still", "currently", "new",
                 # hedges: "around eight hours" is "eight hours"
                 "around", "about", "roughly", "approximately", "almost", "nearly",
                 # how often or how surely: the same fact said more or less firmly
                 "usually", "always", "often", "mostly", "generally", "normally", "typically", "really",
                 # reporting: "the user said/mentioned that ..." states what follows
                 "said", "says", "mentioned", "mentions", "told", "tells", "stated", "noted"}
_WORD = re.compile(r"[\w']+")
# A restatement may add this many terms of its own ("loves sushi" / "really enjoys eating sushi").
CONTAINED_EXTRA_TERMS = 2
# Paraphrase similarity (gateway/memory/paraphrase.py) at which two statements that agree on
# holder, values, names and polarity mean the same, and at which a statement that says it
# changed replaces the old one.
PARAPHRASE_DUPLICATE = 0.8
PARAPHRASE_CHANGE = 0.6

Action = Literal["create", "skip", "supersede"]
# Texts whose key and topic terms a Comparer keeps (least recently used dropped past this).
_TERMS_CACHED = 8192


@dataclass(frozen=True)
class Candidate:
    memory_id: str
    text: str
    claims: Sequence[Claim] = ()
    # Cosine similarity of its dense vector to the new memory's, when there is a dense model.
    similarity: float | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    duplicate_of: str | None = None
    superseded_ids: list[str] = field(default_factory=list)


class Comparer:
    """Similarity between memory texts, on the terms that carry their meaning, and, with a
    paraphrase model (gateway/memory/paraphrase.py), on what they mean."""

    def __init__(self, lexicon: Lexicon, paraphrase: Callable[[str, str], float] | None = None,
                 unknown_words: Callable[[str], frozenset[str]] | None = None) -> None:
        self._lexicon = lexicon
        self._paraphrase = paraphrase
        self._unknown_words = unknown_words
        # Kept by text, as statements' readings are: a learn job reads its new text beside each of
        # its candidates, and the subject's memories come back as candidates job after job.
        self.key_terms = functools.lru_cache(maxsize=_TERMS_CACHED)(self._key_terms)
        self.topic_terms = functools.lru_cache(maxsize=_TERMS_CACHED)(self._topic_terms)

    def forget_texts(self) -> None:
        """Empty the per-text caches, its own and its lexicon's (a subject's erasure)."""
        self.key_terms.cache_clear()
        self.topic_terms.cache_clear()
        self._lexicon.forget_texts()
        statements.forget_readings()

    def paraphrase(self, a: str, b: str) -> float | None:
        """How alike two texts are in meaning (0-1), or None without a paraphrase model."""
        return self._paraphrase(a, b) if self._paraphrase is not None else None

    def unknown_words(self, text: str) -> frozenset[str]:
        """The words the paraphrase model cannot read (ParaphraseEncoder.unknown_words)."""
        return self._unknown_words(text) if self._unknown_words is not None else frozenset()

    def _key_terms(self, text: str) -> frozenset[int]:
        """The terms that carry a text's meaning (``key_terms``, cached)."""
        normal = statements.normal_form(statements.uninverted(text))
        words = [_SYNONYMS.get(w, statements.relation_name(w)) for w in _WORD.findall(normal.lower())
                 if w not in _SUBJECT_WORDS and w not in _FILLER_WORDS]
        return self._lexicon.terms(" ".join(words))

    def _topic_terms(self, text: str) -> frozenset[int]:
        """The key terms without the values (numbers, dates), when it held, how, or whether it
        is negated: what the statement is about (``topic_terms``, cached)."""
        return (self.key_terms(statements.without_qualifiers(text))
                - self._lexicon.terms(" ".join(statements.value_words(text))))

    def similarity(self, a: str, b: str, dense_similarity: float | None = None) -> float:
        terms_a, terms_b = self.key_terms(a), self.key_terms(b)
        lexical = 2 * len(terms_a & terms_b) / (len(terms_a) + len(terms_b)) if terms_a and terms_b else 0.0
        return max(lexical, dense_similarity) if dense_similarity is not None else lexical


def _same_value(a: str, b: str) -> bool:
    return value_key(statements.normal_form(a)) == value_key(statements.normal_form(b))


def changes_a_slot(claims: Sequence[Claim], others: Sequence[Candidate]) -> bool:
    """Whether another memory holds one of ``claims``' slots with another value (a change), values
    compared as ``relation`` compares them."""
    values = {claim.slot: claim.value for claim in claims}
    return any(claim.slot in values and not _same_value(values[claim.slot], claim.value)
               for other in others for claim in other.claims)


Relation = Literal["duplicate", "conflict", "unrelated"]


class Pair:
    """A new memory's text beside an old one's, and what the rules read from them (read once)."""

    def __init__(self, comparer: Comparer, new: str, old: str, dense_similarity: float | None = None) -> None:
        self.comparer, self.new, self.old = comparer, new, old
        self.similarity = comparer.similarity(new, old, dense_similarity)
        self.flipped = statements.negated(new) != statements.negated(old)
        # A change the old statement does not already state ("engaged" -> "married"): by a verb
        # of change, or only by a word of time ("now").
        self.verb_change = bool(statements.change_words(new) - statements.change_words(old))
        self.changed = self.verb_change or bool(statements.time_words(new) - statements.time_words(old))
        # Either says a state ended that the other does not ("has a knee injury" / "the knee
        # injury has healed"): whichever came first, not the same statement.
        self.one_says_change = statements.turns(new) != statements.turns(old)
        self.adds = statements.says_addition(new)
        self.new_values, self.old_values = statements.values(new), statements.values(old)
        self.same_numbers = statements.values(new, years=True) == statements.values(old, years=True)
        self.new_topic, self.old_topic = comparer.topic_terms(new), comparer.topic_terms(old)
        # The share of what the old statement is about that the new one repeats (all of it when
        # neither says more than its values: "User is 41" / "User is 42 now").
        self.shared = (len(self.new_topic & self.old_topic) / len(self.old_topic) if self.old_topic
                       else float(not self.new_topic))


def _negation_of_the_same(pair: Pair, config: VersioningConfig) -> Relation | None:
    """A statement and its negation, worded alike: a conflict, never a duplicate."""
    return "conflict" if pair.flipped and pair.similarity >= config.supersede_threshold else None


def _same_words(pair: Pair, config: VersioningConfig) -> Relation | None:
    """Nearly the same key terms, the same numbers and dates: a duplicate."""
    if pair.similarity >= config.duplicate_threshold and pair.new_values == pair.old_values:
        return "duplicate"
    return None


def _value_left_named(pair: Pair, config: VersioningConfig) -> Relation | None:
    """"switched from Firefox to Chrome" after "prefers Firefox": the value left is the old one's."""
    left = statements.replaced_value(pair.new)
    if left and not pair.adds:
        terms = pair.comparer.key_terms(left)
        if terms and terms <= pair.comparer.key_terms(pair.old):
            return "conflict"
    return None


def _restated(pair: Pair, config: VersioningConfig) -> Relation | None:
    """One statement says all the other does, in other words around the same terms: the same
    fact ("User is vegetarian" / "User follows a vegetarian diet"). Only with the same numbers
    (years too), the same polarity, no change said, and if the new one is the longer, at most
    a couple of words more and no second fact joined on (that one would be lost)."""
    if (pair.flipped or pair.changed or pair.one_says_change or pair.adds or not (pair.new_topic and pair.old_topic)
            or not pair.same_numbers):
        return None
    if pair.new_topic <= pair.old_topic:
        return "duplicate"
    if (pair.old_topic <= pair.new_topic and len(pair.new_topic - pair.old_topic) <= CONTAINED_EXTRA_TERMS
            and not (statements.adds_a_fact(pair.new) and not statements.adds_a_fact(pair.old))):
        return "duplicate"
    return None


def _new_quantity(pair: Pair, config: VersioningConfig) -> Relation | None:
    """The same statement with another quantity or date: a new value of one slot ("has 4
    grandchildren" -> "has 5 grandchildren now")."""
    if (pair.new_values and pair.old_values and pair.new_values != pair.old_values and not pair.adds
            and (pair.shared == 1.0 or (pair.changed and pair.shared >= 0.5))):
        return "conflict"
    return None


def _said_to_change(pair: Pair, config: VersioningConfig) -> Relation | None:
    """Said to have changed, on the same topic: the old statement no longer holds.

    Only when the new one repeats what the old one says of its holder but its values and names
    ("reports to Alice" -> "now reports to Priya"), adding at most a word of its own; or, when a
    verb says what changed, drops one word of the old state and adds nothing ("has a broken
    ankle" -> "the ankle has healed"); or, when that verb ends or replaces a state, swaps one
    word for another ("is a junior developer" -> "was promoted to senior developer"). The topic
    must be shared by more than a name ("lives in Porto" and "started a job in Porto" are two
    facts). A word swapped for another on a word of time alone ("has a cat" -> "now has a
    dog") is not enough: both may be true, and so may a beginning with another name ("is
    learning Spanish" -> "started learning Italian")."""
    if not pair.changed or pair.adds:
        return None
    new, old, key_terms = pair.new, pair.old, pair.comparer.key_terms
    new_names = statements.names(new) - statements.names(old)
    said = (statements.change_words(new) - statements.change_words(old)) | statements.time_words(new)
    if new_names and statements.begins_only(said):
        return None
    names = key_terms(" ".join(statements.names(new) | statements.names(old)))
    marks = key_terms(" ".join(statements.change_words(new) | statements.change_words(old)
                               | statements.time_words(new) | statements.time_words(old)))
    old_rest = pair.old_topic - pair.new_topic - names - marks
    new_rest = pair.new_topic - pair.old_topic - names - marks
    # A verb that ends or replaces a state (not one that only begins one) may swap one word.
    replacing = pair.verb_change and not statements.begins_only(said)
    if (pair.new_topic & pair.old_topic) - names and (
            (not old_rest and len(new_rest) <= 1)
            or (pair.verb_change and len(old_rest) == 1 and not new_rest and not new_names)
            or (replacing and len(old_rest) == len(new_rest) == 1 and not new_names)):
        return "conflict"
    return None


def _new_choice(pair: Pair, config: VersioningConfig) -> Relation | None:
    """A choice (a preference, a favourite) with one term swapped for another: the new choice."""
    if pair.adds or not (statements.states_choice(pair.new) and statements.states_choice(pair.old)):
        return None
    choice = pair.comparer.key_terms(statements.CHOICE_WORDS)
    if len(pair.old_topic - pair.new_topic - choice) == 1 and len(pair.new_topic - pair.old_topic - choice) == 1:
        return "conflict"
    return None


def _negation_of_all(pair: Pair, config: VersioningConfig) -> Relation | None:
    """Negated, restating all the old statement says ("does not own a car" -> "bought a car")."""
    return "conflict" if pair.flipped and pair.shared == 1.0 else None


def _same_meaning(pair: Pair, config: VersioningConfig) -> Relation | None:
    """What the words leave open, the paraphrase model may settle: the same meaning in other
    words ("has asthma" / "is asthmatic") is a duplicate, and a state said to have ended or been
    replaced, on a topic of much the same meaning ("sleeps badly because of insomnia" -> "the
    insomnia is gone"), an update. Never on its own: the holder, numbers and dates, names and
    polarity must agree too, since a bag of word meanings finds "a cat named Luna" and "a dog
    named Rex" alike, or "drinks tea in the morning" and "drinks coffee in the afternoon" (one
    frame, other words in it: statements.parallel); nor for negated statements (the negation
    outweighs what is negated: "doesn't drink coffee" / "doesn't drink soda"), nor for a change said only by a word of
    time or a beginning ("now has a dog", "started learning Italian": both may hold). Nor on words
    the model cannot read (names, codes, made-up words: it sees fragments of them, alike whatever
    they say): those must be the same words in both for a duplicate."""
    meaning = pair.comparer.paraphrase(pair.new, pair.old)
    if meaning is None or pair.flipped or pair.adds:
        return None
    new_names, old_names = statements.names(pair.new), statements.names(pair.old)
    if (not pair.changed and not pair.one_says_change and meaning >= PARAPHRASE_DUPLICATE and pair.same_numbers
            and (new_names <= old_names or old_names <= new_names)
            and (new_names & old_names or not (new_names or old_names)) and not statements.negated(pair.new)
            and not statements.parallel(pair.new, pair.old)
            and pair.comparer.unknown_words(pair.new) == pair.comparer.unknown_words(pair.old)
            and not (statements.adds_a_fact(pair.new) and not statements.adds_a_fact(pair.old))):
        return "duplicate"
    said = statements.change_words(pair.new) - statements.change_words(pair.old)
    if (said and not statements.begins_only(said) and meaning >= PARAPHRASE_CHANGE
            and pair.new_topic & pair.old_topic):
        return "conflict"
    return None


# The rules after the holder and the claims, in order; the first with a verdict decides, and a
# pair none of them settles keeps both memories (an ambiguous pair must not lose one).
RULES: tuple[Callable[[Pair, VersioningConfig], Relation | None], ...] = (
    _negation_of_the_same, _same_words, _value_left_named, _restated, _new_quantity, _said_to_change,
    _new_choice, _negation_of_all, _same_meaning)


def relation(comparer: Comparer, config: VersioningConfig, text: str, claims: Sequence[Claim],
             other: Candidate) -> Relation:
    """How one existing memory relates to a new one."""
    # Facts about different people (the user, the user's wife, the user's son Leo) never
    # duplicate or replace each other, however alike their wording.
    if not statements.same_holder(text, other.text):
        return "unrelated"
    # By slot, as the truth graph keeps them: a multi-valued predicate's other value fills
    # another slot (gateway/memory/claims.py), and is no conflict. The same value again is a
    # duplicate unless the texts carry other numbers or dates ("is married" / "got married on
    # 12 June": skipping would lose the date).
    slots = {c.slot: c.value for c in claims}
    for claim in other.claims:
        if claim.slot in slots:
            if not _same_value(slots[claim.slot], claim.value):
                return "conflict"
            if statements.values(text, years=True) == statements.values(other.text, years=True):
                return "duplicate"
            break
    pair = Pair(comparer, text, other.text, other.similarity)
    for rule in RULES:
        verdict = rule(pair, config)
        if verdict is not None:
            return verdict
    return "unrelated"


def decide(comparer: Comparer, config: VersioningConfig, text: str, claims: Sequence[Claim],
           candidates: Sequence[Candidate]) -> Decision:
    conflicts = []
    for candidate in candidates:
        kind = relation(comparer, config, text, claims, candidate)
        if kind == "duplicate":
            return Decision("skip", duplicate_of=candidate.memory_id)
        if kind == "conflict":
            conflicts.append(candidate.memory_id)
    return Decision("supersede" if conflicts else "create", superseded_ids=conflicts)
