"""``mnx-gateway keys create|list|revoke|rotate``: stored project keys, from the command line.

Each command opens the configured store (SQLite in WAL mode can be opened while a gateway
serves from it; Redis is shared anyway), does one thing and closes it. A key is printed
once, when it is created or rotated; nothing can show it again. Errors go to stderr as
``mnx-gateway: <message>`` with exit status 2, as every other command's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config import GatewayConfig, find_config, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.keys.store import KeyStore, StoredKey

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``45s``, ``2w``."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{text!r} is not a duration: a positive number and a unit, e.g. 30d, 12h, 15m, 45s, 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _expiry(args: argparse.Namespace) -> datetime | None:
    return datetime.now(UTC) + parse_duration(args.expires_in) if args.expires_in else None


def _with_key_store(args: argparse.Namespace, work: Callable[[GatewayConfig, KeyStore], Awaitable[int]]) -> int:
    from gateway import registry

    config = load_config(find_config(args.config))
    registry.check_names(config)

    async def run() -> int:
        # No shared Redis client here: the store opens its own from storage.redis.url.
        store = registry.create("store", config.storage.backend, config.storage, None)
        try:
            return await work(config, KeyStore(store))
        except GatewayError as error:  # an unknown key id, a bad scope: said as every CLI error is
            raise ConfigError(error.message) from None
        finally:
            await store.close()

    return asyncio.run(run())


def _require_project(config: GatewayConfig, project_id: str) -> None:
    known = [project.id for project in config.projects]
    if project_id not in known:
        raise ConfigError(f"no project {project_id!r} in the config (configured: {', '.join(known)})")


def _describe(key: StoredKey) -> str:
    listed = key.listing()
    return (f"{listed['key_id']}  {listed['status']:<7}  name={listed['name']}  scopes={','.join(listed['scopes'])}  "
            f"…{listed['last4']}  created={listed['created_at']}  expires={listed['expires_at'] or 'never'}"
            + (f"  revoked={listed['revoked_at']}" if listed["revoked_at"] else ""))


def _create(args: argparse.Namespace) -> int:
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]

    async def work(config: GatewayConfig, keys: KeyStore) -> int:
        _require_project(config, args.project)
        key, record = await keys.create(args.project, name=args.name, scopes=scopes, expires_at=_expiry(args))
        print(f"key_id: {record.key_id}")
        print(f"key: {key}")
        print("the key is shown this once: store it now (the gateway keeps only its SHA-256)")
        return 0

    return _with_key_store(args, work)


def _list(args: argparse.Namespace) -> int:
    async def work(config: GatewayConfig, keys: KeyStore) -> int:
        _require_project(config, args.project)
        found = await keys.in_project(args.project)
        if args.json:
            print(json.dumps([key.listing() for key in found], indent=2))
        elif not found:
            print(f"no stored keys in project {args.project} (keys in the config file are not listed)")
        for key in found if not args.json else ():
            print(_describe(key))
        return 0

    return _with_key_store(args, work)


def _revoke(args: argparse.Namespace) -> int:
    async def work(config: GatewayConfig, keys: KeyStore) -> int:
        record = await keys.revoke(args.key_id)
        print(f"revoked {record.key_id} (project {record.project_id}, name {record.name}) at {record.revoked_at}")
        return 0

    return _with_key_store(args, work)


def _rotate(args: argparse.Namespace) -> int:
    grace = parse_duration(args.grace) if args.grace else None

    async def work(config: GatewayConfig, keys: KeyStore) -> int:
        key, record, old = await keys.rotate(args.key_id, expires_at=_expiry(args), grace=grace)
        print(f"key_id: {record.key_id}")
        print(f"key: {key}")
        if old.revoked_at:
            print(f"{old.key_id} is revoked")
        else:
            print(f"{old.key_id} keeps working until {old.expires_at} (--grace)")
        print("the key is shown this once: store it now (the gateway keeps only its SHA-256)")
        return 0

    return _with_key_store(args, work)


def add_keys_command(commands: Any, config_help: str) -> None:
    """Add ``keys`` and its sub-commands to the ``mnx-gateway`` parser's ``commands``."""
    keys = commands.add_parser("keys", help="create, list, revoke and rotate project keys kept in the store")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    expires_help = "lifetime of the key, e.g. 30d, 12h, 15m (default: none, it never expires)"

    create = actions.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--project", required=True, help="a project of the config file")
    create.add_argument("--name", default="default", help="a label for the key (default: default)")
    create.add_argument("--scopes", default="*", help="comma-separated scopes, e.g. read,chat:write (default: *)")
    create.add_argument("--expires-in", help=expires_help)
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="the project's stored keys (never the keys themselves)")
    listing.add_argument("--project", required=True, help="a project of the config file")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)

    revoke = actions.add_parser("revoke", help="revoke a key: its next request gets 401 token_revoked")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke)

    rotate = actions.add_parser("rotate", help="make a new key with the same project, name and scopes; "
                                               "revoke the old one (or let it expire after --grace)")
    rotate.add_argument("key_id")
    rotate.add_argument("--expires-in", help="lifetime of the new key (default: the old key's lifetime)")
    rotate.add_argument("--grace", help="keep the old key working this much longer instead of revoking it, "
                                        "e.g. 1h")
    rotate.set_defaults(run=_rotate)

    for action in (create, listing, revoke, rotate):
        action.add_argument("--config", help=config_help)
