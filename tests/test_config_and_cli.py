"""gateway.yaml validation, ${ENV} interpolation, and the mnx-gateway command itself."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE

from gateway.cli import main
from gateway.config import BUILT_IN_CONFIG, find_config, load_config, parse_config
from gateway.dev_key import DEV_KEY, accepts_dev_key, check_dev_key_exposure, is_loopback
from gateway.errors import ConfigError
from gateway.memory.edge_index import EdgeIndex, IndexInUse
from gateway.server import serve
from tests.conftest import wait_until
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
    ({**MINIMAL, "storage": {"backend": "../mongo"}}, "storage.backend: String should match pattern"),
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


def wait_for_health(process: subprocess.Popen, port: int) -> None:
    """Until the gateway ``process`` started answers /health on ``port`` (it must not exit first)."""
    def up() -> bool:
        assert process.poll() is None, "gateway exited before it started"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        except httpx.HTTPError:
            return False

    assert wait_until(up, timeout=60, interval=0.2), "gateway did not start"


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
        wait_for_health(process, port)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                            headers={"authorization": "Bearer mnx_live_cli_test"},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
        assert (tmp_path / "data" / "gateway.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)


# The command for a new user: --version, init, finding a config anywhere, clear refusals.

def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mnx-gateway {version('mnx-gateway')}\n"


def test_the_config_is_looked_up_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNX_GATEWAY_CONFIG", raising=False)
    assert find_config() == BUILT_IN_CONFIG
    (tmp_path / "gateway.yaml").write_text("projects: [{id: p, keys: [{key: k}]}]\n")
    assert find_config() == Path("gateway.yaml")
    monkeypatch.setenv("MNX_GATEWAY_CONFIG", "/etc/from-env.yaml")
    assert find_config() == Path("/etc/from-env.yaml")
    assert find_config("given.yaml") == Path("given.yaml")


def test_check_config_outside_a_checkout_validates_the_built_in_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNX_GATEWAY_CONFIG", raising=False)
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(f"{BUILT_IN_CONFIG}: OK")


def test_init_writes_the_starter_config_and_never_overwrites_it_unasked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "gateway.yaml").read_bytes() == (ROOT / "gateway.yaml").read_bytes()
    assert "mnx-gateway serve" in capsys.readouterr().out
    (tmp_path / "gateway.yaml").write_text("# edited\n")
    assert main(["init"]) == 2
    refusal = capsys.readouterr().err
    assert refusal == "mnx-gateway: gateway.yaml already exists: pass --force to overwrite it\n"
    assert (tmp_path / "gateway.yaml").read_text() == "# edited\n"
    assert main(["init", "--force"]) == 0
    assert (tmp_path / "gateway.yaml").read_bytes() == (ROOT / "gateway.yaml").read_bytes()
    assert main(["init", "--path", "conf/mine.yaml"]) == 0
    assert "mnx-gateway serve --config conf/mine.yaml" in capsys.readouterr().out
    assert main(["check-config", "--config", "conf/mine.yaml"]) == 0


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("", False), ("10.0.0.5", False),
                                            ("gateway.example.com", False)])
def test_which_listen_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_to_expose_the_development_key(monkeypatch, capsys):
    monkeypatch.delenv("MNX_API_KEY", raising=False)
    # Refused before anything is opened or bound.
    assert main(["serve", "--config", str(ROOT / "gateway.yaml"), "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "refusing to listen on 0.0.0.0" in error and "mnx_live_local_dev_key" in error
    assert "--allow-dev-key" in error


def test_the_development_key_check(monkeypatch, caplog):
    monkeypatch.delenv("MNX_API_KEY", raising=False)
    shipped = load_config(ROOT / "gateway.yaml")
    assert accepts_dev_key(shipped)
    check_dev_key_exposure(shipped, "127.0.0.1", allowed=False)
    with pytest.raises(ConfigError):
        check_dev_key_exposure(shipped, "0.0.0.0", allowed=False)
    # Given as its SHA-256, it is the same key.
    hashed = parse_config({"projects": [{"id": "p", "keys": [{"key_sha256": hashlib.sha256(
        DEV_KEY.encode()).hexdigest()}]}]})
    with pytest.raises(ConfigError):
        check_dev_key_exposure(hashed, "0.0.0.0", allowed=False)
    # --allow-dev-key: it starts, warning loudly.
    with caplog.at_level("WARNING", logger="gateway"):
        check_dev_key_exposure(shipped, "0.0.0.0", allowed=True)
    assert "PUBLIC DEVELOPMENT KEY" in caplog.text
    # A key of one's own: nothing to refuse or warn about.
    monkeypatch.setenv("MNX_API_KEY", "mnx_live_a_real_key")
    own = load_config(ROOT / "gateway.yaml")
    assert not accepts_dev_key(own)
    caplog.clear()
    check_dev_key_exposure(own, "0.0.0.0", allowed=False)
    assert caplog.text == ""


async def test_a_second_edge_index_on_the_same_directory_is_refused_by_name(tmp_path):
    path = str(tmp_path / "memories")
    first = EdgeIndex(path, None)
    try:
        with pytest.raises(IndexInUse) as error:
            EdgeIndex(path, None)
        assert str(error.value).startswith(f"another gateway process holds {path} (memory.vectors.edge.path)")
    finally:
        await first.close()
    EdgeIndex(path, None)  # free again once the first has closed it


@pytest.mark.parametrize("failure, status", [(ConfigError("memory.embedder: not this one"), None),
                                             (RuntimeError("a bug"), STARTUP_FAILURE)])  # uvicorn's exit status
def test_serve_raises_a_config_error_from_startup_and_keeps_other_tracebacks(failure, status, capfd):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise failure
        yield

    config = parse_config(MINIMAL)
    # Startup fails before uvicorn binds its socket: nothing listens.
    if isinstance(failure, ConfigError):
        with pytest.raises(ConfigError, match="memory.embedder: not this one"):
            serve(Starlette(lifespan=lifespan), config, port=0)
        assert "Traceback" not in capfd.readouterr().err
    else:
        with pytest.raises(SystemExit) as exit_:
            serve(Starlette(lifespan=lifespan), config, port=0)
        assert exit_.value.code == status
        assert "RuntimeError: a bug" in capfd.readouterr().err


def test_serve_outside_a_checkout_runs_the_built_in_default_and_one_gateway_per_data_dir(tmp_path, provider):
    """A new user's first `mnx-gateway serve`, from an empty directory; then a second gateway on
    the same data, which is refused in one line (Qdrant Edge's index belongs to one process)."""
    env = {**os.environ, "OPENAI_API_BASE": provider.url + "/v1", "OPENAI_API_KEY": "sk-configured"}
    for name in ("MNX_API_KEY", "MNX_GATEWAY_CONFIG"):
        env.pop(name, None)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(_cli() + ["serve", "--port", str(port)], cwd=tmp_path, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_health(first, port)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                            headers={"authorization": "Bearer mnx_live_local_dev_key"},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
        fallback = [line for line in (tmp_path / "first.log").read_text().splitlines() if "built-in default" in line]
        assert len(fallback) == 1 and str(tmp_path / "data" / "gateway.db") in fallback[0]

        second = subprocess.run(_cli() + ["serve", "--port", "0"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2
        assert "Traceback" not in second.stderr + second.stdout
        errors = [line for line in second.stderr.splitlines() if line.startswith("mnx-gateway:")]
        assert errors == [errors[0]] and "another gateway process holds ./data/memories" in errors[0]
    finally:
        first.terminate()
        first.wait(timeout=20)
