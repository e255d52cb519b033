"""``mnx-gateway reindex``: build the memory index a config names from the store.

Give it the config the gateway is to run with next (the new embedder or lexical kind, and a new
index path, Qdrant collection, or Redis index and key prefix) while the gateway keeps serving
from its old index; see gateway/memory/index_rebuild.py for how it walks, resumes and catches up,
and docs/deployment.md ("Re-indexing") for the switch. Bad arguments or config exit 2 with
``mnx-gateway: <message>``, as every other command; a run that fails part-way (the embedding
model went away) exits 1 and resumes from its checkpoint when run again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.config import find_config, load_config
from gateway.memory.embedding import EMBED_BATCH

# Larger batches than this gain nothing from a local model and make a remote one's request huge.
MAX_BATCH = 4096


def _batch_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}, not {size}")
    return size


def _reindex(args: argparse.Namespace) -> int:
    from gateway.memory.index_rebuild import rebuild, target_of

    path = find_config(args.config)
    config = load_config(path)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    try:
        report = asyncio.run(rebuild(config, checkpoint_path=checkpoint, batch=args.batch))
    except KeyboardInterrupt:
        print("mnx-gateway: reindex interrupted; run it again to resume from its checkpoint", file=sys.stderr)
        return 130
    except Exception as error:
        from gateway.errors import ConfigError

        if isinstance(error, ConfigError):
            raise
        print(f"mnx-gateway: reindex stopped: {type(error).__name__}: {error}; run it again to resume from "
              "its checkpoint", file=sys.stderr)
        return 1
    target = target_of(config)
    where = target.get("path") or target.get("collection") or target.get("index") or target["backend"]
    print(f"reindexed {report.memories} memories and {report.records} records into {where} "
          f"({report.embedded} texts embedded by this run, {report.erased_owners} erased subjects removed)")
    print(f"next: stop the gateway (or, on shared backends, deploy this config), run this command once more to "
          f"catch up, then start the gateway with --config {path}")
    return 0


def add_reindex_command(commands: Any, config_help: str) -> None:
    """Add ``reindex`` to the ``mnx-gateway`` parser's ``commands``."""
    reindex = commands.add_parser(
        "reindex", help="build the memory index a config names (new embedder, lexical kind, or a lost index) "
                        "from the store, resumable, while the gateway serves from its old index")
    reindex.add_argument("--config", help=config_help + "; its memory.vectors must name the new index")
    reindex.add_argument("--batch", type=_batch_size, default=EMBED_BATCH,
                         help=f"memories (or records) per embedder call and index write (default {EMBED_BATCH})")
    reindex.add_argument("--checkpoint", help="the file recording progress (default: inside the new index's "
                                              "directory for edge, else ./data/reindex-<backend>-<name>.sqlite3)")
    reindex.set_defaults(run=_reindex)
