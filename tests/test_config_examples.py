"""The example configs in config/ and the built-in default: each passes `mnx-gateway check-config`,
and the copies of gateway.yaml cannot drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import BUILT_IN_CONFIG, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "config"
# The embedded default is gateway.yaml itself (top level), not a copy here.
# config/deploy/ holds the Compose and Kubernetes files (tests/test_deployment_files.py), which use
# redis-cluster-qdrant.yaml.
EXPECTED = {"redis-qdrant.yaml", "redis-only.yaml", "redis-cluster-qdrant.yaml", "docker.yaml", "local-embeddings.yaml"}


def test_config_holds_the_documented_examples():
    assert {path.name for path in EXAMPLES.glob("*.yaml")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_example_passes_check_config(name, monkeypatch, capsys):
    # docker.yaml and redis-qdrant.yaml take the project key from the environment, with no fallback.
    monkeypatch.setenv("MNX_API_KEY", "mnx_live_example_key")
    assert main(["check-config", "--config", str(EXAMPLES / name)]) == 0
    assert f"{EXAMPLES / name}: OK" in capsys.readouterr().out


def test_the_packaged_default_is_gateway_yaml_byte_for_byte():
    """An installed gateway cannot read the checkout's gateway.yaml, so the package carries a copy."""
    shipped = (ROOT / "gateway.yaml").read_bytes()
    assert BUILT_IN_CONFIG.read_bytes() == shipped, "copy gateway.yaml to gateway/default_config/gateway.yaml"


def test_the_docker_example_needs_its_key_from_the_environment(monkeypatch, capsys):
    monkeypatch.delenv("MNX_API_KEY", raising=False)
    assert main(["check-config", "--config", str(EXAMPLES / "docker.yaml")]) == 2
    assert "environment variable MNX_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("MNX_API_KEY", "mnx_live_example_key")
    config = load_config(EXAMPLES / "docker.yaml")
    assert config.server.host == "0.0.0.0"
    assert config.storage.sqlite.path.startswith("/app/data/")
    assert config.memory.vectors.edge.path.startswith("/app/data/")


def test_the_examples_use_the_backends_they_are_named_for(monkeypatch):
    monkeypatch.setenv("MNX_API_KEY", "mnx_live_example_key")
    shared = load_config(EXAMPLES / "redis-qdrant.yaml")
    assert (shared.storage.backend, shared.memory.vectors.backend) == ("redis", "qdrant")
    one_service = load_config(EXAMPLES / "redis-only.yaml")
    assert (one_service.storage.backend, one_service.memory.vectors.backend) == ("redis", "redis")
    assert one_service.memory.vectors.redis.url == one_service.storage.redis.url
    local = load_config(EXAMPLES / "local-embeddings.yaml")
    assert local.memory.embedder.provider in {"fastembed", "sentence-transformers"}
    # A dense model's index is not the default BM25-only one: it has a directory of its own.
    assert local.memory.vectors.edge.path != load_config(ROOT / "gateway.yaml").memory.vectors.edge.path
