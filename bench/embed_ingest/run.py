#!/usr/bin/env python3
"""Ingest throughput with each built-in embedder: one model call per memory against a batch per call.

Memories go through the memories service as the gateway stores them (versioning, claims, the
truth graph, SQLite + Qdrant Edge, the embedded default), in process, no HTTP, ``--memories``
distinct texts over ``--subjects`` subjects, for each embedder that runs offline here:

* ``none``: the default config, BM25 only (no model: single and batched are the same path);
* ``fastembed``: the ONNX path (onnxruntime through fastembed), on a model the benchmark writes
  itself, as tests/test_fastembed_embedder.py does, since nothing may be downloaded: a
  word-level tokenizer and a BERT encoder of all-MiniLM-L6-v2's shape (6 layers, hidden 384,
  12 heads, feed-forward 1536, about 22M weights, random), so each call costs what that
  model's does on this CPU (the vectors mean nothing, and no search quality is measured);
* ``sentence-transformers``: only where torch and a local model are installed (skipped otherwise,
  and the table says so); ``litellm`` calls a provider over the network: not measured.

Modes, each on a fresh store and index:

* create, single: ``Memories.create`` per memory, its text embedded in a call of its own (what
  every memory cost before issue 22 item 5, and what ``POST /memories`` still does);
* create, batched: the texts of each ``--batch`` memories embedded in one call
  (``Memories.dense_vectors``, as a learn job or ``POST /memories/extract`` now does), then
  each created in turn with its vector;
* import re-index, single / batched: every stored memory's index point rewritten from the store
  (``Memories.reindex`` per memory, as an import did, against ``Memories.reindex_many``, 64 per
  call, as it does now);
* create, concurrent: ``--concurrency`` creates at a time, each embedding its own text, as
  concurrent ``POST /memories`` do; a local model merges the calls that arrive while it runs
  (gateway/memory/merged_calls.py);
* in brackets: the milliseconds per memory spent in embedder calls, the part batching changes.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/embed_ingest/run.py [--memories 300] [--subjects 20] [--batch 16] [--concurrency 8]
        [--rounds 3]

``--smoke`` (what tests/test_bench_smoke.py runs): 24 memories, one round, README left alone. Prints a
markdown table and writes it into bench/README.md between the embed-ingest markers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- embed-ingest-results:start -->"
RESULTS_END = "<!-- embed-ingest-results:end -->"
PROJECT = "bench"

# all-MiniLM-L6-v2's shape.
LAYERS, HIDDEN, HEADS, FEED_FORWARD = 6, 384, 12, 1536
VOCABULARY = 30_522

NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo"]
VERBS = ["visited", "photographed", "painted", "wrote about", "bought", "repaired", "studied", "sold", "drew",
         "described"]
THINGS = ["an old lighthouse", "a red bicycle", "the harbour market", "a pine forest", "a jazz record",
          "a copper kettle", "the city library", "a mountain cabin", "a vintage camera", "a wooden boat",
          "a silk scarf", "the night train"]
PLACES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Tbilisi", "Hanoi", "Cusco", "Bergen", "Accra",
          "Perth", "Tallinn", "Bogota", "Porto", "Dakar"]


def texts(count: int) -> list[str]:
    """Distinct, plausible memory texts (about a dozen words each)."""
    rng = random.Random(7)
    made = []
    for number in range(count):
        made.append(f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} "
                    f"during the spring of {1900 + number}")
    return made


def write_minilm_shaped_model(directory: Path, words: list[str]) -> Path:
    """A sentence-transformers style ONNX export (tokenizer.json, model.onnx) of a BERT encoder
    with all-MiniLM-L6-v2's dimensions and random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    directory.mkdir(parents=True)
    vocabulary = {"[PAD]": 0, "[UNK]": 1}
    for word in words:
        vocabulary.setdefault(word, len(vocabulary))
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]",
                                                                  "model_max_length": 256}))
    (directory / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]"}))

    rng = np.random.default_rng(7)
    weights: list[Any] = []

    def weight(name: str, *shape: int, scale: float = 0.02) -> str:
        weights.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def constant(name: str, values: Any, dtype: Any = np.int64) -> str:
        weights.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    nodes = []

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    head = HIDDEN // HEADS
    split_heads = constant("split_heads", [0, 0, HEADS, head])
    join_heads = constant("join_heads", [0, 0, HIDDEN])
    mask_axes = constant("mask_axes", [1, 2])
    x = node("Gather", [weight("word_embeddings", VOCABULARY, HIDDEN), "input_ids"], "embedded", axis=0)
    # Padding positions get -10000 before the softmax, as BERT's extended attention mask does.
    mask = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    mask = node("Sub", [constant("one", 1.0, np.float32), mask], "mask_inverted")
    mask = node("Mul", [mask, constant("minus_big", -10000.0, np.float32)], "mask_scaled")
    mask = node("Unsqueeze", [mask, mask_axes], "mask_bias")
    scale = constant("attention_scale", 1.0 / head ** 0.5, np.float32)
    def dense(layer: int, source: str, name: str, rows: int, columns: int) -> str:
        product = node("MatMul", [source, weight(f"l{layer}_{name}_w", rows, columns)], f"l{layer}_{name}_mm")
        return node("Add", [product, weight(f"l{layer}_{name}_b", columns)], f"l{layer}_{name}")

    def heads(layer: int, source: str, name: str, permutation: list[int]) -> str:
        split = node("Reshape", [source, split_heads], f"l{layer}_{name}_split")
        return node("Transpose", [split], f"l{layer}_{name}_heads", perm=permutation)

    for layer in range(LAYERS):

        query = heads(layer, dense(layer, x, "q", HIDDEN, HIDDEN), "q", [0, 2, 1, 3])
        key = heads(layer, dense(layer, x, "k", HIDDEN, HIDDEN), "k", [0, 2, 3, 1])
        value = heads(layer, dense(layer, x, "v", HIDDEN, HIDDEN), "v", [0, 2, 1, 3])
        scores = node("MatMul", [query, key], f"l{layer}_scores")
        scores = node("Mul", [scores, scale], f"l{layer}_scaled")
        scores = node("Add", [scores, mask], f"l{layer}_masked")
        attention = node("Softmax", [scores], f"l{layer}_attention", axis=-1)
        context = node("MatMul", [attention, value], f"l{layer}_context")
        context = node("Transpose", [context], f"l{layer}_context_t", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, join_heads], f"l{layer}_context_joined")
        attended = node("Add", [x, dense(layer, context, "o", HIDDEN, HIDDEN)], f"l{layer}_residual1")
        x = node("LayerNormalization", [attended, weight(f"l{layer}_ln1_g", HIDDEN, scale=1.0),
                                        weight(f"l{layer}_ln1_b", HIDDEN)], f"l{layer}_norm1", axis=-1)
        inner = node("Relu", [dense(layer, x, "ff1", HIDDEN, FEED_FORWARD)], f"l{layer}_ff_act")
        fed = node("Add", [x, dense(layer, inner, "ff2", FEED_FORWARD, HIDDEN)], f"l{layer}_residual2")
        x = node("LayerNormalization", [fed, weight(f"l{layer}_ln2_g", HIDDEN, scale=1.0),
                                        weight(f"l{layer}_ln2_b", HIDDEN)], f"l{layer}_norm2", axis=-1)
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", HIDDEN])
    model = helper.make_model(helper.make_graph(nodes, "minilm_shaped", inputs, [output], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.onnx"))
    return directory


@dataclass(frozen=True)
class Embedder:
    name: str
    # The memory.embedder section, or None when this embedder cannot run here.
    section: dict[str, Any] | None
    note: str


def embedders(directory: Path, corpus: list[str], sentence_model: str) -> list[Embedder]:
    found = [Embedder("none", {"provider": "none"}, "the default: BM25 only, no model")]
    if importlib.util.find_spec("fastembed") is None:
        found.append(Embedder("fastembed", None, "skipped: fastembed is not installed"))
    else:
        words = sorted({word.lower() for text in corpus for word in text.split()})
        model = write_minilm_shaped_model(directory / "minilm-shaped", words)
        found.append(Embedder("fastembed", {"provider": "fastembed", "model": "bench/minilm-shaped",
                                            "model_path": str(model), "dimensions": HIDDEN},
                              "ONNX through fastembed: a MiniLM-L6-shaped encoder (random weights)"))
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("sentence_transformers") is None:
        found.append(Embedder("sentence-transformers", None, "skipped: torch / sentence-transformers not installed"))
    else:
        found.append(Embedder("sentence-transformers", {"provider": "sentence-transformers", "model": sentence_model},
                              f"{sentence_model} on CPU"))
    return found


def build_services(directory: Path, name: str, embedder: dict[str, Any]) -> Any:
    from gateway.config import parse_config
    from gateway.services import Services

    config = parse_config({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(directory / f"{name}.db")}},
        "memory": {"vectors": {"edge": {"path": str(directory / f"{name}-index")}}, "embedder": embedder},
        "projects": [{"id": PROJECT, "keys": [{"key": "mnx_bench_key"}]}]})
    return Services.build(config)


