"""Offline dependency-advisory check over the hash-pinned lock files.

Why this exists: the gateway sits on the request path of someone else's product, so
every dependency is pinned (requirements/*.lock) and an upgrade is a deliberate act.
pip-audit would be the usual guard, but it needs a live vulnerability service (PyPI's
JSON API or OSV), which CI and the developers' machines cannot always reach. This
checker reads a pinned, committed advisory snapshot instead
(security/advisories/pypi.json: the PyPA advisory database's entries for every locked
package, in OSV format, plus the project's own local advisories), so it gives the same
answer offline, every time, for a given commit.

It fails (exit status 1) when:
  * a pinned version is affected by an advisory that is not withdrawn and not accepted
    in security/advisories/accepted.toml (each acceptance needs a written reason);
  * a locked package is missing from the snapshot's list of checked packages (a new
    dependency was added without refreshing the snapshot, so nobody looked it up).

Usage:  python security/check_advisories.py requirements/test.lock [more.lock ...]
Only the standard library and `packaging` are used, so it runs in any environment
that can install the lock.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

SECURITY_DIR = Path(__file__).resolve().parent
DEFAULT_SNAPSHOT = SECURITY_DIR / "advisories" / "pypi.json"
DEFAULT_ACCEPTED = SECURITY_DIR / "advisories" / "accepted.toml"

# A requirement line of a pip-compile / uv lock file: "name==version" at the start of a
# line, optionally followed by an environment marker or a line continuation.
# A pin, with the extras it is installed with if any (``httpx[http2]==0.28.1``: see requirements/README.md).
PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[A-Za-z0-9._,-]+\])?==(?P<version>[^\s;\\]+)")


@dataclass(frozen=True)
class Finding:
    """One locked pin that one advisory affects."""

    package: str
    version: str
    advisory_id: str
    summary: str
    remedy: str
    aliases: tuple[str, ...] = ()


@dataclass
class CheckResult:
    """Everything one run found; `passed` says whether CI may go on."""

    pins: dict[str, str]
    findings: list[Finding] = field(default_factory=list)
    accepted: list[tuple[Finding, str]] = field(default_factory=list)
    unchecked_packages: list[str] = field(default_factory=list)
    stale_acceptances: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings and not self.unchecked_packages


# --- reading the inputs -------------------------------------------------------------


def read_lock_pins(lock_path: Path) -> dict[str, str]:
    """The lock's pins as {normalized name: version}; hashes, comments and markers ignored."""
    pins: dict[str, str] = {}
    for line in lock_path.read_text(encoding="utf-8").splitlines():
        match = PIN_LINE.match(line)
        if match:
            pins[canonicalize_name(match["name"])] = match["version"]
    if not pins:
        raise ValueError(f"{lock_path}: no name==version pins found")
    return pins


def load_snapshot(snapshot_path: Path = DEFAULT_SNAPSHOT) -> dict:
    snapshot = json.loads(snapshot_path.read_text(encoding="utf-8"))
    for key in ("checked_packages", "advisories"):
        if key not in snapshot:
            raise ValueError(f"{snapshot_path}: missing {key!r}")
    return snapshot


def load_accepted(accepted_path: Path = DEFAULT_ACCEPTED) -> dict[str, str]:
    """Accepted advisory ids -> reason. An entry without a real reason is an error."""
    if not accepted_path.exists():
        return {}
    entries = tomllib.loads(accepted_path.read_text(encoding="utf-8")).get("accepted", [])
    accepted: dict[str, str] = {}
    for entry in entries:
        advisory_id = str(entry.get("id", "")).strip()
        reason = str(entry.get("reason", "")).strip()
        if not advisory_id or len(reason) < 20:
            raise ValueError(
                f"{accepted_path}: every [[accepted]] entry needs an id and a reason "
                f"(a sentence saying why the gateway is not exposed); got {entry!r}"
            )
        accepted[advisory_id] = reason
    return accepted


# --- deciding whether a version is affected (OSV semantics) -------------------------


def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _event_version(event: dict) -> Version:
    (value,) = event.values()  # an OSV event has one key: introduced, fixed or last_affected
    return Version(value)  # "introduced": "0" is the lowest version, as OSV means it


def in_ecosystem_range(version: Version, events: Iterable[dict]) -> bool:
    """OSV's ECOSYSTEM range walk: events sorted by version; 'introduced' opens the
    affected state, 'fixed' closes it at that version, 'last_affected' closes it just
    after that version. Several introduced/fixed pairs may share one range."""
    affected = False
    for event in sorted(events, key=_event_version):
        (kind,) = event.keys()
        bound = _event_version(event)
        if kind == "introduced" and version >= bound:
            affected = True
        elif kind == "fixed" and version >= bound:
            affected = False
        elif kind == "last_affected" and version > bound:
            affected = False
    return affected


