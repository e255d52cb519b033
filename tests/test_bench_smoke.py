"""Every benchmark still runs: each bench/*/run.py (and bench/overhead/turn_cost.py) in its --smoke
mode, as a subprocess.

A benchmark is run by hand, rarely, for minutes; one that broke when the code under it changed
(an import moved, a route renamed) or that crashes after measuring (as the overhead benchmark
did, losing its table at the README step) is found out only then. The smoke modes take a few
seconds, need no network, wrk or LiteLLM proxy, and leave the READMEs alone: this file checks
all three, and that each printed its results table.

It is one test that runs them all, a few at a time (each runs its own gateway on free ports), and
reports every one that failed. One test, not one per benchmark: xdist spreads a file's tests over its
workers, and each worker would start every benchmark for the module fixture they would share (its
`xdist_group` mark is no help: the loadgroup scheduler does not group under pytest 9). On CI's two
cores, beside the rest of the suite, twenty-eight benchmarks starting at once left a gateway unready
after a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# Per benchmark, from its own start: generous for a loaded machine; a quiet one needs well under a minute.
TIMEOUT_SECONDS = 300
# Benchmarks running at once: enough to overlap one's waiting with another's work, few enough that
# none starves while the other worker runs the rest of the suite.
PARALLEL_RUNS = 4

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
    "versioning": ("| split | config | pairs | accuracy |", ROOT / "bench" / "README.md"),
    "dashboard": ("| page | memories in the subject | REST calls |", ROOT / "bench" / "README.md"),
    "embed_ingest": ("| embedder | create, one call per memory (memories/s) |", ROOT / "bench" / "README.md"),
    "overhead/turn_cost.py": ("turn cost: ", ROOT / "bench" / "README.md"),
}


def _script(name: str) -> Path:
    """A benchmark's script: bench/<name>/run.py, or the script ``name`` names under bench/."""
    return ROOT / "bench" / name if name.endswith(".py") else ROOT / "bench" / name / "run.py"


def _readmes() -> dict[Path, bytes]:
    return {readme: readme.read_bytes() for _, readme in BENCHMARKS.values() if readme.exists()}


@dataclass
class SmokeRun:
    returncode: int | None  # None: still running after TIMEOUT_SECONDS, then killed
    output: str


class SmokeRunner:
    """Runs each benchmark's --smoke, PARALLEL_RUNS at a time, in the order given; stop() ends them all."""

    def __init__(self, names: list[str]) -> None:
        # Offline, whatever the developer's shell has set: no model download, no proxy for 127.0.0.1.
        self._env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost",
                     "no_proxy": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1"}
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_RUNS, thread_name_prefix="smoke")
        self.runs: dict[str, Future[SmokeRun]] = {name: self._pool.submit(self._run, name) for name in names}

    def _run(self, name: str) -> SmokeRun:
        with self._lock:
            if self._stopping:
                return SmokeRun(None, "not started: the tests were stopped")
            process = subprocess.Popen([sys.executable, str(_script(name)), "--smoke"], cwd=ROOT,
                                       env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       stdin=subprocess.DEVNULL)
            self._running.add(process)
        try:
            output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
            return SmokeRun(process.returncode, output)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            return SmokeRun(None, output)
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self) -> None:
        """A failed or interrupted test must not leave a benchmark (and its gateway) running."""
        with self._lock:
            self._stopping = True
            running = list(self._running)
        for process in running:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)


def test_every_benchmark_smoke_run_exits_0_and_prints_its_table():
    before = _readmes()
    runner = SmokeRunner(list(BENCHMARKS))
    failures = []
    try:
        for name, future in runner.runs.items():
            run = future.result()
            header, _ = BENCHMARKS[name]
            if run.returncode is None:
                failures.append(f"{_script(name)} --smoke still running after {TIMEOUT_SECONDS} s:\n"
                                f"{run.output[-4000:]}")
            elif run.returncode != 0:
                failures.append(f"{_script(name)} --smoke exited {run.returncode}:\n{run.output[-4000:]}")
            elif header not in run.output:
                failures.append(f"{_script(name)} --smoke printed no results:\n{run.output[-4000:]}")
    finally:
        runner.stop()
    assert not failures, "\n\n".join(failures)
    assert _readmes() == before, "a --smoke run wrote into a benchmark README"
