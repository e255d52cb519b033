"""What one turn of an overhead target costs the gateway, counted the same way every run.

``run.py`` measures throughput under wrk; on a shared VM its numbers move by 10-20% between
runs of the same code, more than most single changes are worth. This script sends a fixed
sequence of turns of one target (``run.py``'s (c), (g), (h), (i) or (j)) to a gateway on the
embedded backend, one after another, after the same seeding as ``run.py`` (300 memories and
100 claims by default), waits until the learn jobs are done, and reports one of:

* ``instructions``: instructions the gateway process executed per turn, counted by valgrind's
  callgrind (only while the measured turns run; their learn jobs and recall batches included).
  Whatever else the machine does, two runs of the same code differ by up to ~2% (the learn
  worker's wakes and the recall log's batches follow the clock, which valgrind slows ~50x), so
  compare checkouts (``--source``) over two runs each, and take differences under ~2% as noise.
  It counts no time spent in the kernel: a change in syscalls (SQLite's WAL writes, its locks)
  shows in ``frames``, not here;
* ``frames``: pages SQLite wrote to its write-ahead log per turn (each a ``pwrite`` of the page
  and one of its header, on the event loop): a reader holds a snapshot open meanwhile, so the
  log cannot start over, and the growth of its frame count (the wal-index's ``mxFrame``) is
  every frame written;
* ``cpu``: CPU seconds of the gateway process per turn (noisy, like ``run.py``'s).

    python bench/overhead/turn_cost.py --target g --measure instructions --source /tmp/before
    python bench/overhead/turn_cost.py --target g --measure instructions

``--source`` is a checkout whose gateway is measured (default: this one); the seeding and the
turns come from this one. Under valgrind a turn takes ~50x longer: 300 turns take ~30 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from bench.overhead import run as overhead  # noqa: E402

# The turns before the measured ones (not counted): the statements of (g) are learned once,
# the chats' first replay is read, the caches fill.
WARMUP_TURNS = 60
MEASURES = ("instructions", "frames", "cpu")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    targets = [t.key for t in overhead.TARGETS if t.texts or t.key == "c"]
    parser.add_argument("--target", default="g", choices=targets, help="run.py's target whose turns are sent")
    parser.add_argument("--measure", default="instructions", choices=MEASURES)
    parser.add_argument("--turns", type=int, default=300, help="measured turns")
    parser.add_argument("--memories", type=int, default=overhead.DEFAULT_MEMORIES)
    parser.add_argument("--source", type=Path, default=overhead.ROOT,
                        help="the checkout whose gateway is measured (default: this one)")
    parser.add_argument("--smoke", action="store_true", help="a few turns, measured as cpu, to check it runs")
    return parser.parse_args()


def send_turns(target: overhead.Target, first: int, count: int) -> None:
    conn = http.client.HTTPConnection(overhead.HOST, overhead.PORTS["gateway"], timeout=300)
    try:
        for index in range(first, first + count):
            body = overhead.request_body(target, f"turn-cost-{index // overhead.SMOKE_TURNS_PER_CHAT}", index)
            conn.request("POST", target.surface.path, body=json.dumps(body).encode(),
                         headers=overhead.request_headers(target))
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise overhead.BenchError(f"turn {index}: HTTP {response.status} {answer[:300]!r}")
    finally:
        conn.close()


def settle() -> None:
    """Every learn job done and the recall log's batch written."""
    overhead.drain_learning(300)
    time.sleep(0.5)


def log_position(path: Path) -> tuple[bytes, int]:
    """(the write-ahead log's salt, which changes each time the log starts over; the number of
    frames in it, from the wal-index header SQLite keeps in ``-shm``: mxFrame, 4 bytes at offset 16,
    native byte order). The log file's size says neither: a log that started over is written again
    from its start, inside the file's old length."""
    with open(path.with_name(path.name + "-wal"), "rb") as log:
        salt = log.read(32)[16:24]
    with open(path.with_name(path.name + "-shm"), "rb") as index:
        (frames,) = struct.unpack("=I", index.read(20)[16:20])
    return salt, frames


# Turns measured under one snapshot: at 4,000 frames the gateway's own connection checkpoints
# (LOOP_CHECKPOINT_FRAMES). A chunk during which the log started over all the same (seen about one
# run in three, cause not found) is counted again, up to CHUNK_TRIES times.
FRAMES_CHUNK = 50
CHUNK_TRIES = 5


