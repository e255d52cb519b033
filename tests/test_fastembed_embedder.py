"""The fastembed embedder: an ONNX model run in-process, no key, no torch.

There is no model hub here, so the model is one the test writes itself: a word-level
tokenizer and an ONNX graph whose "hidden states" are a fixed vector per word, in the
layout of a sentence-transformers export (tokenizer.json, tokenizer_config.json,
model.onnx). Words that mean the same share a vector, so the dense leg can find what
BM25 cannot: the real fastembed and onnxruntime run it end to end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from gateway import registry
from gateway.config import EmbedderConfig, ProvidersConfig
from gateway.errors import ConfigError
from tests.conftest import edge_memory

DIMENSIONS = 16
MODEL = "local/synonym-words"
SUBJECT = "driver"
# Each group's words get one shared direction; the last group is plain filler.
MEANINGS = [["car", "automobile", "vehicle", "sedan"], ["dog", "puppy", "hound"], ["coffee", "espresso", "latte"],
            ["user", "drives", "an", "owns", "a", "likes", "what", "does", "the", "which", "drink", "pet"]]


def write_model(directory: Path) -> Path:
    words = [word for group in MEANINGS for word in group]
    vocabulary = {"[PAD]": 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate(words)}}
    rng = np.random.default_rng(7)
    table = np.zeros((len(vocabulary), DIMENSIONS), dtype=np.float32)
    table[1] = rng.standard_normal(DIMENSIONS)
    for number, group in enumerate(MEANINGS[:-1]):
        for word in group:
            table[vocabulary[word], number] = 1.0  # the meaning: one axis per group
    for word in MEANINGS[-1]:  # filler words: small, spread over the other axes
        table[vocabulary[word], len(MEANINGS):] = 0.05 * rng.standard_normal(DIMENSIONS - len(MEANINGS))

    directory.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]",
                                                                  "model_max_length": 64}))
    (directory / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]"}))
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])
    hidden = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", DIMENSIONS])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)],
                              "synonym_words", [ids, mask], [hidden], [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.onnx"))
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("fastembed") / "synonym-words")


def fastembed_memory(index: Path, model_dir: Path) -> dict:
    return {**edge_memory(index), "embedder": {"provider": "fastembed", "model": MODEL, "model_path": str(model_dir),
                                               "dimensions": DIMENSIONS}}


def test_the_dense_leg_finds_a_synonym_that_bm25_cannot(start_gateway, storage_sqlite, tmp_path, model_dir):
    gateway = start_gateway(storage_sqlite, memory=fastembed_memory(tmp_path / "index", model_dir))
    with gateway.rest() as rest:
        car = rest.post("/memories", json={"subject_id": SUBJECT, "text": "User drives an automobile"})
        assert car.status_code == 201
        rest.post("/memories", json={"subject_id": SUBJECT, "text": "User owns a puppy"})
        rest.post("/memories", json={"subject_id": SUBJECT, "text": "User likes espresso"})

        # No word in common with any memory (and no key: the model is local).
        found = rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "sedan"}).json()
        assert found["engine"] == "hybrid"
        assert found["data"][0]["id"] == car.json()["id"] and found["data"][0]["score"] > 0.9
        drink = rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "latte"}).json()
        assert drink["data"][0]["text"] == "User likes espresso"

        # The same fact in other words is a duplicate: versioning compares the dense vectors.
        again = rest.post("/memories", json={"subject_id": SUBJECT, "text": "User drives a car"})
        assert again.status_code == 200 and again.json()["created"] is False
        assert rest.get("/memories", params={"subject_id": SUBJECT}).json()["count"] == 3

    # Without the dense model the same question finds nothing.
    lexical = start_gateway(storage_sqlite, memory=edge_memory(tmp_path / "lexical-index"))
    with lexical.rest() as rest:
        rest.post("/memories", json={"subject_id": SUBJECT, "text": "User drives an automobile"})
        assert rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "sedan"}).json()["data"] == []


def test_vectors_are_unit_length_and_follow_the_text(model_dir):
    embedder = registry.create("embedder", "fastembed", EmbedderConfig(
        provider="fastembed", model=MODEL, model_path=str(model_dir), dimensions=DIMENSIONS), ProvidersConfig())
    assert embedder is not None and embedder.dimensions == DIMENSIONS
    car, automobile, dog = np.asarray(asyncio.run(embedder.embed(["car", "the automobile", "dog"])))
    assert np.allclose(np.linalg.norm([car, automobile, dog], axis=1), 1.0, atol=1e-5)
    assert float(car @ automobile) > 0.95 and abs(float(car @ dog)) < 0.05


def test_a_model_that_cannot_be_loaded_fails_at_startup_with_what_to_do(model_dir, tmp_path, monkeypatch):
    def load(**embedder) -> None:
        registry.create("embedder", "fastembed", EmbedderConfig(provider="fastembed", **embedder), ProvidersConfig())

    with pytest.raises(ConfigError, match="dimensions is 384 but .* gives 16"):
        load(model=MODEL, model_path=str(model_dir), dimensions=384)
    with pytest.raises(ConfigError, match="dimensions is required"):
        load(model="local/unregistered", model_path=str(model_dir))
    with pytest.raises(ConfigError, match="not one of fastembed's models"):
        load(model="acme/no-such-model")
    with pytest.raises(ConfigError, match="could not load .* from .*empty"):
        (tmp_path / "empty").mkdir()
        load(model="local/empty", model_path=str(tmp_path / "empty"), dimensions=8)
    # A model fastembed knows, not downloaded yet, on a machine with no network: a clear error
    # that says how to run offline (HF_HUB_OFFLINE makes the download fail at once).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="needs the network once, or set memory.embedder.model_path"):
        load(model="BAAI/bge-small-en-v1.5", cache_dir=str(tmp_path / "cache"))