async def ingest(directory: Path, name: str, section: dict[str, Any], corpus: list[str], subjects: int,
                 batch: int, concurrency: int = 1) -> dict[str, float]:
    """Create every text as a memory, their texts embedded ``batch`` per model call (1: each its
    own call, the call ``Memories.create`` makes by itself without a vector); with ``batch`` 1,
    then re-index them all from the store, one per call and 64 per call. Rates in memories/s,
    and the model's share: milliseconds per memory spent in embedder calls. ``concurrency`` > 1:
    that many creates at a time instead, each embedding its own text."""
    from gateway.memory.changes import NewMemory

    services = build_services(directory, name, section)
    await services.store.ping()
    memories = services.memories
    ids: list[str] = []
    in_model = 0.0
    started = time.perf_counter()
    if concurrency > 1:
        # As concurrent POST /memories do: each create embeds its own text, at the same time as
        # the others (a local model merges their calls: gateway/memory/merged_calls.py).
        for start in range(0, len(corpus), concurrency):
            made = await asyncio.gather(*(memories.create(PROJECT, NewMemory(f"s{number % subjects}", corpus[number]))
                                          for number in range(start, min(start + concurrency, len(corpus)))))
            ids += [result["id"] for result, created in made if created]
        await services.aclose()
        return {"created": float(len(ids)), "create": len(ids) / (time.perf_counter() - started)}
    for start in range(0, len(corpus), batch):
        chunk = corpus[start:start + batch]
        called = time.perf_counter()
        vectors = await memories.dense_vectors(chunk)
        in_model += time.perf_counter() - called
        for offset, (text, dense) in enumerate(zip(chunk, vectors)):
            result, created = await memories.create(PROJECT, NewMemory(f"s{(start + offset) % subjects}", text),
                                                    dense=dense)
            if created:
                ids.append(result["id"])
    rates = {"created": float(len(ids)), "create": len(ids) / (time.perf_counter() - started),
             "model_ms": 1000 * in_model / len(corpus)}
    if batch == 1:
        started = time.perf_counter()
        for memory_id in ids:
            await memories.reindex(PROJECT, memory_id)
        rates["reindex_single"] = len(ids) / (time.perf_counter() - started)
        started = time.perf_counter()
        await memories.reindex_many(PROJECT, ids)
        rates["reindex_batched"] = len(ids) / (time.perf_counter() - started)
    await services.aclose()
    return rates


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(found[key] for found in rounds) for key in rounds[0]}


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


