"""Gateway overhead: an instant upstream called directly and through Bastion's gateway, in one run.

    python benchmarks/gateway_overhead.py             # full run (about a minute on 2 cores)
    python benchmarks/gateway_overhead.py --quick     # smoke run
    python benchmarks/gateway_overhead.py --json out.json
    python benchmarks/gateway_overhead.py --skip-local --compare-with HEAD~1   # this tree against a revision

What is measured:

- An OpenAI-compatible upstream that answers instantly (a bare ASGI app in its own uvicorn process) is
  called directly, and through a Bastion gateway (its own uvicorn process, as in production: auth on,
  SQLite, usage events recorded) whose `openai` backend points at it, with input and output moderation by the
  given moderation model (default: the shipped `bastion-embedded`; `bastion-lists` shows the gateway's own
  overhead without a model). A child process first builds the model's ONNX graph into the cache, so the
  gateway starts as every start after the first does (without importing torch). Short turns: a
  one-sentence question, a one-sentence answer.
- Latency: sequential requests from one keep-alive httpx client, direct and gateway interleaved,
  after a warm-up; p50 and p99 of each, and the difference (the added latency). The gateway's
  `Server-Timing` header splits its time: moderation, the upstream call, the rest of the turn, and what
  the client saw outside the turn (HTTP, auth, request parsing, the hand-offs between threads).
- Throughput: requests/s with 8 client threads for each path.
- With `--compare-with REV`, a second gateway runs the same way from a checkout of git revision REV (a
  temporary worktree, removed afterwards; `.` runs this tree again) behind the same upstream, and every
  turn goes to all three in a shuffled order. The difference between the two gateways' added latency is
  then measured under the same conditions, which separate runs on a shared machine are not. `--other-env
  NAME=VALUE` sets the second gateway's environment, to compare settings (e.g. `--compare-with .
  --other-env BASTION_GATEWAY__RECORD_USAGE=false`). (Latency only; REV's benchmark must have `--serve`.)
- The `local` backend's tokens/s with 1 and with 8 concurrent requests (greedy, fixed max_tokens).

Ratios are gateway / direct (latency: above 1 is slower; requests/s: below 1 is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

QUESTION = "What is a good name for a small orange cat?"


def questions(n: int, seed: int = 0) -> list[str]:
    """`n` different short, benign chat turns (no two alike, so no moderation cache can help)."""
    from benchmarks.texts import sentence

    rng = random.Random(seed)
    return [
        f"{sentence(rng, hostile_rate=0.0)} {sentence(rng, hostile_rate=0.0)} (turn {i})" for i in range(n)
    ]


async def instant_upstream(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    """A bare ASGI app: every POST gets at once a completion that repeats the last message."""
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    try:
        last = json.loads(b"".join(chunks))["messages"][-1]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        last = QUESTION
    payload = json.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 0,
            "model": "instant",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"You said: {last}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26},
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def gateway_app(upstream_url: str, home: Path, moderation_model: str) -> tuple[Any, str]:
    """A Bastion app with the gateway in front of the upstream; returns (app, client key)."""
    from bastion.app import create_app
    from bastion.auth.keys import KeyStore, Role
    from bastion.core.settings import load_settings
    from bastion.db.session import Database

    db = Database(f"sqlite:///{home / 'bench.db'}")
    db.upgrade()
    settings = load_settings(
        database_url=db.url,
        home=home,
        moderation={"default_model": moderation_model},
        llm={
            "default_model": "instant",
            "models": {"instant": {"backend": "openai", "options": {"base_url": f"{upstream_url}/v1"}}},
        },
    )
    app = create_app(settings, database=db)
    key, _ = KeyStore(db).create(Role.CLIENT, "benchmark")
    return app, key


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def server_timing(header: str) -> dict[str, float]:
    """Milliseconds by entry name in a `Server-Timing` header value ({} when absent or unparsable)."""
    entries: dict[str, float] = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key == "dur" and name:
                try:
                    entries[name] = float(value)
                except ValueError:
                    return {}
    return entries


def latency(clients: dict[str, httpx.Client], texts: list[str], shuffle: bool = False) -> dict[str, Any]:
    """Interleaved sequential calls, one per text and client (in a seeded random order with `shuffle`);
    milliseconds per call for each client, the turns the `gateway` client saw blocked, and the `gateway`
    client's stages: its `Server-Timing` entries plus `outside` (the call's time outside the turn)."""
    times: dict[str, Any] = {name: [] for name in clients}
    times["blocked"] = 0
    times["stages"] = []
    order = list(clients)
    rng = random.Random(len(texts))
    for text in texts:
        body = {"model": "instant", "messages": [{"role": "user", "content": text}]}
        if shuffle:
            rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            response = clients[name].post("/v1/chat/completions", json=body)
            times[name].append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            if name != "gateway":
                continue
            if response.json()["choices"][0]["finish_reason"] != "stop":
                times["blocked"] += 1
            stages = server_timing(response.headers.get("server-timing", ""))
            if "total" in stages:
                times["stages"].append({**stages, "outside": times[name][-1] - stages["total"]})
    return times


def throughput(
    make_client: Callable[[], httpx.Client], texts: list[str], seconds: float, threads: int
) -> float:
    """Requests/s with `threads` clients sending back to back, cycling through `texts`, for `seconds`."""
    deadline = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        with make_client() as client:
            position = i
            while time.perf_counter() < deadline:
                text = texts[position % len(texts)]
                position += threads
                body = {"model": "instant", "messages": [{"role": "user", "content": text}]}
                client.post("/v1/chat/completions", json=body).raise_for_status()
                counts[i] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.perf_counter() - started)


def local_tokens_per_second(home: Path, concurrency: int, max_tokens: int) -> dict[str, float]:
    """Completion tokens/s of the `local` backend (SmolLM2) with `concurrency` simultaneous requests."""
    from bastion.core.records import Message
    from bastion.core.settings import load_settings
    from bastion.llm import local  # noqa: F401
    from bastion.llm.base import ChatRequest, create_chat_backend

    backend = _LOCAL.get("backend")
    if backend is None:
        backend = create_chat_backend("local", {"max_batch": 8}, load_settings(home=home))
        _LOCAL["backend"] = backend
    prompts = [f"Write a short paragraph about the number {i}." for i in range(concurrency)]

    def one(prompt: str) -> int:
        request = ChatRequest(
            messages=[Message(role="user", content=prompt)], max_tokens=max_tokens, temperature=0, timeout=600
        )
        return backend.generate(request).completion_tokens

    one("warm up")
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, prompts))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
    }


_LOCAL: dict[str, Any] = {}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def warm_cache(home: Path, moderation_model: str) -> None:
    """Child process: load the moderation model once, so that its ONNX graph is built into home's cache
    before the gateway starts (a served gateway finds it there, as every start after the first does)."""
    from bastion.core.settings import load_settings
    from bastion.moderation.service import ModerationService

    service = ModerationService(load_settings(home=home, moderation={"default_model": moderation_model}))
    service.moderate(["warm up"])
    service.close()


def serve(role: str, port: int, home: Path, upstream_url: str, moderation_model: str) -> None:
    """Child process: run the upstream or the gateway on `port` (the gateway writes its key to home/key)."""
    import uvicorn

    if role == "warm":
        warm_cache(home, moderation_model)
        return
    if role == "upstream":
        app: Any = instant_upstream
    else:
        app, key = gateway_app(upstream_url, home, moderation_model)
        (home / "key").write_text(key)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def child_command(
    tree: Path | None, role: str, home: Path, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str] | None]:
    """(command, environment) that runs this benchmark's `--serve role` from `tree` (default: this one),
    with `env` added to the environment."""
    script = Path(__file__).resolve() if tree is None else tree / "benchmarks" / "gateway_overhead.py"
    command = [sys.executable, str(script), "--serve", role, "--home", str(home)]
    if tree is None and not env:
        return command, None
    environment = {**os.environ, **(env or {})}
    if tree is not None:
        environment["PYTHONPATH"] = f"{tree / 'src'}{os.pathsep}{tree}"
    return command, environment


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`NAME=VALUE` strings as a mapping; a pair without a name or `=` is a ValueError naming it."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--other-env takes NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


class Process:
    """This script (or its copy in `tree`) in a child process, serving `role` on a free port until stopped."""

    def __init__(
        self,
        role: str,
        home: Path,
        upstream_url: str = "",
        moderation_model: str = "",
        tree: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command, env = child_command(tree, role, home, extra_env)
        command += ["--port", str(self.port), "--upstream-url", upstream_url]
        command += ["--moderation-model", moderation_model]
        self.process = subprocess.Popen(command, env=env, cwd=tree)

    def __enter__(self) -> Process:
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the benchmark server exited with {self.process.returncode}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def report(results: dict[str, Any], moderation_model: str, n: int) -> None:
    """Print the latency table, the added latency against its targets, and the ratios."""
    d, g = results["direct"], results["gateway"]
    rows = [("direct", d), ("gateway", g)]
    if "other" in results:
        rows.append((results["compare_with"][:10], results["other"]))
    print(f"machine: {results['machine']}; moderation model: {moderation_model}; {n} requests per path")
    print(
        f"every turn is a different text; turns the gateway blocked (false positives): {results['blocked']}"
    )
    print(f"{'':10} {'p50 ms':>9} {'p99 ms':>9} {'req/s (8 threads)':>18}")
    for name, row in rows:
        rate = f"{row['requests_per_s']:18.1f}" if "requests_per_s" in row else f"{'-':>18}"
        print(f"{name:10} {row['p50_ms']:9.2f} {row['p99_ms']:9.2f} {rate}")
    print(
        f"added latency: p50 {results['added_p50_ms']:+.2f} ms (target <= 5), "
        f"p99 {results['added_p99_ms']:+.2f} ms (target <= 20)"
    )
    ratios = (
        f"ratios gateway/direct: p50 x{g['p50_ms'] / d['p50_ms']:.2f}, p99 x{g['p99_ms'] / d['p99_ms']:.2f}"
    )
    if "requests_per_s" in g:
        ratios += f", requests/s x{g['requests_per_s'] / d['requests_per_s']:.2f}"
    print(ratios)
    stages = g.get("stages_p50_ms")
    if stages:
        rest = stages["total"] - stages["moderation"] - stages["upstream"]
        print(
            f"inside the gateway (Server-Timing, p50): moderation {stages['moderation']:.2f} ms (input and "
            f"output), upstream call {stages['upstream']:.2f} ms, the rest of the turn {rest:.2f} ms; "
            f"outside the turn (HTTP, auth, request parsing, threads) {stages['outside']:.2f} ms"
        )
    if "other" in results:
        o = results["other"]
        print(
            f"added latency of {results['compare_with']}: p50 {o['added_p50_ms']:+.2f} ms, "
            f"p99 {o['added_p99_ms']:+.2f} ms; this tree minus it: p50 {g['p50_ms'] - o['p50_ms']:+.2f} ms, "
            f"p99 {g['p99_ms'] - o['p99_ms']:+.2f} ms, mean {g['mean_ms'] - o['mean_ms']:+.2f} ms"
        )


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A checkout of `revision` of this repository in a temporary git worktree, removed afterwards."""
    root = Path(__file__).resolve().parent.parent
    parent = Path(tempfile.mkdtemp(prefix="bastion-compare-"))
    folder = parent / "tree"
    added = subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", "--quiet", str(folder), revision],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if added.returncode != 0:
            raise SystemExit(f"cannot check out {revision!r}: {added.stderr.strip()}")
        yield folder
    finally:
        if added.returncode == 0:
            subprocess.run(
                ["git", "-C", str(root), "worktree", "remove", "--force", str(folder)],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--moderation-model", default="bastion-embedded", help="moderation model in the gateway"
    )
    parser.add_argument("--skip-local", action="store_true", help="do not measure the local backend")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        help="also time a gateway from this git revision ('.': this tree), in the same run",
    )
    parser.add_argument(
        "--other-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the --compare-with gateway only (repeatable)",
    )
    parser.add_argument("--serve", choices=["upstream", "gateway", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        other_env = parse_env(args.other_env)
    except ValueError as exc:
        parser.error(str(exc))
    if other_env and not args.compare_with:
        parser.error("--other-env needs --compare-with")
    if args.serve:
        serve(args.serve, args.port, args.home, args.upstream_url, args.moderation_model)
        return
    n = 60 if args.quick else 400
    seconds = 3.0 if args.quick else 10.0
    max_tokens = 16 if args.quick else 64
    texts = questions(20 + n + 20_000)
    from benchmarks import machine

    results: dict[str, Any] = {
        "machine": f"{machine.cpu_line()}, Python {platform.python_version()}",
        "moderation_model": args.moderation_model,
        "requests": n,
    }
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        trees: dict[str, tuple[Path | None, Path]] = {"gateway": (None, home)}
        envs: dict[str, dict[str, str]] = {"gateway": {}, "other": other_env}
        if args.compare_with:
            other = None if args.compare_with == "." else stack.enter_context(worktree(args.compare_with))
            trees["other"] = (other, home / "other")
            label = "this tree" if other is None else args.compare_with
            results["compare_with"] = label + "".join(f" {k}={v}" for k, v in other_env.items())
        for name, (tree, tree_home) in trees.items():
            tree_home.mkdir(exist_ok=True)
            warm, env = child_command(tree, "warm", tree_home, envs[name])
            subprocess.run(
                [*warm, "--moderation-model", args.moderation_model], check=True, env=env, cwd=tree
            )
        upstream = stack.enter_context(Process("upstream", home))
        gateways = {
            name: stack.enter_context(
                Process("gateway", tree_home, upstream.url, args.moderation_model, tree, envs[name])
            )
            for name, (tree, tree_home) in trees.items()
        }

        def direct_client() -> httpx.Client:
            return httpx.Client(base_url=upstream.url, timeout=30)

        def gateway_client(name: str = "gateway") -> httpx.Client:
            key = (trees[name][1] / "key").read_text()
            return httpx.Client(
                base_url=gateways[name].url, timeout=30, headers={"Authorization": f"Bearer {key}"}
            )

        with ExitStack() as clients_open:
            clients = {"direct": clients_open.enter_context(direct_client())}
            clients.update({name: clients_open.enter_context(gateway_client(name)) for name in gateways})
            shuffle = len(clients) > 2
            latency(clients, texts[:20], shuffle)  # warm-up
            times = latency(clients, texts[20 : 20 + n], shuffle)
        results["blocked"] = times["blocked"]
        for name in clients:
            values = times[name]
            results[name] = {
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "mean_ms": statistics.fmean(values),
            }
        if times["stages"]:
            results["gateway"]["stages_p50_ms"] = {
                stage: statistics.median(row.get(stage, 0.0) for row in times["stages"])
                for stage in ("moderation", "upstream", "total", "outside")
            }
        results["added_p50_ms"] = results["gateway"]["p50_ms"] - results["direct"]["p50_ms"]
        results["added_p99_ms"] = results["gateway"]["p99_ms"] - results["direct"]["p99_ms"]
        if "other" in results:
            results["other"]["added_p50_ms"] = results["other"]["p50_ms"] - results["direct"]["p50_ms"]
            results["other"]["added_p99_ms"] = results["other"]["p99_ms"] - results["direct"]["p99_ms"]
        else:
            fresh = texts[20 + n :]
            results["direct"]["requests_per_s"] = throughput(direct_client, fresh, seconds, 8)
            results["gateway"]["requests_per_s"] = throughput(gateway_client, fresh, seconds, 8)
        if not args.skip_local:
            results["local"] = [local_tokens_per_second(home, c, max_tokens) for c in (1, 8)]
            _LOCAL.pop("backend").close()

    report(results, args.moderation_model, n)
    for row in results.get("local", []):
        print(
            f"local backend, {row['concurrency']} concurrent: {row['tokens']} tokens "
            f"in {row['seconds']:.1f} s = {row['tokens_per_s']:.1f} tokens/s"
        )
    if len(results.get("local", [])) == 2:
        one, eight = results["local"]
        print(f"local batching gain: x{eight['tokens_per_s'] / one['tokens_per_s']:.2f} tokens/s at 8 vs 1")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