def in_explicit_versions(version_text: str, listed: Iterable[str]) -> bool:
    version = parse_version(version_text)
    for candidate in listed:
        candidate_version = parse_version(candidate)
        if candidate == version_text or (version and candidate_version == version):
            return True
    return False


def affects(affected_entry: dict, version_text: str) -> bool:
    """Whether one OSV `affected[]` entry covers this version of its package."""
    if in_explicit_versions(version_text, affected_entry.get("versions", [])):
        return True
    version = parse_version(version_text)
    if version is None:
        return False
    return any(
        in_ecosystem_range(version, range_["events"])
        for range_ in affected_entry.get("ranges", [])
        if range_.get("type") == "ECOSYSTEM"
    )


def range_bounds(affected_entry: dict, kind: str) -> list[str]:
    """Every 'fixed' (or 'last_affected') version named by the entry's ranges."""
    return [
        event[kind]
        for range_ in affected_entry.get("ranges", [])
        for event in range_.get("events", [])
        if kind in event
    ]


def remedy_for(affected_entry: dict) -> str:
    """What the report tells the reader to do about an affected pin."""
    if fixed := range_bounds(affected_entry, "fixed"):
        return "fixed in: " + ", ".join(fixed)
    if last := range_bounds(affected_entry, "last_affected"):
        return "last affected: " + ", ".join(last) + "; upgrade past it"
    if affected_entry.get("versions") and not affected_entry.get("ranges"):
        return "only the listed versions are affected; pin another release"
    return "no fixed version known; remove or replace the package"


# --- the check ----------------------------------------------------------------------


def findings_for_pins(pins: dict[str, str], advisories: Iterable[dict]) -> list[Finding]:
    findings = []
    for advisory in advisories:
        if advisory.get("withdrawn"):
            continue
        for affected_entry in advisory.get("affected", []):
            package = canonicalize_name(affected_entry["package"]["name"])
            if affected_entry["package"].get("ecosystem", "PyPI") != "PyPI":
                continue
            version = pins.get(package)
            if version is not None and affects(affected_entry, version):
                findings.append(
                    Finding(
                        package=package,
                        version=version,
                        advisory_id=advisory["id"],
                        summary=advisory.get("summary", ""),
                        remedy=remedy_for(affected_entry),
                        aliases=tuple(advisory.get("aliases", [])),
                    )
                )
    return findings


def check_pins(pins: dict[str, str], snapshot: dict, accepted: dict[str, str]) -> CheckResult:
    result = CheckResult(pins=pins)
    checked = {canonicalize_name(name) for name in snapshot["checked_packages"]}
    result.unchecked_packages = sorted(set(pins) - checked)
    matched_acceptances = set()
    for finding in findings_for_pins(pins, snapshot["advisories"]):
        reason = accepted.get(finding.advisory_id)
        if reason is None:
            result.findings.append(finding)
        else:
            result.accepted.append((finding, reason))
            matched_acceptances.add(finding.advisory_id)
    result.stale_acceptances = sorted(set(accepted) - matched_acceptances)
    return result


def check_lock(
    lock_path: Path,
    snapshot_path: Path = DEFAULT_SNAPSHOT,
    accepted_path: Path = DEFAULT_ACCEPTED,
) -> CheckResult:
    return check_pins(read_lock_pins(lock_path), load_snapshot(snapshot_path), load_accepted(accepted_path))


# --- reporting ----------------------------------------------------------------------


def format_report(lock_name: str, result: CheckResult) -> str:
    lines = [f"{lock_name}: {len(result.pins)} pinned packages checked"]
    for finding in result.findings:
        aliases = f" ({', '.join(finding.aliases)})" if finding.aliases else ""
        lines.append(
            f"  AFFECTED {finding.package}=={finding.version}: {finding.advisory_id}{aliases}"
            f" - {finding.summary} [{finding.remedy}]"
        )
    for finding, reason in result.accepted:
        lines.append(
            f"  accepted {finding.package}=={finding.version}: {finding.advisory_id} - {reason}"
        )
    for package in result.unchecked_packages:
        lines.append(
            f"  NOT IN SNAPSHOT {package}=={result.pins[package]}: refresh "
            "security/advisories/pypi.json (see security/README.md) before locking it"
        )
    for advisory_id in result.stale_acceptances:
        lines.append(f"  note: accepted {advisory_id} no longer matches any pin; remove it")
    lines.append("  OK" if result.passed else "  FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="+", type=Path, help="lock files to check")
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_SNAPSHOT)
    parser.add_argument("--accepted", type=Path, default=DEFAULT_ACCEPTED)
    args = parser.parse_args(argv)

    all_passed = True
    for lock_path in args.locks:
        result = check_lock(lock_path, args.snapshot, args.accepted)
        print(format_report(str(lock_path), result))
        all_passed = all_passed and result.passed
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
