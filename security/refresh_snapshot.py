"""Rebuild security/advisories/pypi.json from a local clone of the PyPA advisory database.

Why: the advisory check (check_advisories.py) must give the same answer offline, so it
reads a committed snapshot rather than a live service. Refreshing that snapshot is the
one step that needs the network, and it should be a mechanical one: clone (or pull)
https://github.com/pypa/advisory-database, then run

    python security/refresh_snapshot.py --advisory-db /path/to/advisory-database

It reads the advisories (vulns/<package>/*.yaml) of every package pinned in the lock
files, keeps what the check needs (id, aliases, summary, withdrawn, the PyPI ECOSYSTEM
ranges; an explicit `versions` list only where an advisory has no ECOSYSTEM range,
since otherwise it is just OSV's expansion of those ranges), keeps the project's own
local advisories (source "mnx-gateway"), and records the date and the database revision.
Review the diff: a pinned version that is newly affected shows up as a failing check.
Needs PyYAML (in the lock) besides the standard library and `packaging`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

# Run as a script, this file's folder is on sys.path, so its sibling imports directly.
from check_advisories import DEFAULT_SNAPSHOT, read_lock_pins

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCKS = (REPO_ROOT / "requirements" / "test.lock", REPO_ROOT / "requirements" / "runtime.lock")
PYPA_DATABASE = "PyPA advisory database (https://github.com/pypa/advisory-database)"
LOCAL_DATABASE = "mnx-gateway"
SUMMARY_LENGTH = 220


def one_line_summary(doc: dict) -> str:
    """The advisory's summary, or the start of its details when the summary is empty or
    the generic 'Vulnerability in <package>'."""
    summary = " ".join(str(doc.get("summary") or "").split())
    if summary and not summary.lower().startswith("vulnerability in "):
        return shorten(summary)
    return shorten(" ".join(str(doc.get("details") or "").split()))


def shorten(text: str) -> str:
    """At most about SUMMARY_LENGTH characters, cut at a word boundary."""
    if len(text) <= SUMMARY_LENGTH:
        return text
    head = text[:SUMMARY_LENGTH]
    return head[: head.rfind(" ")] + " ..."


def affected_entries(doc: dict) -> list[dict]:
    """`affected[]` in the current OSV schema; old PyPA files use `package` + `affects`,
    whose ranges carry introduced/fixed as keys rather than events."""
    if "affected" in doc:
        return doc["affected"]
    ranges = []
    for old_range in doc.get("affects", {}).get("ranges", []):
        events = [{"introduced": str(old_range.get("introduced", "0"))}]
        if "fixed" in old_range:
            events.append({"fixed": str(old_range["fixed"])})
        ranges.append({"type": old_range["type"], "events": events})
    return [{"package": doc["package"], "ranges": ranges, "versions": doc.get("affects", {}).get("versions", [])}]


def compact_affected(entry: dict) -> dict:
    ecosystem_ranges = [
        {"type": "ECOSYSTEM", "events": [{k: str(v) for k, v in event.items()} for event in range_["events"]]}
        for range_ in entry.get("ranges", [])
        if range_.get("type") == "ECOSYSTEM"
    ]
    compact = {
        "package": {"ecosystem": "PyPI", "name": canonicalize_name(entry["package"]["name"])},
        "ranges": ecosystem_ranges,
    }
    if not ecosystem_ranges:
        compact["versions"] = [str(v) for v in entry.get("versions", [])]
    return compact


def advisory_record(doc: dict, source_path: str) -> dict:
    """One snapshot entry, in OSV field names, from one parsed advisory file."""
    record = {
        "id": doc["id"],
        "aliases": [str(alias) for alias in doc.get("aliases", [])],
        "summary": one_line_summary(doc),
        "affected": [compact_affected(entry) for entry in affected_entries(doc)],
        "source": {"database": PYPA_DATABASE, "path": source_path},
    }
    if doc.get("related"):
        record["related"] = [str(item) for item in doc["related"]]
    if doc.get("withdrawn"):
        record["withdrawn"] = str(doc["withdrawn"])
    return record


def read_package_advisories(advisory_db: Path, package: str) -> list[dict]:
    import yaml  # only the refresh needs it

    folder = advisory_db / "vulns" / package
    records = []
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        records.append(advisory_record(doc, str(path.relative_to(advisory_db))))
    return records


def database_revision(advisory_db: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(advisory_db), "rev-parse", "HEAD"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def local_advisories(snapshot_path: Path) -> list[dict]:
    if not snapshot_path.exists():
        return []
    snapshot = json.loads(snapshot_path.read_text(encoding="utf-8"))
    return [a for a in snapshot["advisories"] if a.get("source", {}).get("database") == LOCAL_DATABASE]


def build_snapshot(packages: list[str], pypa_records: list[dict], local: list[dict], source: dict) -> dict:
    return {
        "format": "OSV subset (id, aliases, summary, withdrawn, affected[].ranges ECOSYSTEM / versions)",
        "snapshot_date": dt.date.today().isoformat(),
        "sources": [source, {
            "database": LOCAL_DATABASE,
            "what": "the project's own supply-chain advisories (ids MNX-LOCAL-n), kept across refreshes",
        }],
        "checked_packages": sorted(packages),
        "advisories": sorted(pypa_records, key=lambda a: (a["affected"][0]["package"]["name"], a["id"])) + local,
    }


def write_snapshot(snapshot: dict, snapshot_path: Path) -> None:
    snapshot_path.write_text(json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advisory-db", type=Path, required=True, help="a clone of pypa/advisory-database")
    parser.add_argument("--locks", type=Path, nargs="+", default=list(DEFAULT_LOCKS))
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_SNAPSHOT)
    args = parser.parse_args(argv)

    packages = sorted({name for lock in args.locks for name in read_lock_pins(lock)})
    records = [record for package in packages for record in read_package_advisories(args.advisory_db, package)]
    source = {
        "database": PYPA_DATABASE,
        "revision": database_revision(args.advisory_db),
        "read_from": "vulns/<normalized package name>/*.yaml of a local clone",
    }
    snapshot = build_snapshot(packages, records, local_advisories(args.snapshot), source)
    write_snapshot(snapshot, args.snapshot)
    print(f"{args.snapshot}: {len(packages)} packages, {len(records)} PyPA advisories, "
          f"{len(snapshot['advisories']) - len(records)} local")
    return 0


if __name__ == "__main__":
    sys.exit(main())
