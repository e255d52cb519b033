"""Every benchmark still runs: each bench/*/run.py in its --smoke mode, as a subprocess.

A benchmark is run by hand, rarely, for minutes; one that broke when the code under it changed
(an import moved, a route renamed) or that crashes after measuring (as the overhead benchmark
did, losing its table at the README step) is found out only then. The smoke modes take a few
seconds, need no network, wrk or LiteLLM proxy, and leave the READMEs alone: this file checks
all three, and that each printed its results table.

They all start together (each runs its own gateway on free ports) and each test waits for its
own: run one after another they would take several times as long on a two-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 240  # a generous ceiling for a loaded machine; a quiet one takes well under a minute

# Each benchmark, the markdown header its results table starts with, and the README it could write.
BENCHMARKS = {
    "overhead": ("| target | concurrency | req/s |", ROOT / "bench" / "README.md"),
    "learn": ("| measure | value |", ROOT / "bench" / "README.md"),
    "memory_search": ("| memories | insert/s (dense + BM25) |", ROOT / "bench" / "memory_search" / "README.md"),
    "locomo": ("| config | any@1 | any@5 | any@10 |", ROOT / "bench" / "locomo" / "README.md"),
    "soak": ("| backend | minutes | req/s |", ROOT / "bench" / "soak" / "README.md"),
    "events": ("| backend | events | publish -> subscriber p50 ms", ROOT / "bench" / "README.md"),
    "subject_api": ("| endpoint | backend | claims per subject |", ROOT / "bench" / "README.md"),
    "records": ("| measure | backend | records of the type |", ROOT / "bench" / "README.md"),
    "prompt_cache": ("| scenario | mode | turn 1 |", ROOT / "bench" / "README.md"),
    "summaries": ("| measure | prior turns | replayed messages |", ROOT / "bench" / "README.md"),
    "usage_limits": ("| backend, check | p50 ms | p99 ms |", ROOT / "bench" / "README.md"),
}


def _readmes() -> dict[Path, bytes]:
    return {readme: readme.read_bytes() for _, readme in BENCHMARKS.values() if readme.exists()}


@pytest.fixture(scope="module")
def smoke_runs() -> Iterator[dict[str, subprocess.Popen]]:
    before = _readmes()
    # Offline, whatever the developer's shell has set: no model download, no proxy for 127.0.0.1.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1"}
    runs = {name: subprocess.Popen([sys.executable, str(ROOT / "bench" / name / "run.py"), "--smoke"], cwd=ROOT,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL)
            for name in BENCHMARKS}
    try:
        yield runs
    finally:
        for run in runs.values():  # a failed test must not leave a benchmark (and its gateway) running
            if run.poll() is None:
                run.terminate()
                try:
                    run.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.kill()
                    run.wait()
    assert _readmes() == before, "a --smoke run wrote into a benchmark README"


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_smoke_run_exits_0_and_prints_its_table(name: str, smoke_runs: dict[str, subprocess.Popen]):
    started = time.monotonic()
    try:
        output, _ = smoke_runs[name].communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        smoke_runs[name].kill()
        output, _ = smoke_runs[name].communicate()
        pytest.fail(f"bench/{name}/run.py --smoke still running after {TIMEOUT_SECONDS} s:\n{output[-4000:]}")
    assert smoke_runs[name].returncode == 0, f"bench/{name}/run.py --smoke exited {smoke_runs[name].returncode} " \
                                             f"(after {time.monotonic() - started:.0f} s more):\n{output[-4000:]}"
    header, _ = BENCHMARKS[name]
    assert header in output, f"bench/{name}/run.py --smoke printed no results table:\n{output[-4000:]}"
