"""``mnx-gateway export`` and ``mnx-gateway import``: a project's data to a JSONL file and back.

``export`` reads the configured store only, so on SQLite it may run beside a serving gateway
(WAL lets readers in) and on Redis beside any number of them. ``import`` writes the store and
re-indexes memories and records in the configured vector index: on the embedded backends
(SQLite, Qdrant Edge) stop the gateway first, they belong to one process at a time. Errors go
to stderr as ``mnx-gateway: <message>``, exit status 2, as every other command's; a refused
import names the file's line and has written nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, BinaryIO

from gateway.config import GatewayConfig, find_config, load_config
from gateway.errors import ConfigError

# The store, index and service modules are imported when a command runs, not when the CLI
# starts: `mnx-gateway --version` stays quick.


def _config(args: argparse.Namespace) -> GatewayConfig:
    from gateway import registry

    config = load_config(find_config(args.config))
    registry.check_names(config)
    known = [project.id for project in config.projects]
    if args.project not in known:
        raise ConfigError(f"no project {args.project!r} in the config (configured: {', '.join(known)})")
    return config


async def export_to(config: GatewayConfig, project_id: str, subject_id: str | None, out: BinaryIO) -> int:
    """Write the export of the project (or one subject of it) to ``out``; returns the lines written."""
    from gateway import registry
    from gateway.export.dump import export_lines

    # No shared Redis client: the store opens its own from storage.redis.url.
    store = registry.create("store", config.storage.backend, config.storage, None)
    written = 0
    try:
        async for chunk in export_lines(store, project_id, subject_id):
            out.write(chunk)
            written += 1
    finally:
        await store.close()
    return written


async def import_from(config: GatewayConfig, project_id: str, path: Path) -> dict[str, int]:
    """Check the whole file, then write it (ImportRefused, before any write, if a line is wrong)."""
    from gateway.export.load import check_schemas, read_export, write_export
    from gateway.memory.backends import prepare
    from gateway.services import Services

    with path.open("rb") as lines:
        export = read_export(lines, project_id)
    services = Services.build(config)
    try:
        await services.store.ping()
        await prepare(services.vector_index)
        await check_schemas(services.store, export)
        return await write_export(services.store, export, memories=services.memories, records=services.records,
                                  audit_retention_seconds=config.audit.retention_days * 86_400.0)
    finally:
        await services.aclose()


def _export(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.output in (None, "-"):
        lines = asyncio.run(export_to(config, args.project, args.subject, sys.stdout.buffer))
        sys.stdout.flush()
    else:
        target = Path(args.output)
        with target.open("wb") as out:
            lines = asyncio.run(export_to(config, args.project, args.subject, out))
        print(f"wrote {target}: {lines} lines", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from gateway.export.load import ImportRefused

    config = _config(args)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        counts = asyncio.run(import_from(config, args.project, path))
    except ImportRefused as error:
        raise ConfigError(f"{path}: {error}; nothing was imported") from None
    listed = ", ".join(f"{count} {kind}" for kind, count in counts.items()) or "nothing"
    print(f"imported {path} into project {args.project}: {listed}")
    return 0


def add_export_commands(commands: Any, config_help: str) -> None:
    """Add ``export`` and ``import`` to the ``mnx-gateway`` parser's ``commands``."""
    export = commands.add_parser("export", help="write a project's data (or one subject's) as JSONL")
    export.add_argument("--project", required=True, help="a project of the config file")
    export.add_argument("--subject", help="only this subject's data (default: the whole project)")
    export.add_argument("-o", "--output", help="the file to write (default: standard output)")
    export.add_argument("--config", help=config_help)
    export.set_defaults(run=_export)
    load = commands.add_parser("import", help="load an export file into a project, checked whole before "
                                              "anything is written (ids kept: importing twice = once)")
    load.add_argument("file", help="a file `mnx-gateway export` (or GET /subjects/{id}/export) wrote")
    load.add_argument("--project", required=True, help="the project it was exported from, in this config")
    load.add_argument("--config", help=config_help)
    load.set_defaults(run=_import)
