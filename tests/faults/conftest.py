"""Fixtures for the fault-injection suite: things a test may break on purpose.

* ``private_redis``: a redis-server of the test's own (no persistence) that it may SIGKILL
  and start again on the same port, which the shared Redis of tests/conftest.py must never be.
* ``GatewayProcess``: a gateway in a subprocess (``python -m gateway serve``), so it can be
  SIGKILLed mid-work and restarted on the same data, as an operator's crash would.
* ``module_gateway`` (in tests/conftest.py): ``start_gateway`` for a whole module.
* small readers of what the gateway stored (history, jobs, memories), used by every test to
  check that a fault lost or duplicated nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import httpx
import pytest
import redis
import yaml

from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.fake_upstream import free_socket


def free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def sigkill(process: subprocess.Popen | None) -> None:
    """Kill a child as a crash or the OOM killer would: no cleanup on its side."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


# --- what the gateway stored ------------------------------------------------------------------

def history_of(gateway_url: str, chat_id: str, subject_id: str | None = None) -> list[dict[str, Any]]:
    params = {"chat_id": chat_id, **({"subject_id": subject_id} if subject_id else {})}
    response = httpx.get(gateway_url + "/api/v1/chat/history/read", params=params,
                         headers={"x-mnexium-key": KEY}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def jobs_of(gateway_url: str) -> list[dict[str, Any]]:
    response = httpx.get(gateway_url + "/api/v1/jobs", headers={"x-mnexium-key": KEY}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def memories_of(gateway_url: str, subject_id: str, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(gateway_url + "/api/v1/memories", params={"subject_id": subject_id, **params},
                         headers={"x-mnexium-key": KEY}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def providers_with(provider_url: str, *, read: float, connect: float = 1, **openai: Any) -> dict[str, Any]:
    """The ``providers`` config section (it is replaced whole) pointing at the fake, with these timeouts."""
    timeout = {"connect": connect, "read": read}
    return {"openai": {"api_base": provider_url + "/v1", "timeout": timeout, **openai},
            "anthropic": {"api_base": provider_url, "timeout": timeout},
            "gemini": {"api_base": provider_url + "/v1beta", "timeout": timeout}}


# --- one turn on any surface ----------------------------------------------------------------------

TURN_TEXT = "My favorite tree is the oak"


def turn_request(surface: str, model: str, chat_id: str, *, subject_id: str = "faulty", stream: bool = False,
                 **mnx: Any) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, JSON body, extra headers) of a one-message turn on ``surface`` that asks for
    history, logging and learning (``mnx`` overrides), with the mnx options where that
    surface's SDK carries them (the body; headers for Gemini)."""
    options = {"subject_id": subject_id, "chat_id": chat_id, "history": True, "log": True, "learn": True, **mnx}
    message = [{"role": "user", "content": TURN_TEXT}]
    if surface == "chat":
        return "/v1/chat/completions", {"model": model, "stream": stream, "max_tokens": 5, "messages": message,
                                        "mnx": options}, {}
    if surface == "responses":
        return "/v1/responses", {"model": model, "stream": stream, "input": TURN_TEXT, "mnx": options}, {}
    if surface == "messages":
        return "/v1/messages", {"model": model, "stream": stream, "max_tokens": 5, "messages": message,
                                "mnx": options}, {}
    assert surface == "gemini", surface
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    headers = {f"x-mnx-{name.replace('_', '-')}": value if isinstance(value, str) else json.dumps(value)
               for name, value in options.items()}
    return f"/v1beta/models/{model}:{action}", {"contents": [{"role": "user", "parts": [{"text": TURN_TEXT}]}]}, headers


# The caller's provider keys, for whichever provider a model routes to.
PROVIDER_HEADERS = {"x-openai-key": PROVIDER_KEY, "x-anthropic-key": PROVIDER_KEY, "x-goog-api-key": PROVIDER_KEY}


def error_code(surface: str, body: dict[str, Any]) -> str:
    """The gateway's error code, read from the surface's own error envelope (REST: "mnexium")."""
    if surface == "mnexium":
        return body["error"]
    if surface == "gemini":
        return body["error"]["details"][0]["reason"]
    if surface == "messages":
        assert body["type"] == "error", body
    return body["error"]["code"]


# --- what a client reads of a stream ----------------------------------------------------------

def sse_data(text: str) -> list[Any]:
    """The JSON payload of every ``data:`` frame of an SSE body, in order (``[DONE]`` as the string)."""
    events = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].strip() for line in frame.split("\n") if line.startswith("data:"))
        if data:
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def in_band_error_code(surface: str, event: Any) -> str | None:
    """The gateway's error code if ``event`` is the surface's in-stream error event, else None."""
    if not isinstance(event, dict):
        return None
    if surface == "responses":
        return event.get("code") if event.get("type") == "error" else None
    error = event.get("error")
    if not isinstance(error, dict):
        return None
    if surface == "gemini":
        return (error.get("details") or [{}])[0].get("reason")
    if surface == "messages" and event.get("type") != "error":
        return None
    return error.get("code")


# --- a redis-server the test owns -------------------------------------------------------------

class RedisServer:
    """``redis-server --port <port> --save "" --appendonly no``: kill it, start it again on the same port."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
        assert wait_until(up, timeout=10), f"redis-server did not start on port {self.port}"
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed Redis goes away."""
        sigkill(self.process)
        self.process = None


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the Redis fault tests start (and kill) a server of their own")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, free_port(), workdir).start()
    yield server
    server.kill()


# --- a gateway in a subprocess ------------------------------------------------------------------

def _cpu_seconds(pid: int) -> str:
    """User + system CPU a process has used, from /proc (Linux), as text for a failure message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{(int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'):.1f}"
    except (OSError, IndexError, ValueError):
        return "unknown"


class GatewayProcess:
    """``python -m gateway serve`` on a config file; SIGKILL it and start it again on the same data."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump({**config, "server": {"port": self.port}}))
        self.log_path = workdir / "gateway.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> GatewayProcess:
        log = open(self.log_path, "ab")
        # -X faulthandler: a start that hangs is aborted below, and the log then holds every
        # thread's stack (a rare hang in "Waiting for application startup" is not yet explained).
        self.process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "gateway", "serve",
                                         "--config", str(self.config_path)],
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log)
        log.close()

        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return httpx.get(self.url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        # 180 s: under the whole suite on two cores (three-gateway and worker tests beside this one)
        # a start was seen still importing LiteLLM after 60 s, its main thread busy, not blocked.
        if not wait_until(up, timeout=180, interval=0.05):
            cpu = _cpu_seconds(self.process.pid)
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=10)
            raise AssertionError(f"gateway did not start in 180 s ({cpu} s of CPU: little means it was starved or "
                                 "blocked, not slow); its threads' stacks at the end:\n" + self.log())
        return self

    def kill(self) -> None:
        sigkill(self.process)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def gateway_process(tmp_path) -> Iterator[Any]:
    """``gateway_process(config)``: a GatewayProcess, stopped at teardown (SIGTERM)."""
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any]) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        process = GatewayProcess(config, workdir)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def until_stable(predicate, seconds: float, interval: float = 0.1) -> bool:
    """True if ``predicate`` holds throughout ``seconds`` (so "nothing came back" is not just "not yet")."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return predicate()
