"""``mnx-gateway``: serve, check-config, init, hash-key, explain, keys, export, import, reindex, --version."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gateway.config import BUILT_IN_CONFIG, CONFIG_FILE_NAME, GatewayConfig, find_config, load_config
from gateway.dev_key import check_dev_key_exposure
from gateway.errors import ConfigError
from gateway.export.commands import add_export_commands
from gateway.keys.commands import add_keys_command
from gateway.memory.index_rebuild_command import add_reindex_command

CONFIG_HELP = ("path to the config file (default: $MNX_GATEWAY_CONFIG, else ./gateway.yaml, "
               "else the built-in default)")

log = logging.getLogger("gateway")


def _config_path(args: argparse.Namespace) -> str:
    return str(find_config(args.config))


def _version() -> str:
    try:
        return version("mnx-gateway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _data_locations(config: GatewayConfig) -> str:
    """Where the embedded backends keep their files, as absolute paths."""
    places = []
    if config.storage.backend == "sqlite":
        places.append(config.storage.sqlite.path)
    if config.memory.vectors.backend == "edge":
        places.append(config.memory.vectors.edge.path)
    return " and ".join(str(Path(place).resolve()) for place in places) or "the configured services"


def _serve(args: argparse.Namespace) -> int:
    from gateway import registry
    from gateway.app import create_app
    from gateway.log_format import configure_logging
    from gateway.server import serve
    from gateway.workers import check_workers, serve_workers

    path = _config_path(args)
    config = load_config(path)
    # A misspelt backend or plugin fails here, as one line, not as a traceback from startup.
    registry.check_names(config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    configure_logging(config.server)  # server.log_format, with request ids (gateway/log_format.py)
    if Path(path) == BUILT_IN_CONFIG:
        log.warning("no --config, no $MNX_GATEWAY_CONFIG and no ./gateway.yaml: running the built-in default "
                    "config; data goes to %s (`mnx-gateway init` writes a gateway.yaml to edit)",
                    _data_locations(config))
    check_dev_key_exposure(config, host, allowed=args.allow_dev_key)
    # The embedded backends (SQLite, Qdrant Edge) belong to one process: more than one worker
    # needs shared ones (Redis, a Qdrant server), checked before anything starts.
    check_workers(config, args.workers)
    if args.workers > 1:
        return serve_workers(config, str(path), args.workers, host=host, port=port)
    # gateway.server configures uvicorn (event loop, HTTP protocol with header limits, logs).
    return serve(create_app(config), config, host=host, port=port)


def _check_config(args: argparse.Namespace) -> int:
    from gateway import registry

    path = _config_path(args)
    config = load_config(path)
    # Every backend and plugin name resolves (and its module imports), as serve will need.
    registry.check_names(config)
    keys = sum(len(p.keys) for p in config.projects)
    print(f"{path}: OK ({len(config.projects)} project(s), {keys} key(s), storage: {config.storage.backend})")
    return 0


def _init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists: pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(BUILT_IN_CONFIG.read_bytes())
    config_option = "" if target == Path(CONFIG_FILE_NAME) else f" --config {target}"
    print(f"wrote {target}: the embedded default (SQLite + Qdrant Edge, data under ./data, on 127.0.0.1:8787)")
    print("next: edit it (every setting is in docs/configuration.md), "
          f"check it with `mnx-gateway check-config{config_option}`, start with `mnx-gateway serve{config_option}`")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    key = args.key or getpass.getpass("API key to hash: ")
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


# Where each surface's requests go (Gemini's path names the model).
_EXPLAIN_PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages",
                  "gemini": "/v1beta/models/{model}:generateContent"}


async def _explain_in_process(config: GatewayConfig, path: str, request: dict[str, Any],
                              headers: dict[str, str]) -> Any:
    import httpx

    from gateway.app import create_app

    app = create_app(config)
    async with app.router.lifespan_context(app):  # opens the stores, as serving does
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return await client.post(path, json=request, headers=headers, timeout=60)


def _explain(args: argparse.Namespace) -> int:
    """Print what the gateway would send the provider for a request file (``mnx.explain``)."""
    import json
    import os

    import httpx

    request = json.loads(Path(args.request).read_text())
    if not isinstance(request, dict):
        raise ConfigError(f"{args.request}: a request body must be a JSON object")
    mnx = request.get("mnx")
    request["mnx"] = {**(mnx if isinstance(mnx, dict) else {}), "explain": True}
    model = args.model or request.get("model") or ""
    if args.surface == "gemini" and not model:
        raise ConfigError("--surface gemini needs --model (Gemini carries the model in the URL)")
    path = _EXPLAIN_PATHS[args.surface].format(model=model)
    key = args.key or os.environ.get("MNX_GATEWAY_KEY")
    if not key:
        raise ConfigError("a project key is needed: --key, or $MNX_GATEWAY_KEY")
    headers = {"x-mnexium-key": key}
    answer: Any
    if args.url:
        # A running gateway (the embedded stores belong to the process serving them).
        answer = httpx.post(args.url.rstrip("/") + path, json=request, headers=headers, timeout=60)
    else:
        # In process, on the configured stores: for a gateway that is not running (SQLite and
        # Qdrant Edge take one process at a time), or one on Redis and a Qdrant server.
        answer = asyncio.run(_explain_in_process(load_config(_config_path(args)), path, request, headers))
    print(json.dumps(answer.json(), indent=2, ensure_ascii=False))
    return 0 if answer.status_code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnx-gateway", description="Self-hosted memory gateway for LLM apps.")
    parser.add_argument("--version", action="version", version=f"mnx-gateway {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the gateway")
    serve.add_argument("--config", help=CONFIG_HELP)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument("--workers", type=int, default=1,
                       help="gateway processes sharing the listen socket (default 1); more than one needs "
                            "shared backends (storage.backend redis; memory.vectors.backend qdrant with a url, "
                            "or redis)")
    serve.add_argument("--allow-dev-key", action="store_true",
                       help="listen beyond loopback even though the public development key is accepted")
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check-config", help="validate the config file and exit")
    check.add_argument("--config", help=CONFIG_HELP)
    check.set_defaults(run=_check_config)
    init = commands.add_parser("init", help="write the starter config (the built-in default) to edit")
    init.add_argument("--path", default=CONFIG_FILE_NAME, help=f"where to write it (default: ./{CONFIG_FILE_NAME})")
    init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    init.set_defaults(run=_init)
    hash_key = commands.add_parser("hash-key", help="print the SHA-256 of an API key, for key_sha256 in the config")
    hash_key.add_argument("key", nargs="?",
                          help="the key (prompted for when omitted, so it stays out of shell history)")
    hash_key.set_defaults(run=_hash_key)
    explain = commands.add_parser("explain", help="print the request the provider would get for a request file, "
                                                  "stage by stage, without calling it (mnx.explain)")
    explain.add_argument("request", help="a JSON request body, as the surface takes it (with its mnx options)")
    explain.add_argument("--surface", choices=sorted(_EXPLAIN_PATHS), default="chat",
                         help="the API the body is for (default: chat, OpenAI Chat Completions)")
    explain.add_argument("--model", help="the model (Gemini's URL carries it; others: overrides nothing)")
    explain.add_argument("--key", help="the project key (default: $MNX_GATEWAY_KEY)")
    explain.add_argument("--url", help="a running gateway to ask (default: run one in process on --config)")
    explain.add_argument("--config", help=CONFIG_HELP)
    explain.set_defaults(run=_explain)
    add_keys_command(commands, CONFIG_HELP)  # keys create|list|revoke|rotate (gateway/keys/commands.py)
    add_export_commands(commands, CONFIG_HELP)  # export, import (gateway/export/commands.py)
    add_reindex_command(commands, CONFIG_HELP)  # reindex (gateway/memory/index_rebuild_command.py)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"mnx-gateway: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