def count_frames(path: Path, target: overhead.Target, first: int, turns: int) -> tuple[int, int]:
    """(WAL frames written by ``turns`` turns, the index of the next turn to send), counted under
    read snapshots that pin the log (it cannot start over, so its frame count only grows, by every
    frame written), FRAMES_CHUNK turns at a time. A snapshot begun when every frame had been copied
    into the file reads the file alone: the next write may still start the log over once, after
    which nothing is copied while the snapshot stands, so one turn is sent before counting."""
    frames = 0
    for chunk in range(0, turns, FRAMES_CHUNK):
        count = min(FRAMES_CHUNK, turns - chunk)
        for _ in range(CHUNK_TRIES):
            counted, first = _count_chunk(path, target, first, count)
            if counted is not None:
                frames += counted
                break
        else:
            raise overhead.BenchError(f"the write-ahead log started over while pinned, {CHUNK_TRIES} times")
    return frames, first


def _count_chunk(path: Path, target: overhead.Target, first: int, count: int) -> tuple[int | None, int]:
    """(frames ``count`` turns wrote, or None if the log started over meanwhile; the next turn)."""
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM documents").fetchone()
        send_turns(target, first, 1)
        settle()
        salt, before = log_position(path)
        send_turns(target, first + 1, count)
        settle()
        after_salt, after = log_position(path)
    finally:
        reader.close()
    return (after - before if after_salt == salt else None), first + 1 + count


def callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def counted_instructions(out: Path) -> int:
    """The instructions of the dumps callgrind wrote (the measured turns': counting is on only then)."""
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
                break
    return total


def main() -> int:
    args = parse_args()
    if args.smoke:
        args.measure, args.turns, args.memories = "cpu", 10, 20
    source = args.source.resolve()
    target = next(t for t in overhead.TARGETS if t.key == args.target)
    workdir = Path(tempfile.mkdtemp(prefix="turn-cost-"))
    # PYTHONHASHSEED fixed: one cause of run-to-run differences fewer (sets and dicts of strings
    # laid out the same way every run).
    env = {**os.environ, "PYTHONPATH": str(source), "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1", "MNX_BENCH_DIR": str(workdir),
           "PYTHONHASHSEED": "0"}
    if args.smoke:  # beside other benchmarks' smoke runs: ports of its own
        overhead.PORTS.update(upstream=overhead.free_port(), gateway=overhead.free_port())
    config = overhead.smoke_gateway_config(workdir) if args.smoke else HERE / "gateway.yaml"
    out = workdir / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    gateway_argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                    "--port", str(overhead.PORTS["gateway"])]
    upstream = overhead.Child("fake upstream", [sys.executable, "-m", "tests.fake_upstream", "--port",
                                                str(overhead.PORTS["upstream"])], env, workdir / "upstream.log")
    gateway = overhead.Child("gateway", (valgrind if args.measure == "instructions" else []) + gateway_argv,
                             env, workdir / "gateway.log")
    overhead.ROOT = source  # the children run from the measured checkout
    for port in (overhead.PORTS["upstream"], overhead.PORTS["gateway"]):
        if not overhead.port_is_free(port):
            raise SystemExit(f"port {port} is taken (another benchmark running?)")
    upstream.start()
    gateway.start()
    try:
        overhead.wait_ready(upstream, overhead.PORTS["upstream"], None, 30)
        overhead.wait_ready(gateway, overhead.PORTS["gateway"], "/health", 600)
        overhead.seed_gateway()
        if target.uses_memories:
            overhead.seed_memories(args.memories)
            overhead.seed_claims(overhead.SEEDED_CLAIMS if not args.smoke else 5)
        send_turns(target, 0, WARMUP_TURNS if not args.smoke else 3)
        settle()
        assert gateway.popen is not None
        pid, first = gateway.popen.pid, WARMUP_TURNS
        if args.measure == "instructions":
            callgrind("-i", "on", str(pid))
            send_turns(target, first, args.turns)
            settle()
            callgrind("-i", "off", str(pid))
            callgrind("-d", str(pid))
            time.sleep(2)  # the dump is written by the process itself
            result = f"{counted_instructions(out) / args.turns / 1e6:.3f} M instructions per turn"
        elif args.measure == "frames":
            frames, first = count_frames(workdir / "gateway.db", target, first, args.turns)
            result = f"{frames / args.turns:.1f} WAL frames per turn"
        else:
            started_cpu, started = overhead.group_cpu_seconds({pid})[pid], time.monotonic()
            send_turns(target, first, args.turns)
            settle()
            cpu = overhead.group_cpu_seconds({pid})[pid] - started_cpu
            wall = time.monotonic() - started - 0.5
            result = f"{cpu / args.turns * 1e3:.3f} ms CPU and {wall / args.turns * 1e3:.3f} ms wall per turn"
        print(f"turn cost: {target.label}, {args.turns} turns, gateway from {source}: {result}")
    except overhead.BenchError as error:
        print(f"turn_cost: {error}\n{gateway.log_tail()}", file=sys.stderr)
        return 1
    finally:
        gateway.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
