#!/usr/bin/env python3
"""Split the labelled versioning pairs into a tune half and a held-out half, deterministically.

Stratified by (label, topic): within each stratum the pairs are ordered by a hash of their
texts and dealt out alternately, the first to the side the stratum's own hash picks (so that
strata with an odd count do not all lean the same way). The result depends only on the set
of pairs, never on their order in a file, so running this on the two files it wrote gives
the same two files back.

    python bench/versioning/split.py                 # re-split pairs_tune.json + pairs_heldout.json
    python bench/versioning/split.py --from all.json # split a new list of pairs

Re-splitting after tuning has begun would move pairs somebody has looked at into the
held-out half: add new pairs to the held-out file only, and leave the split alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TUNE = HERE / "pairs_tune.json"
HELDOUT = HERE / "pairs_heldout.json"
LABELS = ("duplicate", "update", "distinct", "unrelated")


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def split(pairs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tune, heldout), each in label, topic, hash order."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        if pair["label"] not in LABELS:
            raise ValueError(f"unknown label {pair['label']!r} in {pair}")
        strata[(pair["label"], pair["topic"])].append(pair)
    tune: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    for (label, topic), members in sorted(strata.items(), key=lambda item: (LABELS.index(item[0][0]), item[0][1])):
        members.sort(key=lambda pair: _digest(f"{pair['old']}\n{pair['new']}"))
        first_to_tune = _digest(f"{label}/{topic}")[0] % 2 == 0
        for i, pair in enumerate(members):
            (tune if (i % 2 == 0) == first_to_tune else heldout).append(pair)
    return tune, heldout


def write(path: Path, pairs: list[dict[str, Any]]) -> None:
    # One pair a line: readable in a diff, and a JSON list all the same.
    lines = ",\n".join("  " + json.dumps(pair, ensure_ascii=False) for pair in pairs)
    path.write_text(f"[\n{lines}\n]\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="a JSON list of pairs to split (default: the two split files together)")
    args = parser.parse_args()
    if args.source:
        pairs = json.loads(args.source.read_text())
    else:
        pairs = json.loads(TUNE.read_text()) + json.loads(HELDOUT.read_text())
    seen = set()
    for pair in pairs:
        key = (pair["old"], pair["new"])
        if key in seen:
            raise SystemExit(f"the pair {key} is listed twice")
        seen.add(key)
    tune, heldout = split(pairs)
    write(TUNE, tune)
    write(HELDOUT, heldout)
    print(f"{len(tune)} tune pairs -> {TUNE.name}, {len(heldout)} held-out pairs -> {HELDOUT.name}")


if __name__ == "__main__":
    main()
