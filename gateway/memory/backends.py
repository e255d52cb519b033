"""The vector index backends: Qdrant Edge (embedded), a Qdrant server, or Redis's query engine.

``open_edge_index``, ``open_qdrant_index`` and ``open_redis_index`` are registered as ``mnx_gateway.vector_indexes``
entry points (pyproject.toml); ``open_vector_index`` opens the configured one through
``gateway.registry``. Each backend's module (and qdrant_client, redis) is imported only when chosen.
"""

from __future__ import annotations

from gateway import registry
from gateway.config import VectorsConfig
from gateway.errors import ConfigError
from gateway.memory.vector_index import IndexMismatch, VectorIndex


def open_vector_index(config: VectorsConfig, dense_dimensions: int | None) -> VectorIndex:
    try:
        index: VectorIndex = registry.create("vector_index", config.backend, config, dense_dimensions)
    except IndexMismatch as error:
        # The index on disk was built with other settings (vector size, lexicon): name the setting.
        raise ConfigError(f"{error.setting}: {error}") from None
    return index


def open_edge_index(config: VectorsConfig, dense_dimensions: int | None) -> VectorIndex:
    from gateway.memory.edge_index import EdgeIndex

    return EdgeIndex(config.edge.path, dense_dimensions, config.lexical, search_threads=config.edge.search_threads)


def open_qdrant_index(config: VectorsConfig, dense_dimensions: int | None) -> VectorIndex:
    from gateway.memory.qdrant_index import QdrantIndex

    if config.qdrant is None:  # gateway.config requires the section for this backend
        raise ConfigError("memory.vectors: backend 'qdrant' needs a 'qdrant' section with a url or location")
    return QdrantIndex(config.qdrant, dense_dimensions, config.lexical)


def open_redis_index(config: VectorsConfig, dense_dimensions: int | None) -> VectorIndex:
    from gateway.memory.redis_index import RedisIndex

    return RedisIndex(config.redis, dense_dimensions, config.lexical)


async def prepare(index: VectorIndex) -> None:
    """Backends that talk to a server check or create their collection here, at startup."""
    opener = getattr(index, "open", None)
    if opener is None:
        return
    try:
        await opener()
    except IndexMismatch as error:
        raise ConfigError(f"{error.setting}: {error}") from None
