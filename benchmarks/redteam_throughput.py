"""Red-team throughput: attempts/s of a campaign against raw calls to the same target, in one run.

    python benchmarks/redteam_throughput.py             # full run (a few minutes on 2 cores)
    python benchmarks/redteam_throughput.py --quick     # smoke run
    python benchmarks/redteam_throughput.py --json out.json

What is measured, for two targets:

- instant: the `echo` chat backend (answers at once), so the numbers are the framework's own cost: the
  plan, the converter, the managed target (concurrency slots, rate limiter, cache lookup), the scorers,
  the verdict and the database writes (SQLite, WAL).
- local: SmolLM2-135M-Instruct on CPU through the `local` backend (batched), greedy, fixed max_tokens.

For each: raw calls/s (the backend's `generate` called directly from the same number of threads, on the
same prompts), then campaign attempts/s with no scorer and with the `refusal` scorer (the thread engine,
same concurrency, response cache off), after a warm-up campaign; the instant target takes the best
of 3 runs. The ratio is campaign time / raw time (1.0 = no overhead); the
per-attempt overhead is the difference of the mean times per attempt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("BASTION_DATA_DIR", str(REPO.parent / "shared" / "data"))


def raw_calls(backend: Any, prompts: list[str], workers: int, max_tokens: int) -> float:
    """Seconds to answer every prompt by calling the backend directly from `workers` threads."""
    from bastion.core.records import Message
    from bastion.llm.base import ChatRequest

    def one(prompt: str) -> None:
        request = ChatRequest(
            messages=[Message(role="user", content=prompt)], max_tokens=max_tokens, temperature=0.0
        )
        backend.generate(request)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, prompts))
    return time.perf_counter() - started


def campaign_time(
    home: Path, db_dir: Path, target: dict[str, Any], n: int, workers: int, scorers: list[dict[str, Any]]
) -> tuple[float, int]:
    """Seconds for a campaign of `n` AdvBench items (plain), and the attempts stored."""
    from bastion.core.settings import load_settings
    from bastion.db.session import Database
    from bastion.redteam.campaign import CampaignRunner, parse_campaign, run_stats

    settings = load_settings(home=home, database_url=f"sqlite:///{db_dir / f'bench-{time.time_ns()}.db'}")
    db = Database(settings.resolved_database_url)
    db.upgrade()
    spec = parse_campaign(
        {
            "name": "bench",
            "seed": 0,
            "samples": n,
            "target": {**target, "cache": "off", "max_concurrency": workers},
            "probes": [{"name": "advbench"}],
            "scorers": scorers,
            "over_refusal_probe": None,
            "engine": {"name": "thread", "options": {"workers": workers}},
        }
    )
    runner = CampaignRunner(settings, db)
    run_id = runner.create(spec)
    started = time.perf_counter()
    runner.run(run_id)
    elapsed = time.perf_counter() - started
    stored, _ = run_stats(db, run_id)
    db.dispose()
    return elapsed, stored


def advbench_prompts(n: int) -> list[str]:
    """The first `n` AdvBench items of the campaign's seeded draw (the same prompts the campaign sends)."""
    from bastion.core.settings import load_settings
    from bastion.redteam.campaign import parse_campaign, plan

    spec = parse_campaign(
        {
            "samples": n,
            "target": {"type": "chat", "options": {"backend": "echo"}},
            "probes": [{"name": "advbench"}],
            "over_refusal_probe": None,
        }
    )
    return [u.item["text"] for u in plan(spec, load_settings())]


def measure(
    name: str,
    target: dict[str, Any],
    backend: Any,
    n: int,
    workers: int,
    max_tokens: int,
    home: Path,
    db_dir: Path,
    repeats: int = 1,
) -> dict[str, Any]:
    """Raw calls, then campaigns without and with the refusal scorer, on the same prompts."""
    prompts = advbench_prompts(n)
    raw_calls(backend, prompts[: max(2, n // 8)], workers, max_tokens)  # warm-up
    raw = min(raw_calls(backend, prompts, workers, max_tokens) for _ in range(repeats))
    result: dict[str, Any] = {
        "target": name,
        "attempts": n,
        "workers": workers,
        "raw_calls_per_s": round(n / raw, 2),
    }
    campaign_time(home, db_dir, target, max(2, n // 8), workers, [{"name": "refusal"}])  # warm-up
    for label, scorers in (("no_scorer", []), ("refusal_scorer", [{"name": "refusal"}])):
        best = math.inf
        for _ in range(repeats):
            elapsed, stored = campaign_time(home, db_dir, target, n, workers, scorers)
            assert stored == n, f"{stored} attempts stored of {n}"
            best = min(best, elapsed)
        elapsed = best
        result[f"campaign_{label}_attempts_per_s"] = round(n / elapsed, 2)
        result[f"campaign_{label}_ratio"] = round(elapsed / raw, 3)
        result[f"campaign_{label}_overhead_ms_per_attempt"] = round((elapsed - raw) / n * 1000, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="Fewer attempts (smoke run).")
    parser.add_argument("--skip-local", action="store_true", help="Only the instant target.")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()

    from bastion.core.settings import load_settings
    from bastion.llm.base import create_chat_backend

    results: dict[str, Any] = {
        "benchmark": "redteam_throughput",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = load_settings(home=home)
        echo = create_chat_backend("echo", {}, settings)
        n_instant = 100 if args.quick else 500
        results["runs"].append(
            measure(
                "instant (echo)",
                {"type": "chat", "options": {"backend": "echo"}},
                echo,
                n_instant,
                4,
                64,
                home,
                home,
                repeats=3,
            )
        )
        print(json.dumps(results["runs"][-1]), flush=True)
        if not args.skip_local:
            local_home = Path(os.environ.get("BASTION_HOME", "~/.bastion")).expanduser()
            local_settings = load_settings(home=local_home)
            local = create_chat_backend("local", {}, local_settings)
            n_local = 8 if args.quick else 24
            max_tokens = 24
            target = {
                "type": "chat",
                "options": {"backend": "local"},
                "params": {"max_tokens": max_tokens, "temperature": 0.0},
            }
            results["runs"].append(
                measure("local (SmolLM2-135M)", target, local, n_local, 8, max_tokens, local_home, home)
            )
            print(json.dumps(results["runs"][-1]), flush=True)
            local.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
