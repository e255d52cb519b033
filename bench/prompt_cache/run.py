#!/usr/bin/env python3
"""Prompt-cache benchmark (issue 27): how much of each forwarded prompt a provider's prompt cache
could reuse over a long chat, in the contract's order and with ``mnx.cache``, and what either
order costs to assemble.

Provider prompt caches (OpenAI's automatic one, Anthropic's breakpoints, Gemini's implicit one)
reuse the longest prefix of a request they have seen before. The measure here is that prefix,
in bytes: turn N's **shared-prefix share** is the length of the longest common prefix of turn
N-1's and turn N's forwarded messages, serialized, over the length of turn N's (turn 1 has no
turn before it: 0%). Messages are serialized one canonical JSON line each (sorted keys, no
spaces), the system message first: a byte that differs there differs in what the provider
tokenizes. Providers reuse whole blocks of tokens (OpenAI: from 1,024 tokens, in steps of 128),
so this is the upper bound of what they bill as cached, close to it for long prompts. Reported:
the share at turns 1, 10, 25 and 50, its mean over the chat, and how many turns reused less than
half of their prompt (a cache miss, in effect).

**The chat.** A gateway runs as ``python -m gateway serve`` (SQLite, the memories' embedded
Qdrant Edge index, BM25 only, learning off) with its OpenAI provider pointed at the test suite's
fake provider (``tests/fake_upstream.py``), run inside this process so that the bodies it
receives can be read back byte for byte (``--show-requests`` prints message contents, not the
JSON sent). One subject has a default project system prompt (about 120 words), a profile of 3
fields, 25 memories on 25 topics and an agent state. Two chats of ``--turns`` (50) non-streamed
``POST /v1/chat/completions`` each, one with ``mnx.cache: false`` (the contract's order), one
with ``mnx.cache: true``, both with recall, profile, state and history on, run turn by turn side
by side (so both see the same memories and state). Each user message (about 30 words) asks about
one or two topics, so recall changes every turn; the state is rewritten every 5th turn. The
provider answers each with a scripted assistant message of about 60 words (the ``canned`` model)
rather than its echo, which would repeat the user message (and in cache mode this turn's
context) into the history.

Two scenarios: the history fits ``history.token_budget`` (the default 8,000 estimated tokens;
the 50 turns are about 7,000), and a budget of 2,000 tokens, where the oldest turns are cut
away from about turn 12 on: one message per turn in the contract's order, 16 at a time
(``history.cut_chunk_messages``) in cache mode, which then misses the cache once every 8 turns.

**Assembly cost.** After a scenario's chat the gateway is stopped and its services are built in
this process from the same config (``Services.build``, the same database and index): the
subject's next message is assembled on the warmed-up 50-turn chat (``assemble(turn,
services.stages)``, then the Chat Completions surface's ``with_context``), ``--iterations``
times in each order, the two alternating call by call so that drift on a shared machine hits
both alike. Reported: p50 and p99 of each, and the p50 difference (target: at most 0.1 ms).

Targets (issue 27): a shared-prefix share of at least 90% at turn 50 in cache mode; assembly
p50 no more than 0.1 ms apart.

Usage (from the repository root, with the venv that has the gateway installed):

    .venv/bin/python bench/prompt_cache/run.py [--turns 50] [--iterations 3000] [--print-only]

``--smoke`` (what tests/test_bench_smoke.py runs): 10 turns, the default budget only, 50
iterations, README left alone. ``--print-only``: print the tables, leave the README alone.
Otherwise they go into bench/README.md between the prompt-cache-results markers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.processes import free_port, json_answer, stop, wait_up  # noqa: E402
from bench.subject_api.run import percentile  # noqa: E402
from gateway.pipeline.context import VOLATILE_PREAMBLE  # noqa: E402
from gateway.pipeline.recall import PREAMBLE as RECALL_PREAMBLE  # noqa: E402
from tests.prompt_prefix import canonical_lines, shared_prefix_length  # noqa: E402

README = ROOT / "bench" / "README.md"
RESULTS_START = "<!-- prompt-cache-results:start -->"
RESULTS_END = "<!-- prompt-cache-results:end -->"
KEY = "mnx_bench_prompt_cache_key"
PROVIDER_KEY = "sk-bench-provider-key"
PROJECT = "bench"
SUBJECT = "bench-traveller"
STATE_KEY = "trip-planner"
MODEL = "canned"  # the fake provider answers it with the next scripted body
REPORTED_TURNS = (1, 10, 25, 50)

SYSTEM_PROMPT = (
    "You are the concierge of a small travel agency that plans long trips for returning customers. "
    "Answer in a warm, concise tone, two short paragraphs at most. Use what you know about the "
    "customer to make concrete suggestions: dates, places, trains rather than flights when the "
    "journey is under six hours, and quiet hotels. Never invent prices; say when something must be "
    "checked with a partner. When the customer asks about an earlier booking, look at the state of "
    "the trip planner first. If you are unsure what the customer means, ask one clarifying question "
    "instead of guessing. Keep medical and dietary needs in mind for every restaurant and activity you "
    "suggest, and mention them explicitly when they matter.")
PROFILE = {"name": "Ada Lindqvist", "timezone": "Europe/Lisbon", "language": "en"}

# (the words a question asks about, the memory the subject has on it)
TOPICS = [
    ("bees balcony", "Ada keeps two hives of bees on her balcony in Lisbon"),
    ("cello orchestra", "Ada plays the cello in an amateur orchestra on Tuesday evenings"),
    ("peanuts epipen", "Ada is allergic to peanuts and always carries an epipen"),
    ("Volvo estate", "Ada drives an old green Volvo estate and prefers not to rent cars abroad"),
    ("daughter Mira", "Ada's daughter Mira studies marine biology in Bergen"),
    ("marathons Kyoto", "Ada runs marathons and wants to run one in Kyoto next autumn"),
    ("engineer footbridges", "Ada works as a structural engineer designing footbridges"),
    ("fountain pens", "Ada collects vintage fountain pens and visits stationery shops when travelling"),
    ("sleeper trains", "Ada loves sleeper trains and booked the Caledonian Sleeper twice"),
    ("seasick ferries", "Ada gets seasick on small ferries but is fine on large ships"),
    ("vegetarian Ethiopian", "Ada has been vegetarian for ten years and likes Ethiopian cuisine"),
    ("hikes Alps", "Ada hikes in the Alps every summer and owns heavy leather boots"),
    ("architecture museum", "Ada visits every modern architecture museum she can find"),
    ("film camera", "Ada shoots on a 1970s film camera and develops her own negatives"),
    ("jazz clubs", "Ada likes small jazz clubs and dislikes large concert halls"),
    ("Japanese hiragana", "Ada is learning Japanese and can read hiragana and katakana"),
    ("family-run hotels", "Ada prefers family-run hotels under 150 euros a night"),
    ("window seat", "Ada always wants a window seat facing the direction of travel"),
    ("birthday October", "Ada's birthday is on the 14th of October"),
    ("partner Jonas", "Ada's partner Jonas is a chef who wants to visit markets everywhere"),
    ("jet lag", "Ada sleeps badly with jet lag and avoids red-eye flights"),
    ("cold lakes", "Ada swims in cold lakes every morning when she can"),
    ("Portuguese poetry", "Ada reads Portuguese poetry and hunts for second-hand bookshops"),
    ("cycling Danube", "Ada enjoyed a cycling tour along the Danube in 2023"),
    ("loyalty points", "Ada has gold status with a rail pass and collects its loyalty points"),
]
ANSWER_WORDS = ("that sounds lovely and I would suggest keeping the mornings free then taking the regional "
                "train along the coast where a small family hotel near the old harbour has quiet rooms and "
                "a garden I will check the dates with our partner and come back to you with two options "
                "one slower and one with fewer changes so you can compare them calmly before deciding").split()


def question(turn: int) -> str:
    """The user's message of turn ``turn`` (1-based), about two topics. (Short: a memory is recalled
    when it holds a fifth of the message's key terms, ``memory.recall.min_score``.)"""
    first, second = TOPICS[(turn * 7) % len(TOPICS)][0], TOPICS[(turn * 11 + 3) % len(TOPICS)][0]
    return f"Question {turn}: what about my {first} and my {second}?"


