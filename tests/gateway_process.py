"""A real ``python -m gateway serve`` process, for tests that kill one (SIGKILL) and start it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import wait_until
from tests.fake_upstream import free_socket


def free_port() -> int:
    sock = free_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def serve(config_path: Path | str, url: str) -> subprocess.Popen[bytes]:
    """The gateway on ``config_path``, once ``url`` answers /health (180 s at most: a start under the
    whole suite on two cores was seen taking over 60 s)."""
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    assert wait_until(up, timeout=180), "gateway did not start"
    return process
