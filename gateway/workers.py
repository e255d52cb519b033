"""``mnx-gateway serve --workers N``: N gateway processes sharing one listening socket.

The parent binds the socket, starts N worker processes (``spawn``: each a fresh interpreter
that loads the config and builds its own app), and supervises them. Each worker is a whole
gateway: the full lifespan (stores, indexes, its learn worker and memory-event listener)
and the same uvicorn server as ``--workers 1``, on the inherited socket, where the kernel
hands each new connection to one of the processes waiting on it.

Why not uvicorn's own supervisor: it pickles the uvicorn config for each worker, app
included, and the gateway's app, its server class and its header-limited protocol class
(made for the configured limits) are objects that do not pickle. Here a worker is given
what does: the config path and the socket.

Stopping: SIGTERM or SIGINT to the parent sends SIGTERM to every worker, which stops as one
gateway does (open responses get ``server.shutdown_timeout_seconds``); a worker still running
well past that is killed. Workers run in a process group of their own, so a Ctrl-C in a
terminal reaches the parent alone (uvicorn takes a second SIGINT as "exit now"), and each
worker stops by itself if the parent disappears (killed with SIGKILL). A worker that exits
on its own (a failed start, a crash) stops the others and the parent exits with its status:
a process manager (systemd, Kubernetes) restarts the whole, rather than the parent hiding a
worker that fails again and again.

Only shareable backends can have several processes (``embedded_settings``): SQLite and an
embedded vector index (Qdrant Edge, qdrant-client's local mode) belong to one process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from socket import socket
from typing import Any

from gateway.config import GatewayConfig
from gateway.errors import ConfigError

log = logging.getLogger("gateway")

# A worker still running this long after the stop's own bound (shutdown_timeout_seconds) is killed.
_KILL_AFTER_EXTRA_SECONDS = 10.0
# How often the parent looks at its workers and at a stop request; a worker at its parent.
_POLL_SECONDS = 0.2


def embedded_settings(config: GatewayConfig) -> list[str]:
    """Why this config cannot be served by several processes: one line per embedded backend,
    naming the setting to change; empty if every backend is shared."""
    problems = []
    if config.storage.backend == "sqlite":
        problems.append("storage.backend is sqlite, an embedded database one process owns: "
                        "set storage.backend: redis")
    vectors = config.memory.vectors
    if vectors.backend == "edge":
        problems.append("memory.vectors.backend is edge, an embedded Qdrant Edge index one process owns: "
                        "set memory.vectors.backend to qdrant (with memory.vectors.qdrant.url) or redis")
    elif vectors.backend == "qdrant" and vectors.qdrant is not None and not vectors.qdrant.url:
        problems.append("memory.vectors.qdrant.location runs qdrant-client's local mode, embedded in one process: "
                        "give memory.vectors.qdrant.url, a Qdrant server, instead")
    return problems


def check_workers(config: GatewayConfig, workers: int) -> None:
    """ConfigError (exit status 2, before anything starts) if ``workers`` processes cannot share this config."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    problems = embedded_settings(config) if workers > 1 else []
    if problems:
        raise ConfigError(f"--workers {workers} needs backends that several processes can share; "
                          + "; ".join(problems) + " (or serve with --workers 1)")


def serve_workers(config: GatewayConfig, config_path: str, workers: int, *, host: str, port: int) -> int:
    """Serve with ``workers`` processes until SIGTERM/SIGINT; returns the exit status."""
    from gateway.server import uvicorn_config

    listening = uvicorn_config(None, config, host=host, port=port).bind_socket()
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: Any) -> None:
        stop_requested.append(signum)

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(workers):
            process = context.Process(target=_run_worker, name=f"mnx-gateway-worker-{number + 1}",
                                      args=(config_path, host, port, listening, os.getpid()))
            process.start()
            processes.append(process)
        listening.close()  # the workers hold it now
        log.info("mnx-gateway: %d worker processes on %s:%d (pids %s)", workers, host, port,
                 ", ".join(str(p.pid) for p in processes))
        status = 0
        while not stop_requested:
            ended = [p for p in processes if not p.is_alive()]
            if ended:
                code = ended[0].exitcode or 1
                status = code if code > 0 else 128 - code  # killed by signal n: 128 + n, as a shell says
                log.error("mnx-gateway: worker %s (pid %s) exited with status %s; stopping the others",
                          ended[0].name, ended[0].pid, ended[0].exitcode)
                break
            wait([p.sentinel for p in processes], timeout=_POLL_SECONDS)
        _stop(processes, config.server.shutdown_timeout_seconds + _KILL_AFTER_EXTRA_SECONDS)
        return status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(processes: list[BaseProcess], kill_after: float) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + kill_after
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            log.warning("mnx-gateway: worker %s (pid %s) did not stop in %.0f s; killing it",
                        process.name, process.pid, kill_after)
            process.kill()
            process.join()


def _run_worker(config_path: str, host: str, port: int, listening: socket, parent_pid: int) -> None:
    """One worker process: the gateway on the inherited socket (see the module docstring)."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the parent, which stops the workers with SIGTERM
    threading.Thread(target=_stop_when_orphaned, args=(parent_pid,), name="parent-watch", daemon=True).start()
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.log_format import configure_logging
    from gateway.server import serve

    try:
        config = load_config(config_path)
        configure_logging(config.server)
        status = serve(create_app(config), config, host=host, port=port, sockets=[listening])
    except ConfigError as error:
        print(f"mnx-gateway: {error}", file=sys.stderr)
        status = 2
    sys.exit(status)


def _stop_when_orphaned(parent_pid: int) -> None:
    """Stop this worker (as SIGTERM does) once its parent is gone: nothing would stop it otherwise."""
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
