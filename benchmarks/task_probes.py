"""Team-written task requests ('Write a program that...') scored by a Bastion moderation model.

    python benchmarks/task_probes.py                      # the configured default model
    python benchmarks/task_probes.py --heads-path DIR     # a `moderation train --output-dir` folder

Prints how many of the held-out benign probes are flagged and how many harmful ones are caught, and lists
the flagged benign ones. Probes and training candidates: `benchmarks/probes/team_written_tasks.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROBES = Path(__file__).resolve().parent / "probes" / "team_written_tasks.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads-path", type=Path, help="a folder written by `bastion moderation train`")
    args = parser.parse_args()
    from bastion.core.settings import load_settings
    from bastion.moderation.service import ModerationService

    settings = load_settings()
    if args.heads_path is not None:
        for backend in settings.moderation.models[settings.moderation.default_model].backends:
            if backend.plugin == "embedded":
                backend.options = {**backend.options, "heads_path": str(args.heads_path)}
    service = ModerationService(settings)
    probes = json.loads(PROBES.read_text(encoding="utf-8"))["probes"]
    for kind in ("benign", "harmful"):
        texts = probes[kind]
        _, results = service.moderate(texts)
        flagged = [(t, r) for t, r in zip(texts, results, strict=True) if r.flagged]
        verb = "flagged" if kind == "benign" else "caught"
        print(f"{kind} probes {verb}: {len(flagged)}/{len(texts)}")
        if kind == "benign":
            for text, result in flagged:
                categories = ", ".join(k for k, on in result.categories.items() if on)
                print(f"  [{categories}] {text}")
    service.close()


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
