"""gateway.yaml validation, ${ENV} interpolation, and the mnx-gateway command itself."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from tests.fake_upstream import free_socket

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"projects": [{"id": "p", "keys": [{"key": "k"}]}]}


def test_the_shipped_gateway_yaml_is_valid_and_embedded():
    config = load_config(ROOT / "gateway.yaml")
    assert config.storage.backend == "sqlite"
    assert config.server.host == "127.0.0.1"


@pytest.mark.parametrize("data, message", [
    ({**MINIMAL, "sever": {}}, "sever: unknown key"),
    ({**MINIMAL, "server": {"port": "eighty"}}, "server.port: Input should be a valid integer"),
    ({**MINIMAL, "storage": {"backend": "mongo"}}, "storage.backend: Input should be 'sqlite' or 'redis'"),
    ({"projects": [{"id": "p", "keys": [{"key": "k", "scope": ["*"]}]}]}, "projects.0.keys.0.scope: unknown key"),
    ({"projects": [{"id": "p", "keys": [{}]}]}, "give exactly one of 'key' or 'key_sha256'"),
    ({"projects": [{"id": "p", "keys": [{"key_sha256": "abc"}]}]}, "projects.0.keys.0.key_sha256"),
    ({**MINIMAL, "providers": {"openai": {"api_base": "ftp://x"}}}, "providers.openai.api_base"),
    ({**MINIMAL, "memory": {"vectors": {"lexical": "fancy"}}},
     "memory.vectors.lexical: Input should be 'contextual' or 'plain'"),
    ({"projects": [{"id": "p", "keys": [{"key": "k"}]}, {"id": "q", "keys": [{"key": "k"}]}]},
     "the same API key is configured twice"),
])
def test_invalid_config_fails_with_the_key_path(data, message):
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert message in str(error.value)


def test_env_interpolation_with_defaults_and_missing_variables(monkeypatch):
    monkeypatch.setenv("TEST_MNX_KEY", "from-env")
    monkeypatch.delenv("TEST_MNX_UNSET", raising=False)
    config = parse_config({"projects": [{"id": "p", "keys": [{"key": "${TEST_MNX_KEY}"}]}],
                           "server": {"host": "${TEST_MNX_UNSET:-0.0.0.0}"}})
    assert config.projects[0].keys[0].digest() == hashlib.sha256(b"from-env").hexdigest()
    assert config.server.host == "0.0.0.0"
    with pytest.raises(ConfigError) as error:
        parse_config({"projects": [{"id": "p", "keys": [{"key": "${TEST_MNX_UNSET}"}]}]})
    assert "projects.0.keys.0.key: environment variable TEST_MNX_UNSET is not set" in str(error.value)


def test_an_empty_default_provider_key_means_none():
    config = parse_config({**MINIMAL, "providers": {"openai": {"api_base": "http://x", "api_key": "${NOPE_X:-}"}}})
    assert config.providers.openai.api_key is None


def _cli() -> list[str]:
    script = shutil.which("mnx-gateway", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "gateway"]


def test_check_config_command(tmp_path):
    ok = subprocess.run(_cli() + ["check-config", "--config", str(ROOT / "gateway.yaml")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("projects: []\nlisten: 1\n")
    failed = subprocess.run(_cli() + ["check-config", "--config", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 2
    assert "listen: unknown key" in failed.stderr and "projects" in failed.stderr


def test_serve_starts_on_the_embedded_default_and_answers(tmp_path, provider):
    """The README's first command, minus the install: the shipped gateway.yaml, no services."""
    shutil.copy(ROOT / "gateway.yaml", tmp_path / "gateway.yaml")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "MNX_API_KEY": "mnx_live_cli_test", "OPENAI_API_BASE": provider.url + "/v1",
           "OPENAI_API_KEY": "sk-configured"}
    process = subprocess.Popen(_cli() + ["serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.time() < deadline, "gateway did not start"
            time.sleep(0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                            headers={"authorization": "Bearer mnx_live_cli_test"},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
        assert (tmp_path / "data" / "gateway.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)
