"""The one registry of backends and plugins (gateway.registry): built-ins and third-party
plugins found through the same entry points, and misspelt names refused at startup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import httpx
import pytest
import yaml

from gateway import registry
from gateway.config import EmbedderConfig, ExtractorConfig, ProvidersConfig, StorageConfig, VectorsConfig
from gateway.errors import ConfigError
from tests.conftest import KEY, PROVIDER_KEY, wait_until

BUILT_IN = {
    "store": {"sqlite", "redis"},
    "queue": {"sqlite", "redis"},
    "vector_index": {"edge", "qdrant"},
    "embedder": {"none", "litellm", "sentence-transformers", "fastembed"},
    "extractor": {"heuristic", "litellm"},
    "summarizer": {"extractive", "litellm"},
}

# A third-party package, installed the way pip installs one: its module, and a dist-info
# directory whose entry_points.txt registers an extractor under the existing group.
PLUGIN_MODULE = "acme_mnx_plugin"
PLUGIN_SOURCE = '''
from gateway.memory.extraction import ExtractedMemory


class ShoutingExtractor:
    """Remembers every user message, in capitals."""

    def __init__(self, config, providers):
        self.prefix = config.model or "SAID"

    def key_for(self, caller_keys):
        return None

    async def extract(self, exchange, *, api_key=None):
        return [ExtractedMemory(f"{self.prefix}: {message.upper()}", "note") for message in exchange.user_messages]
'''


def install_plugin(root: Path, entry_points: str, *, distribution: str = "acme-mnx-plugin",
                   source: str = PLUGIN_SOURCE) -> None:
    dist_info = root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (root / f"{PLUGIN_MODULE}.py").write_text(source)


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """``install(entry_points, source=PLUGIN_SOURCE)``: a plugin package on sys.path, for this test only."""
    def put(entry_points: str, source: str = PLUGIN_SOURCE) -> Path:
        root = tmp_path / "site"
        install_plugin(root, entry_points, source=source)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield put
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.fixture
def plugin(install: Callable[..., Path]) -> Path:
    """The shouting extractor's package on sys.path, for this test only."""
    return install(f"""
        [mnx_gateway.extractors]
        shouting = {PLUGIN_MODULE}:ShoutingExtractor
        """)


def learning_turn(gateway: Any, text: str) -> None:
    """One answered chat turn for subject "s" with learning on."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": "s", "history": False, "learn": True}}
    with httpx.Client(timeout=30) as client:
        answer = client.post(gateway.url + "/v1/chat/completions", json=body,
                             headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert answer.status_code == 200


def _cli() -> list[str]:
    script = shutil.which("mnx-gateway", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "gateway"]


def _config_file(tmp_path: Path, **sections: Any) -> Path:
    data = {"projects": [{"id": "p", "keys": [{"key": "k"}]}],
            "storage": {"sqlite": {"path": str(tmp_path / "gateway.db")}},
            "memory": {"vectors": {"edge": {"path": str(tmp_path / "index")}}}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- built-ins --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BUILT_IN))
def test_every_built_in_is_registered_through_its_entry_point_group(kind):
    assert BUILT_IN[kind] <= set(registry.known_names(kind))
    for name in BUILT_IN[kind]:
        assert callable(registry.factory(kind, name))


def test_built_ins_are_built_with_the_arguments_of_their_kind(tmp_path):
    from gateway.jobs.sqlite_queue import SqliteJobQueue
    from gateway.memory.edge_index import EdgeIndex
    from gateway.store.sqlite import SqliteDocumentStore
    from plugins.extractors import HeuristicExtractor, LLMExtractor

    storage = StorageConfig(sqlite={"path": str(tmp_path / "gateway.db")})
    assert isinstance(registry.create("store", "sqlite", storage, None), SqliteDocumentStore)
    assert isinstance(registry.create("queue", "sqlite", storage, None), SqliteJobQueue)
    index = registry.create("vector_index", "edge", VectorsConfig(edge={"path": str(tmp_path / "index")}), None)
    assert isinstance(index, EdgeIndex)
    providers = ProvidersConfig()
    assert registry.create("embedder", "none", EmbedderConfig(), providers) is None
    assert isinstance(registry.create("extractor", "heuristic", ExtractorConfig(), providers), HeuristicExtractor)
    llm = ExtractorConfig(provider="litellm", model="gpt-4o-mini")
    assert isinstance(registry.create("extractor", "litellm", llm, providers), LLMExtractor)


def test_a_backend_module_is_imported_only_when_chosen(tmp_path):
    """The embedded default gateway never imports qdrant_client, fastembed or the Redis backends."""
    config = _config_file(tmp_path)
    probe = f"""
