#!/usr/bin/env python3
"""Learning benchmark: how fast the worker learns, and what learn: true costs the client.

(a) worker throughput: N learn jobs are enqueued, then the worker runs them (the
    heuristic extractor, which needs no network, then versioning and storage in
    SQLite + Qdrant Edge, as the embedded default does): jobs/s and memories/s.
(b) added latency: the gateway (``mnx-gateway serve``, embedded default) in front of
    the fake provider (``tests/fake_upstream.py``); one client sends non-streamed chat
    completions one at a time, in blocks of 100 alternating learn: false and learn: true,
    so both see the same conditions. "Paced": the client waits 20 ms after each answer,
    so the worker has finished the job before the next request; the difference of the
    medians is then what learn: true adds to the response itself (writing the durable
    job before the last byte). "Back to back": no wait, so the worker's extraction
    competes with the following requests on the same 2 cores, which is the cost of
    learning on a gateway kept busy by one client.

Usage (from the repository root, with the venv that has the gateway installed):

    /tmp/venv/bin/python bench/learn/run.py [--jobs 2000] [--requests 2000]

``--smoke`` (what tests/test_bench_smoke.py runs): 20 jobs and 20 requests, README left alone.

Prints a markdown table and writes it into bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- learn-results:start -->"
RESULTS_END = "<!-- learn-results:end -->"
KEY = "mnx_bench_key"

STATEMENTS = ["I have a dog named Rex{i}", "My favorite color is shade {i}", "I live in town number {i}",
              "I really enjoy puzzle {i}", "I work at company {i}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def worker_throughput(jobs: int, directory: Path) -> dict[str, float]:
    from gateway.config import parse_config
    from gateway.memory.learning import LEARN_JOB
    from gateway.services import Services

    config = parse_config({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(directory / "throughput.db")}},
        "memory": {"vectors": {"edge": {"path": str(directory / "throughput-index")}}},
        "projects": [{"id": "bench", "keys": [{"key": KEY}]}]})
    services = Services.build(config)
    for i in range(jobs):
        await services.jobs.enqueue("bench", LEARN_JOB, {
            "subject_id": f"s{i % 200}", "chat_id": f"c{i}", "learn": True, "memory_policy": True,
            "user_messages": [STATEMENTS[i % len(STATEMENTS)].format(i=i)], "assistant": "noted",
            "model": "bench", "request_type": "chat", "message_ids": []})
    started = time.perf_counter()
    done = 0
    while True:
        ran = await services.worker.run_once()
        if not ran:
            break
        done += ran
    elapsed = time.perf_counter() - started
    stored = sum([await services.vector_index.count("bench")])
    await services.aclose()
    return {"jobs": done, "seconds": elapsed, "jobs_per_s": done / elapsed, "memories": stored}


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_up(url: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def added_latency(requests: int, directory: Path, block: int = 100, warmup: int = 200) -> dict[str, float]:
    """Client latency with learn off and on, alternating in blocks of ``block`` requests."""
    upstream_port, gateway_port = free_port(), free_port()
    config = {
        "server": {"port": gateway_port},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(directory / "latency.db")}},
        "memory": {"vectors": {"edge": {"path": str(directory / "latency-index")}}},
        "projects": [{"id": "bench", "keys": [{"key": KEY}]}],
        "providers": {"openai": {"api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-fake"}},
    }
    config_path = directory / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    upstream = start([sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port)])
    gateway = start([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)])
    timings: dict[tuple[bool, bool], list[float]] = {(p, learn): [] for p in (True, False) for learn in (True, False)}
    try:
        wait_up(f"http://127.0.0.1:{upstream_port}/")
        wait_up(f"http://127.0.0.1:{gateway_port}/health")
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        with httpx.Client(headers={"x-mnexium-key": KEY}) as client:
            for paced in (True, False):
                for i in range(-warmup, requests):  # the first ``warmup`` requests are not timed
                    learn = (i // block) % 2 == 1
                    body = {"model": "gpt-4o-mini", "messages": [
                        {"role": "user", "content": STATEMENTS[i % len(STATEMENTS)].format(i=i)}],
                        "mnx": {"subject_id": f"u{i % 500}", "learn": learn, "log": False, "history": False,
                                "system_prompt": False}}
                    began = time.perf_counter()
                    response = client.post(url, json=body)
                    elapsed = time.perf_counter() - began
                    response.raise_for_status()
                    if i >= 0:
                        timings[(paced, learn)].append(elapsed * 1000)
                    if paced:
                        time.sleep(0.02)
        jobs_left = httpx.get(f"http://127.0.0.1:{gateway_port}/api/v1/jobs",
                              headers={"x-mnexium-key": KEY}).json()["count"]
    finally:
        stop(gateway)
        stop(upstream)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1] if q < 100 else max(values)

    result: dict[str, float] = {"jobs_left": jobs_left}
    for paced, name in ((True, "paced"), (False, "busy")):
        off, on = timings[(paced, False)], timings[(paced, True)]
        result.update({f"{name}_off_p50": statistics.median(off), f"{name}_on_p50": statistics.median(on),
                       f"{name}_off_p99": pct(off, 99), f"{name}_on_p99": pct(on, 99),
                       f"{name}_added_p50": statistics.median(on) - statistics.median(off)})
    return result


def table(throughput: dict[str, float], latency: dict[str, float], args: argparse.Namespace) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"Run {stamp} on {results.machine_description()}, "
        f"`{results.command_line()}`:",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| (a) learn jobs through the worker (heuristic extractor, versioning, SQLite + Qdrant Edge) | "
        f"{throughput['jobs_per_s']:.0f} jobs/s ({throughput['jobs']:.0f} jobs in {throughput['seconds']:.2f} s, "
        f"{throughput['memories']:.0f} memories stored) |",
        f"| (b) paced: client p50, learn: false / true | {latency['paced_off_p50']:.3f} / "
        f"{latency['paced_on_p50']:.3f} ms |",
        f"| (b) paced: **added p50** (target < 0.5 ms) | **{latency['paced_added_p50']:.3f} ms** |",
        f"| (b) paced: client p99, learn: false / true | {latency['paced_off_p99']:.3f} / "
        f"{latency['paced_on_p99']:.3f} ms |",
        f"| (b) back to back: client p50, learn: false / true (added) | {latency['busy_off_p50']:.3f} / "
        f"{latency['busy_on_p50']:.3f} ms ({latency['busy_added_p50']:+.3f} ms) |",
        f"| (b) back to back: client p99, learn: false / true | {latency['busy_off_p99']:.3f} / "
        f"{latency['busy_on_p99']:.3f} ms |",
        f"| (b) learn jobs left unfinished after the run | {latency['jobs_left']:.0f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds' check that both parts run: 20 jobs, 20 requests, README left alone")
    args = parser.parse_args()
    block, warmup = 100, 200
    if args.smoke:
        args.jobs, args.requests, args.no_readme = 20, 20, True
        block, warmup = 5, 10
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="mnx-learn-bench-") as tmp:
        throughput = asyncio.run(worker_throughput(args.jobs, Path(tmp)))
        print(f"worker: {throughput}")
        latency = added_latency(args.requests, Path(tmp), block, warmup)
        print(f"latency: {latency}")
    text = table(throughput, latency, args)
    print(text)
    if not args.no_readme:
        results.write_readme(README, RESULTS_START, RESULTS_END, text)


if __name__ == "__main__":
    main()
