"""Moderation speed: Bastion's default model against two baselines, in one run: the previous shipped
model (`benchmarks/baselines/embedded_v6`: the same architecture after one pass on all training texts, its own
heads, same int8 ONNX path; `embedded_v4` has twice the feed-forward width) and `alt-profanity-check`.

    python benchmarks/moderation_throughput.py            # full run (a few minutes on 2 cores)
    python benchmarks/moderation_throughput.py --quick    # smoke run (well under a minute)
    python benchmarks/moderation_throughput.py --json out.json

What is measured, for each system, on the same synthetic texts (`benchmarks/texts.py`, ~20 and ~200
words, generated deterministically):

- throughput, texts/s, at batch sizes 1, 32 and 128 on short and on long texts: whole batches are
  scored back to back, different texts each time, until both a minimum time and a minimum number of
  batches are reached; a warm-up call (up to 16 texts) per configuration is not counted;
- latency of one text per call (p50, p99), after a warm-up;
- peak resident memory: each system is loaded in a fresh subprocess (same interpreter) that imports
  it, scores a batch of 128 long and 128 short texts, and reports its peak RSS (Linux `VmHWM`: the
  whole process, i.e. interpreter, libraries, model and activations; not `ru_maxrss`, which Linux
  carries over from the parent across fork and exec) and the same minus the RSS the bare worker had
  before importing the system ("above bare").

Throughput and latency of every system are measured in this one process, in rounds: each round measures
every system once (in a rotated order), and each figure is the median over the rounds (latency
percentiles over the samples of all rounds). A shared machine's speed drifts by up to half within
minutes; rounds spread that drift over all systems, so the ratios hold better than the raw figures.
Each system runs with its default threading (the ONNX path: 1 intra-op thread and min(2, CPUs)
workers; torch: every core; the baseline's linear model is single-threaded). Bastion's score cache is
turned off for all speed figures (the pools repeat, and hits would flatter it); one extra row times a
cache hit.
Besides wall-clock texts/s, texts per CPU-second of this process are reported: on a shared machine wall
time swings with other load, CPU time much less. The load average is printed beside the table.
Ratios are Bastion / other: above 1 means Bastion is faster for texts/s, slower for latency, and
heavier for memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.machine import cpu_line, cpu_summary
from benchmarks.texts import long_texts, short_texts

Scorer = Callable[[Sequence[str]], Any]
SYSTEMS = ("bastion", "previous", "baseline")
PREVIOUS_HEADS = Path(__file__).resolve().parent / "baselines" / "embedded_v6"
BASTION_SYSTEMS: dict[str, dict[str, Any]] = {
    "bastion": {"cache_size": 0},
    "previous": {"heads_path": str(PREVIOUS_HEADS), "cache_size": 0},
}
BATCHES = (1, 32, 128)
MEMORY_METHOD = (
    "peak RSS (Linux VmHWM) of a fresh subprocess per system, after scoring 128 long and 128 short texts"
)


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs."""

    min_seconds: float
    min_batches: int
    latency_short: int
    latency_long: int
    pool: int
    rounds: int

    @classmethod
    def for_run(cls, quick: bool) -> Budget:
        if quick:
            return cls(min_seconds=0.4, min_batches=1, latency_short=30, latency_long=10, pool=256, rounds=1)
        return cls(min_seconds=1.0, min_batches=2, latency_short=70, latency_long=20, pool=768, rounds=3)


def load_system(system: str, model: str | None) -> tuple[Scorer, str]:
    """A scoring function for `system` and the name of what it runs."""
    if system in BASTION_SYSTEMS:
        from bastion.core.settings import load_settings
        from bastion.moderation.service import ModerationService

        settings = load_settings()
        name = settings.moderation.resolve(model) or settings.moderation.default_model
        for backend in settings.moderation.models[name].backends:
            if backend.plugin == "embedded":
                backend.options = {**backend.options, **BASTION_SYSTEMS[system]}
        service = ModerationService(settings)
        loaded = service.model(model)
        runtimes = [getattr(b, "runtime", None) for b in loaded.backends]
        graph = next((b.graph for b in loaded.backends if getattr(b, "graph", None) is not None), None)
        label = f"{loaded.name} ({'/'.join(r for r in runtimes if r)}"
        label += f", {'int8' if graph.quantized else 'fp32'})" if graph is not None else ")"
        return loaded.moderate, label
    if system == "baseline":
        try:
            from profanity_check import predict_prob
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise SystemExit("the baseline needs `pip install alt-profanity-check`") from exc
        return predict_prob, "alt-profanity-check"
    raise SystemExit(f"unknown system {system!r}; expected one of {SYSTEMS}")