def answer_body(turn: int) -> dict[str, Any]:
    """The provider's answer to turn ``turn``: about 60 words, different each turn."""
    words = ANSWER_WORDS[turn % 9:] + ANSWER_WORDS[:turn % 9]
    text = f"For turn {turn}: " + " ".join(words).capitalize() + "."
    return {"id": f"chatcmpl-bench-{turn}", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 80, "total_tokens": 1080}}


def state_value(turn: int) -> dict[str, Any]:
    step = turn // 5
    return {"step": step, "booked": [f"leg {n}" for n in range(step)], "next": f"book leg {step}"}


def mnx(chat_id: str, cache: bool) -> dict[str, Any]:
    return {"subject_id": SUBJECT, "chat_id": chat_id, "cache": cache, "recall": True, "history": True,
            "profile": True, "state": {"load": True, "key": STATE_KEY}, "learn": False}


# -- measuring a prompt ---------------------------------------------------------------------


def opens_with_context(message: dict[str, Any]) -> bool:
    """Whether a forwarded user message begins with the turn's context (cache mode: its string
    content stays a string, the context first)."""
    content = message.get("content")
    return isinstance(content, str) and content.startswith(VOLATILE_PREAMBLE)


def shares(prompts: list[bytes]) -> list[float]:
    """Each turn's shared-prefix share (turn 1: 0, nothing came before it)."""
    return [0.0] + [shared_prefix_length(before, after) / len(after) for before, after in zip(prompts, prompts[1:])]