import sys
from gateway.config import load_config
from gateway.services import Services
Services.build(load_config({str(config)!r}))
print(sorted(m for m in ("qdrant_client", "fastembed", "sentence_transformers", "gateway.store.redis",
                         "gateway.jobs.redis_queue", "gateway.memory.qdrant_index") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- names that resolve to nothing ------------------------------------------------------------

@pytest.mark.parametrize("kind, name, message", [
    ("extractor", "heurstic", "learning.extractor.provider: no extractor named 'heurstic' (known: heuristic, litellm)"),
    ("embedder", "fastembd", "memory.embedder.provider: no embedder named 'fastembd' (known: fastembed, litellm, "
                             "none, sentence-transformers)"),
    ("store", "mongo", "storage.backend: no store named 'mongo' (known: redis, sqlite)"),
    ("queue", "mongo", "storage.backend: no job queue named 'mongo' (known: redis, sqlite)"),
    ("vector_index", "faiss", "memory.vectors.backend: no vector index named 'faiss' (known: edge, qdrant, redis)"),
])
def test_an_unknown_name_lists_the_names_that_exist(kind, name, message):
    with pytest.raises(ConfigError) as error:
        registry.factory(kind, name)
    assert str(error.value) == message


# --- third-party plugins ----------------------------------------------------------------------

def test_a_third_party_plugin_is_found_through_its_entry_point(plugin):
    assert "shouting" in registry.known_names("extractor")
    extractor = registry.create("extractor", "shouting", ExtractorConfig(provider="shouting", model="HEARD"),
                                ProvidersConfig())
    assert extractor.prefix == "HEARD"
    with pytest.raises(ConfigError, match=r"\(known: heuristic, litellm, shouting\)"):
        registry.factory("extractor", "shoutin")


def test_a_gateway_learns_through_a_third_party_extractor(plugin, start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, learning={"extractor": {"provider": "shouting"}})
    learning_turn(gateway, "remember the blue door")

    def texts() -> list[str]:
        with gateway.rest() as rest:
            return [m["text"] for m in rest.get("/memories", params={"subject_id": "s"}).json()["data"]]

    assert wait_until(lambda: texts() == ["SAID: REMEMBER THE BLUE DOOR"]), texts()


def test_two_packages_claiming_one_name_is_an_error_not_a_coin_toss(plugin, tmp_path, monkeypatch):
    rival = tmp_path / "rival"
    install_plugin(rival, f"""
        [mnx_gateway.extractors]
        shouting = {PLUGIN_MODULE}:SomethingElse
        """, distribution="rival-plugin")
    monkeypatch.syspath_prepend(str(rival))
    with pytest.raises(ConfigError, match="more than one extractor is named 'shouting'"):
        registry.factory("extractor", "shouting")


def test_a_plugin_that_fails_to_import_names_itself(tmp_path, monkeypatch):
    root = tmp_path / "broken"
    install_plugin(root, f"""
        [mnx_gateway.embedders]
        broken = {PLUGIN_MODULE}:Embedder
        """, source="import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(root))
    try:
        with pytest.raises(ConfigError) as error:
            registry.factory("embedder", "broken")
    finally:
        sys.modules.pop(PLUGIN_MODULE, None)
    assert str(error.value).startswith(f"memory.embedder.provider: the embedder 'broken' ({PLUGIN_MODULE}:Embedder) "
                                       "cannot be loaded: ModuleNotFoundError")


# --- the command line -------------------------------------------------------------------------

def _check_config(tmp_path: Path, sections: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = _config_file(tmp_path, **sections)
    return subprocess.run(_cli() + ["check-config", "--config", str(config)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("sections, message", [
    ({"learning": {"extractor": {"provider": "heurstic"}}},
     "learning.extractor.provider: no extractor named 'heurstic' (known: heuristic, litellm)"),
    ({"memory": {"embedder": {"provider": "fastembd", "model": "BAAI/bge-small-en-v1.5"}}},
     "memory.embedder.provider: no embedder named 'fastembd'"),
])
def test_check_config_rejects_a_misspelt_name_in_one_line(tmp_path, sections, message):
    failed = _check_config(tmp_path, sections)
    assert failed.returncode == 2
    assert message in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr


@pytest.mark.parametrize("sections, message", [
    ({"storage": {"backend": "sqllite"}}, "storage.backend: no store named 'sqllite' (known: redis, sqlite)"),
    ({"memory": {"vectors": {"backend": "qdrnt"}}},
     "memory.vectors.backend: no vector index named 'qdrnt' (known: edge, qdrant, redis)"),
])
def test_check_config_rejects_a_misspelt_backend(tmp_path, sections, message):
    """Backends are chosen through the registry too, so a third-party one can be named."""
    failed = _check_config(tmp_path, sections)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"mnx-gateway: {message}"], failed.stderr


def test_serve_refuses_a_misspelt_name_without_a_traceback(tmp_path):
    config = _config_file(tmp_path, learning={"extractor": {"provider": "heurstic"}})
    failed = subprocess.run(_cli() + ["serve", "--config", str(config), "--port", "0"], capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "mnx-gateway: learning.extractor.provider: no extractor named 'heurstic' (known: heuristic, litellm)"]
    assert not (tmp_path / "gateway.db").exists()  # refused before anything was opened


def test_check_config_accepts_an_installed_plugin(plugin, tmp_path):
    config = _config_file(tmp_path, learning={"extractor": {"provider": "shouting"}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")]))}
    ok = subprocess.run(_cli() + ["check-config", "--config", str(config)], capture_output=True, text=True,
                        timeout=60, env=env)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr


UNSTORABLE_SOURCE = '''
from gateway.memory.extraction import ExtractedMemory


class GossipExtractor:
    """Returns a memory of a kind the Memories API does not have."""

    def __init__(self, config, providers):
        pass

    def key_for(self, caller_keys):
        return None

    async def extract(self, exchange, *, api_key=None):
        return [ExtractedMemory("a fine memory", "note"), ExtractedMemory("a rumour", "gossip")]
'''


def test_a_third_party_extractors_unstorable_memory_fails_the_job_and_stores_nothing(
        install, start_gateway, storage_sqlite):
    install(f"""
        [mnx_gateway.extractors]
        gossip = {PLUGIN_MODULE}:GossipExtractor
        """, source=UNSTORABLE_SOURCE)
    gateway = start_gateway(storage_sqlite, learning={"extractor": {"provider": "gossip"}})
    learning_turn(gateway, "psst")

    def errors() -> list[str]:
        with gateway.rest() as rest:
            return [job.get("last_error") or "" for job in rest.get("/jobs").json()["data"]]

    assert wait_until(lambda: any("kind 'gossip'" in error for error in errors())), errors()
    with gateway.rest() as rest:
        assert rest.get("/memories", params={"subject_id": "s"}).json()["data"] == []


STORE_PLUGIN_SOURCE = '''
from gateway.jobs.sqlite_queue import SqliteJobQueue
from gateway.store.sqlite import SqliteDocumentStore


def open_store(config, redis):
    return SqliteDocumentStore(config.options["file"])


def open_queue(config, redis):
    return SqliteJobQueue(config.options["file"])
'''


def test_a_gateway_runs_on_a_third_party_storage_backend(install, tmp_path, start_gateway):
    """A backend from another package: its module and its entry points, nothing in the gateway."""
    install(f"""
        [mnx_gateway.stores]
        acme = {PLUGIN_MODULE}:open_store
        [mnx_gateway.queues]
        acme = {PLUGIN_MODULE}:open_queue
        """, source=STORE_PLUGIN_SOURCE)
    database = tmp_path / "acme.db"
    gateway = start_gateway({"backend": "acme", "options": {"file": str(database)}})
    with gateway.rest() as rest:
        created = rest.post("/memories", json={"subject_id": "s", "text": "User keeps bees"})
        assert created.status_code == 201, created.text
        assert [m["text"] for m in rest.get("/memories", params={"subject_id": "s"}).json()["data"]] == [
            "User keeps bees"]
    assert database.stat().st_size > 0