def throughput(score: Scorer, pool: Sequence[str], batch: int, budget: Budget) -> float:
    """Texts per second scoring `batch` texts per call, cycling through `pool`."""
    position = 0

    def next_batch() -> list[str]:
        nonlocal position
        chunk = [pool[(position + i) % len(pool)] for i in range(batch)]
        position += batch
        return chunk

    score(next_batch()[:16])  # warm-up (a slice: enough to warm the code path, cheap for big batches)
    done = 0
    calls = 0
    started = time.perf_counter()
    elapsed = 0.0
    while calls < budget.min_batches or elapsed < budget.min_seconds:
        score(next_batch())
        done += batch
        calls += 1
        elapsed = time.perf_counter() - started
    return done / elapsed


def latency(score: Scorer, pool: Sequence[str], n: int, start: int = 0) -> list[float]:
    """Milliseconds for each of `n` calls of one text, from `pool[start]` on (after a warm-up)."""
    for text in pool[:5]:
        score([text])
    times = []
    for i in range(n):
        text = pool[(start + i + 5) % len(pool)]
        started = time.perf_counter()
        score([text])
        times.append((time.perf_counter() - started) * 1000)
    return times


def current_rss_mb() -> float:
    """Resident memory of this process now, from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process image.

    On Linux this is `VmHWM` from /proc/self/status: the high-water mark of this address space, which
    starts afresh at exec. `ru_maxrss` is not used there because Linux carries it across fork and exec,
    so a worker would report its parent's size when that was larger. Elsewhere `ru_maxrss` is the
    fallback (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def memory_worker(system: str, model: str | None) -> dict[str, float]:
    """Run in a fresh subprocess: load `system`, score a batch, report peak and bare RSS."""
    bare = current_rss_mb()
    score, _name = load_system(system, model)
    score(long_texts(128, seed=7))
    score(short_texts(128, seed=7))
    peak = peak_rss_mb()
    return {
        "peak_rss_mb": peak,
        "bare_rss_mb": bare,
        "above_bare_mb": peak - bare,
        "torch_imported": float("torch" in sys.modules),
    }


def measure_memory(system: str, model: str | None) -> dict[str, float]:
    """`memory_worker` in a subprocess of the same interpreter; its JSON is the last line it prints."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", system]
    if model:
        command += ["--model", model]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"memory worker for {system} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_round(
    system: str,
    score: Scorer,
    pools: dict[str, list[str]],
    budget: Budget,
    rnd: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One round of every speed figure for one system: texts/s and texts per CPU-second per configuration,
    and the latency samples per text length."""
    figures: dict[str, Any] = {"texts_per_s": {}, "texts_per_cpu_s": {}, "latency_samples": {}}
    for length, pool in pools.items():
        for batch in BATCHES:
            cpu = time.process_time()
            wall = time.perf_counter()
            rate = throughput(score, pool, batch, budget)
            share = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
            figures["texts_per_s"][f"{length}/b{batch}"] = rate
            figures["texts_per_cpu_s"][f"{length}/b{batch}"] = rate / max(share, 1e-9)
            log(
                f"  round {rnd + 1} {system:8s} {length:5s} batch {batch:3d}: {rate:9.1f} texts/s "
                f"({rate / share:9.1f}/cpu-s)"
            )
    for length, n in (("short", budget.latency_short), ("long", budget.latency_long)):
        times = latency(score, pools[length], n, start=rnd * n)
        figures["latency_samples"][length] = times
        log(f"  round {rnd + 1} {system:8s} {length:5s} latency: p50 {np.percentile(times, 50):.2f} ms")
    return figures


def combine_rounds(name: str, load_s: float, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A system's figures over its rounds: the median of each rate, latency percentiles over all samples,
    and the texts/s of every round (`texts_per_s_rounds`) to show the spread."""
    keys = list(rounds[0]["texts_per_s"])
    out: dict[str, Any] = {"name": name, "load_s": load_s, "rounds": len(rounds)}
    for field in ("texts_per_s", "texts_per_cpu_s"):
        out[field] = {k: float(np.median([r[field][k] for r in rounds])) for k in keys}
    out["texts_per_s_rounds"] = {k: [r["texts_per_s"][k] for r in rounds] for k in keys}
    out["latency_ms"] = {}
    for length in rounds[0]["latency_samples"]:
        samples = [t for r in rounds for t in r["latency_samples"][length]]
        out["latency_ms"][length] = {
            "p50": float(np.percentile(samples, 50)),
            "p99": float(np.percentile(samples, 99)),
            "samples": len(samples),
        }
    return out


