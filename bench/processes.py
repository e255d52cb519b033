"""Child processes of a benchmark: a free port to start one on, waiting until it answers, and
stopping it with everything it started (each is started in its own session, so the whole
process group goes); and the JSON answer of a request a benchmark makes to one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# How long a child gateway may take to answer its first request. A quiet machine needs a few
# seconds (importing LiteLLM is most of it); the CI machine runs the benchmark smokes beside the whole
# test suite on two cores, where one start took over 60 s.
START_TIMEOUT_SECONDS = 180.0


def wait_up(url: str, process: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Until ``url`` answers at all (RuntimeError after ``timeout`` s, or once ``process`` has exited)."""
    deadline = time.time() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or (process is not None and process.poll() is not None):
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


class BenchError(RuntimeError):
    """A request a benchmark relies on failed: the run stops rather than measure the wrong thing."""


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A gateway config with ``overlay`` merged in: nested sections merged, any other value replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def json_answer(response: httpx.Response, *expected: int) -> Any:
    """The response's JSON, if its status is one of ``expected`` (200 when none is given)."""
    if response.status_code not in (expected or (200,)):
        raise BenchError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code} "
                         f"{response.text[:300]}")
    return response.json()
