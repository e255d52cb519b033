"""Opening the configured vector index: Qdrant Edge (embedded) or a Qdrant server."""

from __future__ import annotations

from gateway.config import VectorsConfig
from gateway.errors import ConfigError
from gateway.memory.vector_index import IndexMismatch, VectorIndex


def open_vector_index(config: VectorsConfig, dense_dimensions: int | None) -> VectorIndex:
    try:
        if config.backend == "qdrant":
            from gateway.memory.qdrant_index import QdrantIndex

            assert config.qdrant is not None
            return QdrantIndex(config.qdrant, dense_dimensions, config.lexical)
        from gateway.memory.edge_index import EdgeIndex

        return EdgeIndex(config.edge.path, dense_dimensions, config.lexical)
    except IndexMismatch as error:
        raise ConfigError(f"{error.setting}: {error}") from None


async def prepare(index: VectorIndex) -> None:
    """Backends that talk to a server check or create their collection here, at startup."""
    opener = getattr(index, "open", None)
    if opener is None:
        return
    try:
        await opener()
    except IndexMismatch as error:
        raise ConfigError(f"{error.setting}: {error}") from None
