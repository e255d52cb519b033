"""Lexical postings per reader: how the embedded index lays out BM25 term ids.

Each memory's term ids are mixed with a salt of the key that finds it: its subject's
own key if private, the project's shared key if shared. A term then has one posting
list per subject (and one for the project's shared memories) instead of one across
every tenant, and a filtered lexical search reads the asker's postings only. Qdrant's
filtered sparse search walks the query terms' posting lists, so at a million memories
over 1,000 subjects this made the gateway's BM25 search 3.2 → 0.9 ms p50
(bench/memory_search/README.md).

The IDF then has to come from elsewhere (document_frequencies): the engine's would
count one subject's memories only.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any
from collections.abc import Sequence

from qdrant_edge import SparseVector

from gateway.memory.vector_index import is_shared, own_key, shared_key


def lexical_key(project_id: str, subject_id: str, fields: dict[str, Any]) -> str:
    """The key whose postings hold a memory (who finds it lexically)."""
    return shared_key(project_id) if is_shared(fields["visibility"]) else own_key(project_id, subject_id)


@lru_cache(maxsize=65_536)
def key_salt(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


def salted(vector: SparseVector, salt: int) -> SparseVector:
    """The vector with each id XOR ``salt``: a bijection, so one key's terms stay distinct."""
    return SparseVector([index ^ salt for index in vector.indices], vector.values)


def posted(project_id: str, subject_id: str, fields: dict[str, Any], vector: SparseVector) -> SparseVector:
    """A memory's lexical vector as the index stores it, in its reader's postings."""
    return salted(vector, key_salt(lexical_key(project_id, subject_id, fields)))


def reposting_salt(project_id: str, subject_id: str, old_fields: dict[str, Any], fields: dict[str, Any]) -> int:
    """What moves a stored vector to the postings of its new fields' key (a visibility
    change): the salt to apply with ``salted``, or 0 if its key stays the same."""
    old_key, new_key = lexical_key(project_id, subject_id, old_fields), lexical_key(project_id, subject_id, fields)
    return 0 if old_key == new_key else key_salt(old_key) ^ key_salt(new_key)


def query_postings(project_id: str, subject_id: str, indices: Sequence[int],
                   values: Sequence[float]) -> SparseVector:
    """The query in the postings of the subject's own memories and of the project's shared
    ones. Both even when only the subject's own are searched (versioning): its own shared
    memories are posted under the shared key, and the access filter keeps others' out."""
    weights: dict[int, float] = {}
    for key in (own_key(project_id, subject_id), shared_key(project_id)):
        salt = key_salt(key)
        for index, value in zip(indices, values):
            weights.setdefault(index ^ salt, value)
    return SparseVector(list(weights), list(weights.values()))
