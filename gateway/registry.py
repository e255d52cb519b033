"""One registry for every part of the gateway that gateway.yaml chooses by name.

Built-in backends and plugins are found exactly as third-party ones are: through Python
entry points, one group per kind (pyproject.toml ``[project.entry-points."<group>"]``).
A third-party package adds a name to a group in its own packaging metadata and becomes
selectable in gateway.yaml; nothing here lists the built-ins. An entry point names a
factory, and its module is imported only when that name is chosen, so a gateway that
does not use Qdrant or fastembed never imports them.

Every factory of a kind is called with the same arguments:

* store -- group ``mnx_gateway.stores``: ``(config: StorageConfig, redis) -> DocumentStore``
* queue -- group ``mnx_gateway.queues``: ``(config: StorageConfig, redis) -> JobQueue``
* vector_index -- group ``mnx_gateway.vector_indexes``: ``(config: VectorsConfig, dense_dimensions) -> VectorIndex``
* embedder -- group ``mnx_gateway.embedders``: ``(config: EmbedderConfig, providers) -> Embedder | None``
* extractor -- group ``mnx_gateway.extractors``: ``(config: ExtractorConfig, providers) -> Extractor``
* summarizer -- group ``mnx_gateway.summarizers``: ``(config: SummarizerConfig, providers) -> Summarizer``

``redis`` is the gateway's shared Redis client (``gateway.store.redis_client``) when
``storage.backend`` is redis, else None; ``dense_dimensions`` is the embedder's vector size,
None without one; ``providers`` is the ``providers`` section (``ProvidersConfig``), for
plugins that call a provider's model. An embedder factory returns None for "no dense model".

A name nothing is registered under is a ``ConfigError`` that lists the names that are.
A third-party store, queue or index reads its own settings from ``storage.options`` or
``memory.vectors.options`` (free-form; the built-ins read their own sections).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from collections.abc import Callable

from gateway.config import GatewayConfig
from gateway.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    # The entry-point group its factories are registered under.
    group: str
    # What gateway.yaml calls the setting that names one (the start of every error message).
    setting: str
    # What one is called in messages.
    noun: str


KINDS: dict[str, Kind] = {
    "store": Kind("mnx_gateway.stores", "storage.backend", "store"),
    "queue": Kind("mnx_gateway.queues", "storage.backend", "job queue"),
    "vector_index": Kind("mnx_gateway.vector_indexes", "memory.vectors.backend", "vector index"),
    "embedder": Kind("mnx_gateway.embedders", "memory.embedder.provider", "embedder"),
    "extractor": Kind("mnx_gateway.extractors", "learning.extractor.provider", "extractor"),
    "summarizer": Kind("mnx_gateway.summarizers", "summarization.summarizer.provider", "summarizer"),
}


def known_names(kind: str) -> list[str]:
    """Every name registered for ``kind``, built in or installed by a plugin package."""
    return sorted({entry.name for entry in entry_points(group=KINDS[kind].group)})


def factory(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` for ``kind`` (its module imported now, not before)."""
    spec = KINDS[kind]
    entry = _entry_point(spec, name)
    try:
        factory: Callable[..., Any] = entry.load()
        return factory
    except Exception as error:  # a plugin's import can fail in any way; say which plugin it was
        raise ConfigError(f"{spec.setting}: the {spec.noun} {name!r} ({entry.value}) cannot be loaded: "
                          f"{type(error).__name__}: {error}") from None


def create(kind: str, name: str, *arguments: Any) -> Any:
    """Build the ``kind`` named ``name`` with the arguments every factory of that kind takes."""
    return factory(kind, name)(*arguments)


def configured_names(config: GatewayConfig) -> list[tuple[str, str]]:
    """(kind, name) for every part gateway.yaml chooses by name."""
    return [
        ("store", config.storage.backend),
        ("queue", config.storage.backend),
        ("vector_index", config.memory.vectors.backend),
        ("embedder", config.memory.embedder.provider),
        ("extractor", config.learning.extractor.provider),
        ("summarizer", config.summarization.summarizer.provider),
    ]


def check_names(config: GatewayConfig) -> None:
    """Resolve (and import) every configured backend and plugin, so that a misspelt name or a
    broken plugin fails at startup with its setting, before anything is opened."""
    for kind, name in configured_names(config):
        factory(kind, name)


def _entry_point(spec: Kind, name: str) -> EntryPoint:
    found = {entry.value: entry for entry in entry_points(group=spec.group, name=name)}
    if not found:
        known = sorted({entry.name for entry in entry_points(group=spec.group)})
        if not known:  # not even the built-ins: the code runs from a checkout that was never installed
            raise ConfigError(f"{spec.setting}: no {spec.noun} is registered at all: install the gateway "
                              f"(pip install --no-deps -e .) so its entry points exist")
        raise ConfigError(f"{spec.setting}: no {spec.noun} named {name!r} (known: {', '.join(known)})")
    if len(found) > 1:
        # Two packages claim the name: picking one silently would depend on install order.
        raise ConfigError(f"{spec.setting}: more than one {spec.noun} is named {name!r}: {', '.join(sorted(found))}")
    return next(iter(found.values()))
