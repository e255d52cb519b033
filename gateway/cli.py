"""``mnx-gateway``: serve, check-config, hash-key."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import logging
import os
import sys

from gateway.config import load_config
from gateway.errors import ConfigError

DEFAULT_CONFIG = "gateway.yaml"


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("MNX_GATEWAY_CONFIG") or DEFAULT_CONFIG


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.server import serve

    config = load_config(_config_path(args))
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One worker by design: the embedded backends (SQLite, Qdrant Edge) belong to one
    # process. Scale out with the Redis backend and more gateway processes.
    # gateway.server configures uvicorn (event loop, HTTP protocol with header limits, logs).
    return serve(create_app(config), config, host=host, port=port)


def _check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = load_config(path)
    keys = sum(len(p.keys) for p in config.projects)
    print(f"{path}: OK ({len(config.projects)} project(s), {keys} key(s), storage: {config.storage.backend})")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    key = args.key or getpass.getpass("API key to hash: ")
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnx-gateway", description="Self-hosted memory gateway for LLM apps.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the gateway")
    serve.add_argument("--config", help=f"path to the config file (default: $MNX_GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check-config", help="validate the config file and exit")
    check.add_argument("--config", help=f"path to the config file (default: $MNX_GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    check.set_defaults(run=_check_config)
    hash_key = commands.add_parser("hash-key", help="print the SHA-256 of an API key, for key_sha256 in the config")
    hash_key.add_argument("key", nargs="?", help="the key (prompted for when omitted, so it stays out of shell history)")
    hash_key.set_defaults(run=_hash_key)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"mnx-gateway: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
