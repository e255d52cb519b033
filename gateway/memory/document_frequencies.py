"""Document frequencies of a project's indexed terms, and the IDF they give a query.

The embedded index posts each subject's terms apart (see ``lexical_postings``), so the
engine's own IDF would only count one subject's memories: measured on bench/locomo,
that ranks worse than an IDF over the whole project (MRR 0.550 against 0.559, and
below plain BM25 on one category). So the index counts, per project, how many memories
hold each term, and weighs the query by that instead, with the engine's formula.

Only single terms are counted (they are kept with each memory as ``terms`` and
``context_terms``): adjacent-term pairs would multiply the table by twenty. Nearly
every pair is rare, so an uncounted query term is weighed as if one memory held it
(a single term no memory holds matches nothing anyway). On bench/locomo this ranks
within 0.002 of the engine's own IDF over every term.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import numpy as np


class DocumentFrequencies:
    def __init__(self) -> None:
        self._terms: dict[str, Counter[int]] = {}
        self._documents: Counter[str] = Counter()

    def add(self, project_id: str, fields: dict[str, Any]) -> None:
        """Count one indexed memory (its search-time fields) in."""
        self._documents[project_id] += 1
        self._terms.setdefault(project_id, Counter()).update(_terms_of(fields))

    def remove(self, project_id: str, fields: dict[str, Any]) -> None:
        """Count one indexed memory out (replaced or erased)."""
        self._documents[project_id] -= 1
        counts = self._terms.get(project_id)
        if counts is not None:
            counts.subtract(_terms_of(fields))

    def idf(self, project_id: str, terms: Iterable[int]) -> list[float]:
        """Qdrant's IDF (ln(1 + (N - n + 0.5) / (n + 0.5))) of each term over the project."""
        total = max(self._documents[project_id], 0)
        counts = self._terms.get(project_id) or Counter()
        weights = []
        for term in terms:
            held = max(counts.get(term, 0), 1)  # uncounted: a pair (see the module's docstring)
            weights.append(math.log(1.0 + (total - held + 0.5) / (held + 0.5)))
        return weights

    # --- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write every project's counts to ``path`` (one .npz: two arrays per project)."""
        arrays: dict[str, np.ndarray] = {}
        projects = sorted(p for p, n in self._documents.items() if n > 0)
        for number, project_id in enumerate(projects):
            counts = {t: n for t, n in self._terms.get(project_id, Counter()).items() if n > 0}
            arrays[f"terms_{number}"] = np.fromiter(counts.keys(), dtype=np.uint32, count=len(counts))
            arrays[f"counts_{number}"] = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
        arrays["projects"] = np.array(projects, dtype=str)
        arrays["documents"] = np.array([self._documents[p] for p in projects], dtype=np.int64)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # numpy types **arrays as its own keywords
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> DocumentFrequencies:
        loaded = cls()
        with np.load(path) as arrays:
            for number, (project_id, documents) in enumerate(zip(arrays["projects"], arrays["documents"])):
                loaded._documents[str(project_id)] = int(documents)
                loaded._terms[str(project_id)] = Counter(dict(zip(arrays[f"terms_{number}"].tolist(),
                                                                  arrays[f"counts_{number}"].tolist())))
        return loaded


def _terms_of(fields: dict[str, Any]) -> list[int]:
    return [*fields.get("terms", ()), *fields.get("context_terms", ())]