# An embedder, and its rates one call per memory, batched, and with concurrent callers (None: not run).
Row = tuple[Embedder, dict[str, float] | None, dict[str, float] | None, dict[str, float] | None]


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {results.machine_description()}, "
             f"`{results.command_line()}`: {args.memories} memories over {args.subjects} subjects, "
             f"batched = {args.batch} texts per embedder call (import re-index: 64), concurrent = "
             f"{args.concurrency} creates at a time, medians of {args.rounds} rounds that alternate the modes; "
             "in brackets, the milliseconds per memory spent in the model:", "",
             "| embedder | create, one call per memory (memories/s) | create, batched (memories/s) | speed-up | "
             f"create, {args.concurrency} concurrent callers (memories/s) | "
             "import re-index, one call per memory (memories/s) | import re-index, batched (memories/s) | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for embedder, single, batched, concurrent in rows:
        if single is None or batched is None or concurrent is None:
            lines.append(f"| {embedder.name} | — | — | — | — | — | — | {embedder.note} |")
            continue
        # Without a model both modes run the same code: their difference is the machine's noise.
        speedup = (f"{batched['create'] / single['create']:.1f}x" if embedder.section
                   and embedder.section["provider"] != "none" else "same path")
        lines.append(f"| {embedder.name} | {rate(single['create'])} ({single['model_ms']:.1f} ms) | "
                     f"{rate(batched['create'])} ({batched['model_ms']:.1f} ms) | {speedup} | "
                     f"{rate(concurrent['create'])} | {rate(single['reindex_single'])} | "
                     f"{rate(single['reindex_batched'])} | {embedder.note} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    from gateway.errors import ConfigError

    corpus = texts(args.memories)
    with tempfile.TemporaryDirectory(prefix="mnx-embed-ingest-") as temporary:
        directory = Path(temporary)
        rows: list[Row] = []
        for embedder in embedders(directory, corpus, args.sentence_model):
            if embedder.section is None:
                rows.append((embedder, None, None, None))
                continue
            try:  # warm up (imports, the model's first calls, SQLite and Edge files), not counted
                await ingest(directory, f"{embedder.name}-warm-up", embedder.section, corpus[:16], args.subjects, 8)
            except ConfigError as error:  # the model could not be loaded here (no download allowed)
                rows.append((Embedder(embedder.name, None, f"skipped: {error}"), None, None, None))
                continue
            singles: list[dict[str, float]] = []
            batches: list[dict[str, float]] = []
            concurrent: list[dict[str, float]] = []
            # Rounds alternate the modes, so that load from elsewhere on the machine falls on both.
            for number in range(args.rounds):
                print(f"{embedder.name}, round {number + 1}: {len(corpus)} memories one call each, then "
                      f"{args.batch} per call", file=sys.stderr)
                singles.append(await ingest(directory, f"{embedder.name}-single-{number}", embedder.section,
                                            corpus, args.subjects, 1))
                batches.append(await ingest(directory, f"{embedder.name}-batched-{number}", embedder.section,
                                            corpus, args.subjects, args.batch))
                concurrent.append(await ingest(directory, f"{embedder.name}-concurrent-{number}",
                                               embedder.section, corpus, args.subjects, 1, args.concurrency))
                if singles[-1]["created"] != batches[-1]["created"]:
                    raise SystemExit(f"{embedder.name}: {singles[-1]['created']:.0f} memories created one by one "
                                     f"but {batches[-1]['created']:.0f} batched: versioning decided differently")
            rows.append((embedder, medians(singles), medians(batches), medians(concurrent)))
        return table(rows, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=300)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="texts per embedder call when batched")
    parser.add_argument("--sentence-model", default="sentence-transformers/all-MiniLM-L6-v2",
                        help="the sentence-transformers model (a local directory, or a name in the local cache)")
    parser.add_argument("--concurrency", type=int, default=8, help="creates at a time in the concurrent mode")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode; the table shows medians")
    parser.add_argument("--smoke", action="store_true", help="24 memories, one round; the README is left alone")
    args = parser.parse_args()
    if args.smoke:
        args.memories, args.subjects, args.rounds = 24, 4, 1
    text = asyncio.run(run(args))
    print(text)
    if not args.smoke:
        results.write_readme(README, RESULTS_START, RESULTS_END, text)


if __name__ == "__main__":
    main()