# -- the scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    label: str
    token_budget: int


SCENARIOS = [Scenario("history within its budget (8,000 tokens)", 8000),
             Scenario("history over its budget (2,000 tokens)", 2000)]


@dataclass
class Measured:
    scenario: Scenario
    # Per order (cache mode or not): the forwarded prompt of each turn, serialized.
    prompts: dict[bool, list[bytes]]
    # Per order: assembly timings in ms.
    assembly: dict[bool, list[float]]


def gateway_config(workdir: Path, name: str, port: int, provider_url: str, token_budget: int) -> dict[str, Any]:
    return {"server": {"port": port, "log_level": "warning", "access_log": False},
            "storage": {"backend": "sqlite", "sqlite": {"path": str(workdir / f"{name}.db")}},
            "memory": {"vectors": {"edge": {"path": str(workdir / f"{name}-index")}}},
            "projects": [{"id": PROJECT, "keys": [{"key": KEY, "scopes": ["*"]}]}],
            "providers": {"openai": {"api_base": provider_url + "/v1", "api_key": PROVIDER_KEY}},
            "history": {"token_budget": token_budget},
            "defaults": {"learn": False, "log": True, "history": True, "system_prompt": True}}


def seed(client: httpx.Client) -> None:
    json_answer(client.post("/api/v1/prompts", json={"name": "concierge", "prompt_text": SYSTEM_PROMPT,
                                                     "is_default": True}), 200, 201)
    json_answer(client.patch("/api/v1/profiles", json={"subject_id": SUBJECT, "updates": [
        {"field_key": key, "value": value} for key, value in PROFILE.items()]}))
    for _, memory in TOPICS:
        json_answer(client.post("/api/v1/memories", json={"subject_id": SUBJECT, "text": memory}), 200, 201)
    put_state(client, 0)


def put_state(client: httpx.Client, turn: int) -> None:
    json_answer(client.put(f"/api/v1/state/{STATE_KEY}", headers={"x-subject-id": SUBJECT},
                           json={"value": state_value(turn)}))


def run_chats(client: httpx.Client, provider: Any, turns: int) -> dict[bool, list[bytes]]:
    """Both chats, turn by turn side by side; each turn's forwarded messages, serialized."""
    prompts: dict[bool, list[bytes]] = {False: [], True: []}
    for turn in range(1, turns + 1):
        if turn % 5 == 0:
            put_state(client, turn)
        for cache in (False, True):
            provider.requests.clear()
            provider.chat_answers.append(answer_body(turn))
            json_answer(client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": question(turn)}],
                "mnx": mnx("cache" if cache else "contract", cache)}))
            forwarded = [r for r in provider.requests if r["path"].endswith("/chat/completions")]
            if len(forwarded) != 1:
                raise RuntimeError(f"turn {turn}: the provider received {len(forwarded)} chat requests")
            messages = forwarded[0]["body"]["messages"]
            if RECALL_PREAMBLE not in json.dumps(messages[0]) + json.dumps(messages[-1]):
                raise RuntimeError(f"turn {turn} ({question(turn)!r}) recalled no memory")
            if cache and not opens_with_context(messages[-1]):
                raise RuntimeError(f"turn {turn}: cache mode forwarded no context in the latest user message")
            prompts[cache].append(canonical_lines(messages))
    return prompts


