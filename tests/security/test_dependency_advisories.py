"""The locked dependency set is checked against the pinned advisory snapshot, offline.

Why: pip-audit needs a live vulnerability service that CI cannot always reach, so CI
runs security/check_advisories.py over requirements/*.lock instead (see
security/README.md). These tests make that check part of the suite, prove the checker
really catches a vulnerable pin (its OSV range logic is tested on hand-made advisories,
so a broken evaluator cannot pass silently), and keep the lock files and pyproject.toml's
exact pins from drifting apart.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
TEST_LOCK = REPO / "requirements" / "test.lock"
RUNTIME_LOCK = REPO / "requirements" / "runtime.lock"
CHECKER_PATH = REPO / "security" / "check_advisories.py"
REFRESH_PATH = REPO / "security" / "refresh_snapshot.py"


def load_module(name: str, path: Path):
    """security/ is not an installed package: load its scripts by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checker = load_module("check_advisories", CHECKER_PATH)


def advisory(advisory_id: str, package: str, ranges=(), versions=(), withdrawn=None) -> dict:
    """A hand-made OSV advisory for the package."""
    entry = {
        "package": {"ecosystem": "PyPI", "name": package},
        "ranges": [{"type": "ECOSYSTEM", "events": list(events)} for events in ranges],
    }
    if versions:
        entry["versions"] = list(versions)
    made = {"id": advisory_id, "summary": f"test advisory {advisory_id}", "affected": [entry]}
    if withdrawn:
        made["withdrawn"] = withdrawn
    return made


def affected(version: str, **advisory_fields) -> bool:
    made = advisory("TEST-1", "example", **advisory_fields)
    return bool(checker.findings_for_pins({"example": version}, [made]))


# --- the real locks pass ------------------------------------------------------------


@pytest.mark.parametrize("lock", [TEST_LOCK, RUNTIME_LOCK], ids=["test.lock", "runtime.lock"])
def test_locked_versions_have_no_unaccepted_advisory(lock: Path) -> None:
    result = checker.check_lock(lock)
    assert result.passed, checker.format_report(lock.name, result)