def measure_all(model: str | None, budget: Budget, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every system loaded once, then `budget.rounds` rounds, each measuring every system in turn (the
    order rotated from round to round); the figures combined per system."""
    loaded: dict[str, tuple[Scorer, str, float]] = {}
    for system in SYSTEMS:
        started = time.perf_counter()
        score, name = load_system(system, model)
        loaded[system] = (score, name, time.perf_counter() - started)
    pools = {"short": short_texts(budget.pool), "long": long_texts(budget.pool // 2)}
    per_round: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
    for rnd in range(budget.rounds):
        order = SYSTEMS[rnd % len(SYSTEMS) :] + SYSTEMS[: rnd % len(SYSTEMS)]
        log(f"round {rnd + 1} of {budget.rounds}: {', '.join(order)}")
        for system in order:
            per_round[system].append(measure_round(system, loaded[system][0], pools, budget, rnd, log))
    return {
        system: combine_rounds(loaded[system][1], loaded[system][2], per_round[system]) for system in SYSTEMS
    }


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, list[float]]]:
    """(metric, [value per system in SYSTEMS order]) for the table."""
    systems = [results[name] for name in SYSTEMS]
    table: list[tuple[str, list[float]]] = []
    for key in systems[0]["texts_per_s"]:
        length, batch = key.split("/b")
        table.append((f"{length:5s} batch {batch:>3s}  texts/s", [r["texts_per_s"][key] for r in systems]))
    for key in systems[0]["texts_per_s"]:
        length, batch = key.split("/b")
        table.append((f"{length:5s} batch {batch:>3s}  /cpu-s", [r["texts_per_cpu_s"][key] for r in systems]))
    for length in ("short", "long"):
        for pct in ("p50", "p99"):
            table.append((f"{length:5s} 1 text    {pct} ms", [r["latency_ms"][length][pct] for r in systems]))
    if "cache_hit_ms" in results["bastion"]:
        hit = results["bastion"]["cache_hit_ms"]
        table.append(("short 1 text cache hit ms", [hit, float("nan"), float("nan")]))
    table.append(("peak RSS, MB", [r["memory"]["peak_rss_mb"] for r in systems]))
    table.append(("peak RSS above bare, MB", [r["memory"]["above_bare_mb"] for r in systems]))
    table.append(("load time, s", [r["load_s"] for r in systems]))
    return table


def render(results: dict[str, dict[str, Any]]) -> str:
    """The comparison table as text."""
    names = "; ".join(f"{name} = {results[name]['name']}" for name in SYSTEMS)
    head = (
        f"{'metric':28s} {'bastion':>10s} {'previous':>10s} {'baseline':>10s} {'vs prev':>9s} {'vs base':>9s}"
    )
    rounds = results["bastion"].get("rounds", 1)
    lines = [names, "ratios = bastion / previous, bastion / baseline", head, "-" * len(head)]
    if rounds > 1:
        lines.insert(1, f"texts/s: median of {rounds} rounds; latency: percentiles of all rounds' samples")
    for metric, (ours, prev, base) in rows(results):
        r_prev = ours / prev if prev else float("inf")
        r_base = ours / base if base else float("inf")
        lines.append(f"{metric:28s} {ours:10.2f} {prev:10.2f} {base:10.2f} {r_prev:8.3g}x {r_base:8.3g}x")
    if rounds > 1:
        lines.append("texts/s in each round (short texts, batch 128):")
        for name in SYSTEMS:
            each = results[name]["texts_per_s_rounds"]["short/b128"]
            lines.append(f"  {name:9s} " + ", ".join(f"{rate:.0f}" for rate in each))
    return "\n".join(lines)


def cache_hit_ms(model: str | None) -> float:
    """Median milliseconds for one short text already in Bastion's score cache (default options)."""
    from bastion.core.settings import load_settings
    from bastion.moderation.service import ModerationService

    loaded = ModerationService(load_settings()).model(model)
    text = short_texts(1, seed=11)[0]
    loaded.moderate([text])
    times = []
    for _ in range(200):
        started = time.perf_counter()
        loaded.moderate([text])
        times.append((time.perf_counter() - started) * 1000)
    loaded.close()
    return float(np.percentile(times, 50))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--model", help="Bastion moderation model (default: the configured default)")
    parser.add_argument("--memory-worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.model)))
        return 0

    budget = Budget.for_run(args.quick)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results = measure_all(args.model, budget, log)
    results["bastion"]["cache_hit_ms"] = cache_hit_ms(args.model)
    for system in SYSTEMS:
        log(f"{system}: peak memory (subprocess)")
        results[system]["memory"] = measure_memory(system, args.model)
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        import torch

        torch_threads: int | None = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        torch_threads = None
    report = {
        "benchmark": "moderation_throughput",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch_threads,
            "load_average": load_average,
            "cpu": cpu_summary(),
        },
        "text_words": {"short": 20, "long": 200},
        "memory_method": MEMORY_METHOD,
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    print(render(results))
    print(f"(cpu: {cpu_line(report['machine']['cpu'])})")
    print(
        f"(wall time {report['wall_s']:.0f} s; {os.cpu_count()} CPUs; torch threads {torch_threads}; "
        f"load average {load_average}; torch imported by the bastion worker: "
        f"{bool(results['bastion']['memory']['torch_imported'])})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