async def time_assembly(config_data: dict[str, Any], turns: int, iterations: int) -> dict[bool, list[float]]:
    """Assembling turn ``turns + 1`` of the cache chat in process, in either order, alternating."""
    from starlette.datastructures import Headers

    from gateway.config import parse_config
    from gateway.options import parse_options
    from gateway.pipeline.context import TurnContext, assemble
    from gateway.proxy.chat_completions import CHAT_COMPLETIONS
    from gateway.services import Services

    config = parse_config(config_data)
    services = Services.build(config)
    await services.start()
    try:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": question(turns + 1)}]}
        options = {cache: parse_options(mnx("cache", cache), Headers(), config.defaults) for cache in (False, True)}
        timings: dict[bool, list[float]] = {False: [], True: []}
        warmup = max(20, iterations // 10)
        for i in range(-warmup, iterations):
            for cache in ((False, True) if i % 2 else (True, False)):
                began = time.perf_counter()
                turn = TurnContext(PROJECT, options[cache], body["messages"], MODEL)
                context = await assemble(turn, services.stages)
                forwarded = CHAT_COMPLETIONS.with_context(body, context)
                elapsed = time.perf_counter() - began
                if i >= 0:
                    timings[cache].append(elapsed * 1000)
                in_user_message = opens_with_context(forwarded["messages"][-1])
                if i == -warmup and in_user_message != cache:
                    raise RuntimeError(f"assembly in {'cache' if cache else 'contract'} mode placed the context "
                                       "where it does not belong")
        return timings
    finally:
        await services.aclose()


def run_scenario(scenario: Scenario, workdir: Path, provider: Any, provider_url: str, turns: int,
                 iterations: int) -> Measured:
    name = f"budget-{scenario.token_budget}"
    port = free_port()
    config_data = gateway_config(workdir, name, port, provider_url, scenario.token_budget)
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config_data))
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}) as client:
            seed(client)
            prompts = run_chats(client, provider, turns)
    except BaseException:
        print(f"gateway log ({log_path}):\n{log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop(process)  # the index is the gateway's alone while it runs
    assembly = asyncio.run(time_assembly(config_data, turns, iterations))
    return Measured(scenario, prompts, assembly)


# -- reporting ------------------------------------------------------------------------------


def tables(measured: list[Measured], turns: int, iterations: int, smoke: bool) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    shown = [t for t in REPORTED_TURNS if t <= turns]
    lines = [f"Run {when} on {results.machine_description()}, `{results.command_line()}`"
             + (" (smoke: tiny sizes, not results)" if smoke else "") + ":", "",
             f"Shared-prefix share of the forwarded prompt, per turn of a {turns}-turn chat (target: at least 90% "
             f"at turn 50 in cache mode):", "",
             "| scenario | mode | " + " | ".join(f"turn {t}" for t in shown)
             + " | mean | turns under 50% | prompt bytes at the last turn |",
             "| --- | --- | " + " | ".join("---:" for _ in shown) + " | ---: | ---: | ---: |"]
    for run in measured:
        for cache in (False, True):
            per_turn = shares(run.prompts[cache])
            cells = " | ".join(f"{per_turn[t - 1]:.1%}" for t in shown)
            lines.append(f"| {run.scenario.label} | {'cache' if cache else 'contract'} | {cells} | "
                         f"{statistics.fmean(per_turn):.1%} | {sum(share < 0.5 for share in per_turn)} | "
                         f"{len(run.prompts[cache][-1]):,} |")
    lines += ["", f"Assembly in process on the warmed-up {turns}-turn chat (`assemble` + `with_context`, "
              f"{iterations:,} calls per mode; target: p50 at most 0.1 ms apart):", "",
              "| scenario | contract p50 ms | cache p50 ms | p50 difference ms | contract p99 ms | cache p99 ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for run in measured:
        contract, cached = run.assembly[False], run.assembly[True]
        lines.append(f"| {run.scenario.label} | {statistics.median(contract):.3f} | {statistics.median(cached):.3f} | "
                     f"{statistics.median(cached) - statistics.median(contract):+.3f} | "
                     f"{percentile(contract, 0.99):.3f} | {percentile(cached, 0.99):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=3000, help="assembly calls timed per mode")
    parser.add_argument("--print-only", action="store_true", help="print the tables, leave the README alone")
    parser.add_argument("--smoke", action="store_true", help="10 turns, one scenario, README left alone")
    args = parser.parse_args()
    turns, iterations = (10, 50) if args.smoke else (args.turns, args.iterations)
    scenarios = SCENARIOS[:1] if args.smoke else SCENARIOS

    from tests.fake_upstream import FakeProvider, ServerThread

    provider = FakeProvider()
    server = ServerThread(provider).start()
    try:
        with tempfile.TemporaryDirectory(prefix="prompt-cache-") as tmp:
            measured = [run_scenario(scenario, Path(tmp), provider, server.url, turns, iterations)
                        for scenario in scenarios]
    finally:
        server.stop()
    section = tables(measured, turns, iterations, args.smoke)
    print(section)
    if not (args.smoke or args.print_only):
        results.write_readme(README, RESULTS_START, RESULTS_END, section)


if __name__ == "__main__":
    main()
