"""Memory versioning judged by the extraction model (``memory.versioning.judge: llm``).

Before a learn job calls an extractor that judges (the ``litellm`` one), it finds the subject's
own active memories the turn may be about (``Memories.related``) and shows them to the model
under short references, "m1", "m2"...: their ids never reach the model. The model says of each
memory it extracts, in that same call, whether it is new, a duplicate of one of them, or an
update of some (``gateway.memory.extraction.Judgement``). Mnexium decides so; the rules
(gateway/memory/versioning.py) miss paraphrases ("User is vegetarian" / "User follows a
vegetarian diet") and changes worded apart ("User is single" -> "User is married").

The rules stay the fallback and the safety net (``reconcile``):

* a verdict that cannot be used leaves the decision to the rules: none given or malformed, a
  reference the model was not shown (or made up), a memory no longer active when the new one is
  written (an earlier memory of the same turn superseded it, say);
* the model judges the memories it was shown; the other memories versioning compares (those the
  rules' own search finds for the new text) are judged by the rules, as before: a duplicate among
  them skips, a conflict among them is superseded too;
* a judge must not lose data. "duplicate_of X" is set aside, and the rules decide, when they see
  a changed value: a claim slot of the new memory held with another value (by X or any memory
  compared), or X conflicting with it by similarity ("two children" -> "three children").
  Skipping would drop the new value; superseding keeps the old one in the history, restorable.
  Where the rules see X unrelated, the model's "duplicate_of" stands: paraphrases are what it
  reads better than the rules.
* "updates X" stands even when the rules find X dissimilar: single -> married shares no word.
  X is superseded (never deleted: POST /memories/{id}/restore undoes it) and the new memory
  records that the model decided.
* "new" keeps both, even where the rules would supersede by similarity ("User has a dog named
  Rex" beside "User has a cat named Luna") or skip: ambiguous cases keep both memories rather
  than losing one. (Where the two state one claim slot with different values, the truth graph
  still holds one truth per slot: the new claim, which recall injects as the current truth.)

Who decided is recorded on the memory created (``versioning``: ``decided_by`` "llm" or "rules",
the model's ``judgement``, why it was ``set_aside`` when it was, and ``rules_superseded``: the
memories the model was not shown that the rules superseded beside its verdict), and returned
with a skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping, Sequence

from gateway.config import VersioningConfig
from gateway.memory.claims import Claim
from gateway.memory.versioning import Candidate, Comparer, Decision, changes_a_slot, decide, relation
from gateway.summaries.tokens import count_text


@dataclass(frozen=True)
class RelatedMemory:
    """One of the subject's memories as an extractor is shown it (``Exchange.related``): ``ref``
    ("m1", "m2"...) stands for its id, which never reaches the model."""

    ref: str
    text: str


# What an extracted memory is to the related memories it was shown (Judgement.relation).
RELATIONS = ("new", "duplicate_of", "updates")


@dataclass(frozen=True)
class Judgement:
    """An extractor's versioning verdict on one memory it extracted (``ExtractedMemory.judgement``):
    "new" (beside everything shown), "duplicate_of" (says what ``refs[0]`` says: not stored) or
    "updates" (a new value of what ``refs`` say: they are superseded). Refs are ``RelatedMemory.ref``s."""

    relation: str
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shown:
    """The related memories shown to the extractor, and the memory id behind each reference."""

    memories: tuple[RelatedMemory, ...] = ()
    ids: Mapping[str, str] = field(default_factory=dict)


NOTHING_SHOWN = Shown()


def shown_memories(found: Sequence[tuple[str, str]], *, limit: int, token_budget: int) -> Shown:
    """References for the first ``limit`` of ``found`` ((memory id, text), most related first)
    whose texts fit ``token_budget`` together; one that would not fit is left out (cutting it
    would show the model something the memory does not say), a shorter one after it may fit."""
    memories: list[RelatedMemory] = []
    ids: dict[str, str] = {}
    spent = 0
    for memory_id, text in found:
        if len(memories) == limit:
            break
        cost = count_text(text, None)  # about four characters a token, for any model
        if memory_id in ids.values() or spent + cost > token_budget:
            continue
        spent += cost
        ref = f"m{len(memories) + 1}"
        memories.append(RelatedMemory(ref, text))
        ids[ref] = memory_id
    return Shown(tuple(memories), ids)


@dataclass(frozen=True)
class Verdict:
    """A Judgement with its references mapped back to memory ids, as ``Memories.create`` takes it."""

    # "new", "duplicate_of", "updates"; None: no usable verdict (``unusable`` says why).
    relation: str | None
    target_ids: tuple[str, ...] = ()
    # Every memory the model was shown: the ones it judged.
    shown_ids: frozenset[str] = frozenset()
    unusable: str | None = None


def verdict_for(judgement: Judgement | None, shown: Shown) -> Verdict:
    """The model's verdict on one memory, checked against what it was shown."""
    shown_ids = frozenset(shown.ids.values())
    if judgement is None:
        return Verdict(None, shown_ids=shown_ids, unusable="no readable verdict")
    if any(ref not in shown.ids for ref in judgement.refs):
        return Verdict(None, shown_ids=shown_ids, unusable="it names a memory it was not shown")
    return Verdict(judgement.relation, tuple(shown.ids[ref] for ref in judgement.refs), shown_ids)


def reconcile(comparer: Comparer, config: VersioningConfig, text: str, claims: Sequence[Claim],
              candidates: Sequence[Candidate], targets: Mapping[str, Candidate],
              verdict: Verdict) -> tuple[Decision, dict[str, Any]]:
    """The decision for a new memory the model judged, and the record of who made it.

    ``candidates`` are the memories the rules compare (their own search); ``targets`` the
    memories the verdict names that are still active, by id (see the module's docstring)."""
    def rules() -> Decision:  # the fallback: the rules alone, computed only when it is taken
        return decide(comparer, config, text, claims, candidates)

    if verdict.relation is None:
        return rules(), {"decided_by": "rules", "set_aside": verdict.unusable}
    judged = {"judgement": verdict.relation}
    if any(memory_id not in targets for memory_id in verdict.target_ids):
        return rules(), {"decided_by": "rules", **judged, "set_aside": "it names a memory no longer active"}
    if verdict.relation == "duplicate_of":
        original = targets[verdict.target_ids[0]]
        if (changes_a_slot(claims, [*candidates, original])
                or relation(comparer, config, text, claims, original) == "conflict"):
            return rules(), {"decided_by": "rules", **judged,
                             "set_aside": "the rules see a changed value, which skipping would lose"}
        return Decision("skip", duplicate_of=original.memory_id), {"decided_by": "llm", **judged}
    # The memories the model was not shown are the rules' to judge.
    unseen = decide(comparer, config, text, claims,
                    [c for c in candidates if c.memory_id not in verdict.shown_ids])
    if unseen.action == "skip":
        return unseen, {"decided_by": "rules", **judged,
                        "set_aside": "a memory the model was not shown says the same"}
    updated = list(verdict.target_ids) if verdict.relation == "updates" else []
    by_rules = [memory_id for memory_id in unseen.superseded_ids if memory_id not in updated]
    record = {"decided_by": "llm", **judged, **({"rules_superseded": by_rules} if by_rules else {})}
    superseded = [*updated, *by_rules]
    return Decision("supersede" if superseded else "create", superseded_ids=superseded), record
