"""The Dockerfile's structure, checked statically (no Docker engine is needed to run the suite).

What each rule protects: a base image pinned by digest rebuilds the same bytes; the locked
dependencies installed before our code is copied keep a code edit from reinstalling
everything; .dockerignore keeps a development checkout's .venv (hundreds of MB) out of the
build context; the health check gives a cold start time; the data directory is a volume.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_the_base_image_is_pinned_by_version_and_digest():
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}( AS \w+)?", image), image


def test_the_locked_dependencies_are_installed_before_the_code_is_copied():
    steps = instructions()
    lock_install = next(i for i, (keyword, args) in enumerate(steps)
                        if keyword == "RUN" and "--require-hashes" in args and "requirements/runtime.lock" in args)
    code_copies = [i for i, (keyword, args) in enumerate(steps)
                   if keyword == "COPY" and re.search(r"(^|\s)(\./)?(gateway|plugins)/?(\s|$)", args)]
    assert code_copies, "the Dockerfile copies neither gateway/ nor plugins/"
    assert lock_install < min(code_copies)
    # Only the lock file reaches the image before that install, so nothing else invalidates the layer.
    early_copies = [args for keyword, args in steps[:lock_install] if keyword in ("COPY", "ADD")]
    assert all("runtime.lock" in args and "gateway" not in args.split() for args in early_copies), early_copies
    assert any(keyword == "RUN" and "--no-deps" in args for keyword, args in steps[lock_install + 1:])


def test_the_build_context_leaves_out_the_virtualenv_and_local_data():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "data", ".git"} <= ignored
    assert ignored & {"__pycache__", "**/__pycache__"}
    # What the image needs must not be ignored.
    assert not ignored & {"gateway", "plugins", "requirements", "pyproject.toml", "README.md", "gateway.yaml"}


def test_the_health_check_allows_a_start_period_and_the_data_is_a_volume():
    steps = instructions()
    health = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and re.search(r"--start-period=\d+s", health[0]), health
    assert "/health" in health[0]
    volumes = [args for keyword, args in steps if keyword == "VOLUME"]
    assert volumes and "/app/data" in volumes[0]
    # The chown of /app/data must come before the VOLUME line, or Docker discards it.
    chown = max(i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "/app/data" in args)
    assert chown < next(i for i, (keyword, _) in enumerate(steps) if keyword == "VOLUME")


def test_the_image_runs_the_docker_example_config_listening_on_all_interfaces():
    steps = instructions()
    assert any(keyword == "COPY" and args.split()[0] == "config" for keyword, args in steps)
    assert ("ENV", "MNX_GATEWAY_CONFIG=/app/config/docker.yaml") in steps
    config = yaml.safe_load((ROOT / "config" / "docker.yaml").read_text())
    assert config["server"]["host"] == "0.0.0.0"
    assert config["storage"]["sqlite"]["path"].startswith("/app/data/")