def test_command_line_check_exits_zero_on_the_locks() -> None:
    completed = subprocess.run(
        [sys.executable, str(CHECKER_PATH), str(TEST_LOCK), str(RUNTIME_LOCK)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "OK" in completed.stdout


# --- the OSV range evaluator --------------------------------------------------------


def test_a_version_inside_an_introduced_fixed_range_is_affected() -> None:
    assert affected("1.5.0", ranges=[[{"introduced": "1.2"}, {"fixed": "2.0.1"}]])


def test_the_fixed_version_and_later_ones_are_not_affected() -> None:
    ranges = [[{"introduced": "1.2"}, {"fixed": "2.0.1"}]]
    assert not affected("2.0.1", ranges=ranges)
    assert not affected("3.0", ranges=ranges)
    assert not affected("1.1.9", ranges=ranges)


def test_a_pre_release_of_the_fixed_version_is_still_affected() -> None:
    assert affected("2.0.1rc1", ranges=[[{"introduced": "0"}, {"fixed": "2.0.1"}]])


def test_last_affected_is_inclusive() -> None:
    ranges = [[{"introduced": "0"}, {"last_affected": "3.8.4"}]]
    assert affected("3.8.4", ranges=ranges)
    assert not affected("3.8.5", ranges=ranges)


def test_introduced_zero_covers_every_earlier_version() -> None:
    ranges = [[{"introduced": "0"}, {"fixed": "1.0"}]]
    assert affected("0.0.1", ranges=ranges)
    assert affected("0.9.9.post1", ranges=ranges)


def test_an_open_range_affects_every_later_version() -> None:
    assert affected("99.0", ranges=[[{"introduced": "0"}]])


def test_several_branches_in_one_unsorted_range() -> None:
    # As urllib3's PYSEC-2023-192 writes it: the 2.x pair before the 1.x pair.
    ranges = [[{"introduced": "2.0.0"}, {"fixed": "2.0.6"}, {"introduced": "0"}, {"fixed": "1.26.17"}]]
    assert affected("1.26.16", ranges=ranges)
    assert not affected("1.26.17", ranges=ranges)
    assert affected("2.0.5", ranges=ranges)
    assert not affected("2.0.6", ranges=ranges)
    assert not affected("2.8.0", ranges=ranges)


def test_an_explicit_versions_list_matches_only_those_versions() -> None:
    versions = ["1.82.7", "1.82.8"]
    assert affected("1.82.7", versions=versions)
    assert affected("1.82.8", versions=versions)
    assert not affected("1.82.6", versions=versions)
    assert not affected("1.82.9", versions=versions)


def test_explicit_versions_compare_as_versions() -> None:
    assert affected("2.0.0", versions=["2.0"])


def test_a_withdrawn_advisory_affects_nothing() -> None:
    assert not affected("5.0", ranges=[[{"introduced": "0"}]], withdrawn="2023-11-08T00:54:24Z")


def test_other_range_types_are_not_read_as_versions() -> None:
    made = advisory("TEST-GIT", "example")
    made["affected"][0]["ranges"] = [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]
    assert not checker.findings_for_pins({"example": "1.0"}, [made])


# --- the checker as a whole catches, accepts and refuses ----------------------------


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "pypi.json"
    made = {
        "checked_packages": ["example", "litellm"],
        "advisories": [
            advisory("TEST-RANGE", "example", ranges=[[{"introduced": "0"}, {"fixed": "2.0"}]]),
            advisory("MNX-LOCAL-1", "litellm", versions=["1.82.7", "1.82.8"]),
        ],
    }
    path.write_text(checker.json.dumps(made), encoding="utf-8")
    return path


def write_lock(tmp_path: Path, *pins: str) -> Path:
    lock = tmp_path / "test.lock"
    lock.write_text("".join(f"{pin} \\\n    --hash=sha256:{'0' * 64}\n" for pin in pins), encoding="utf-8")
    return lock


def test_a_vulnerable_pin_fails_the_check_with_a_readable_report(tmp_path: Path, snapshot: Path) -> None:
    lock = write_lock(tmp_path, "example==1.5", "litellm==1.82.7")
    result = checker.check_lock(lock, snapshot, tmp_path / "no-accepted.toml")
    assert not result.passed
    assert {f.advisory_id for f in result.findings} == {"TEST-RANGE", "MNX-LOCAL-1"}
    report = checker.format_report("test.lock", result)
    assert "AFFECTED example==1.5: TEST-RANGE" in report
    assert "fixed in: 2.0" in report
    assert "FAILED" in report


def test_the_command_line_exits_non_zero_on_a_vulnerable_pin(tmp_path: Path, snapshot: Path) -> None:
    lock = write_lock(tmp_path, "litellm==1.82.8")
    exit_code = checker.main([str(lock), "--snapshot", str(snapshot), "--accepted", str(tmp_path / "none.toml")])
    assert exit_code == 1


def test_an_accepted_advisory_passes_but_is_still_reported(tmp_path: Path, snapshot: Path) -> None:
    accepted = tmp_path / "accepted.toml"
    accepted.write_text(
        '[[accepted]]\nid = "TEST-RANGE"\npackage = "example"\n'
        'reason = "example.unsafe is never called by the gateway."\n',
        encoding="utf-8",
    )
    result = checker.check_lock(write_lock(tmp_path, "example==1.5"), snapshot, accepted)
    assert result.passed
    assert "accepted example==1.5: TEST-RANGE" in checker.format_report("test.lock", result)


def test_an_acceptance_without_a_reason_is_refused(tmp_path: Path, snapshot: Path) -> None:
    accepted = tmp_path / "accepted.toml"
    accepted.write_text('[[accepted]]\nid = "TEST-RANGE"\nreason = ""\n', encoding="utf-8")
    with pytest.raises(ValueError, match="reason"):
        checker.check_lock(write_lock(tmp_path, "example==1.5"), snapshot, accepted)


def test_a_locked_package_missing_from_the_snapshot_fails(tmp_path: Path, snapshot: Path) -> None:
    result = checker.check_lock(write_lock(tmp_path, "example==3.0", "newdep==1.0"), snapshot, tmp_path / "none.toml")
    assert not result.passed
    assert result.unchecked_packages == ["newdep"]
    assert "NOT IN SNAPSHOT newdep==1.0" in checker.format_report("test.lock", result)


def test_the_committed_acceptances_all_carry_reasons() -> None:
    checker.load_accepted()  # raises on an entry without an id or a reason


# --- the snapshot and the locks agree with pyproject.toml ---------------------------


def test_every_locked_package_is_in_the_snapshot() -> None:
    snapshot = checker.load_snapshot()
    checked = {canonicalize_name(name) for name in snapshot["checked_packages"]}
    assert set(checker.read_lock_pins(TEST_LOCK)) <= checked


def test_the_snapshot_carries_the_litellm_supply_chain_advisories() -> None:
    advisories = {a["id"]: a for a in checker.load_snapshot()["advisories"]}
    assert checker.findings_for_pins({"litellm": "1.82.7"}, [advisories["MNX-LOCAL-1"]])
    assert checker.findings_for_pins({"litellm": "1.82.8"}, [advisories["MNX-LOCAL-1"]])
    assert checker.findings_for_pins({"litellm": "1.107.3"}, [advisories["MNX-LOCAL-2"]])
    assert not checker.findings_for_pins({"litellm": "1.108.0"}, [advisories["MNX-LOCAL-2"]])


def pyproject_exact_pins(*extras: str) -> dict[str, str]:
    """pyproject.toml's dependencies (and the given extras) as {name: version}; each
    must be an exact == pin, which is the project's rule. An extra may name another extra of
    this project (``mnx-gateway[tracing]``): its pins count as the naming extra's own."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    pending = list(extras)
    while pending:
        for line in project["optional-dependencies"][pending.pop()]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending += sorted(requirement.extras)
            else:
                lines.append(line)
    pins = {}
    for line in lines:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"),
    [(RUNTIME_LOCK, ()), (TEST_LOCK, ("test",))],
    ids=["runtime.lock", "test.lock"],
)
def test_lock_pins_equal_pyproject_pins(lock: Path, extras: tuple[str, ...]) -> None:
    locked = checker.read_lock_pins(lock)
    drifted = {
        name: (version, locked.get(name, "missing"))
        for name, version in pyproject_exact_pins(*extras).items()
        if locked.get(name) != version
    }
    assert not drifted, (
        f"pyproject.toml pin vs {lock.name}: {drifted}; regenerate the locks (requirements/README.md)"
    )


def test_runtime_lock_is_the_test_lock_without_test_only_packages() -> None:
    runtime, test = checker.read_lock_pins(RUNTIME_LOCK), checker.read_lock_pins(TEST_LOCK)
    disagreeing = {name: (version, test.get(name)) for name, version in runtime.items() if test.get(name) != version}
    assert not disagreeing, f"runtime.lock vs test.lock: {disagreeing}"


def test_every_lock_entry_carries_a_hash() -> None:
    for lock in (TEST_LOCK, RUNTIME_LOCK):
        blocks = lock.read_text(encoding="utf-8").split("\n")
        pins = [i for i, line in enumerate(blocks) if checker.PIN_LINE.match(line)]
        for index in pins:
            assert blocks[index + 1].strip().startswith("--hash=sha256:"), f"{lock.name}: {blocks[index]}"


# --- the refresh script's conversion ------------------------------------------------


def test_refresh_reads_both_pypa_file_schemas() -> None:
    refresh = load_module("refresh_snapshot", REFRESH_PATH)
    old_schema = {
        "id": "PYSEC-2021-47",
        "package": {"name": "pydantic", "ecosystem": "PyPI"},
        "summary": "Vulnerability in pydantic",
        "details": "Passing 'infinity' to date fields loops forever. Upgrade.",
        "affects": {"ranges": [
            {"type": "GIT", "repo": "https://example.invalid", "fixed": "abc"},
            {"type": "ECOSYSTEM", "introduced": "1.8", "fixed": "1.8.2"},
            {"type": "ECOSYSTEM", "fixed": "1.6.2"},
        ]},
        "aliases": ["CVE-2021-29510"],
    }
    record = refresh.advisory_record(old_schema, "vulns/pydantic/PYSEC-2021-47.yaml")
    assert record["summary"] == "Passing 'infinity' to date fields loops forever. Upgrade."
    assert record["affected"][0]["ranges"] == [
        {"type": "ECOSYSTEM", "events": [{"introduced": "1.8"}, {"fixed": "1.8.2"}]},
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.6.2"}]},
    ]
    assert checker.findings_for_pins({"pydantic": "1.8.1"}, [record])
    assert not checker.findings_for_pins({"pydantic": "1.7.0"}, [record])

    new_schema = {
        "id": "PYSEC-2023-73",
        "details": "A withdrawn advisory.",
        "withdrawn": "2023-06-06T10:37:00Z",
        "affected": [{"package": {"name": "redis", "ecosystem": "PyPI"},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                      "versions": ["4.5.5"]}],
    }
    record = refresh.advisory_record(new_schema, "vulns/redis/PYSEC-2023-73.yaml")
    assert record["withdrawn"] == "2023-06-06T10:37:00Z"
    assert "versions" not in record["affected"][0]  # the ECOSYSTEM range already says it
    assert not checker.findings_for_pins({"redis": "8.1.0"}, [record])
