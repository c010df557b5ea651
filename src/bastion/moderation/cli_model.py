"""`bastion moderation train` and `bastion moderation eval`: the embedded model's training and evaluation."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bastion.core.errors import BastionError
from bastion.core.taxonomy import CATEGORY_KEYS

model_app = typer.Typer(
    name="moderation",
    help="Train and evaluate the embedded moderation model.",
    no_args_is_help=True,
)

console = Console()

WithSource = Annotated[
    list[str] | None,
    typer.Option(
        "--with-source",
        help="Also train on this data source beside the defaults (repeatable), e.g. seed-stance.",
    ),
]


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(1)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """A rich table with one row per category plus `any`."""
    table = Table(title=title)
    for column in ("category", "n", "pos", "AUPRC", "ROC-AUC", "threshold", "precision", "recall", "F1"):
        if column == "category":
            table.add_column(column, no_wrap=True, min_width=22)
        else:
            table.add_column(column, justify="right")
    for key in [*CATEGORY_KEYS, "any"]:
        m = metrics.get(key)
        if m is None:
            continue
        table.add_row(
            key,
            _fmt(m.get("n")),
            _fmt(m.get("positives")),
            _fmt(m.get("auprc")),
            _fmt(m.get("roc_auc")),
            _fmt(m.get("threshold")),
            _fmt(m.get("precision")),
            _fmt(m.get("recall")),
            _fmt(m.get("f1")),
        )
    return table


@model_app.command("train")
def train(
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where to write heads.npz, card.json and MODEL_CARD.md (default: the packaged artefacts)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for sampling, splits and initialisation.")] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the model card as JSON instead of tables.")
    ] = False,
    ngrams: Annotated[
        bool,
        typer.Option(
            "--ngrams",
            help="Also train word and character n-gram heads, blended in for the categories where they "
            "help on source families they never saw (a few more minutes).",
        ),
    ] = False,
    with_source: WithSource = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="Platt scaling on 'validation' (the random validation split) or 'pooled' (those rows "
            "scored by the shipped heads and again by heads that never saw their source)."
        ),
    ] = "validation",
) -> None:
    """Train the embedded backend's heads on the public data sets and report held-out metrics."""
    from bastion.core.settings import load_settings
    from bastion.moderation.datasets import with_sources
    from bastion.moderation.ngrams import NgramSpec
    from bastion.moderation.train import TrainSpec, train_heads

    try:
        settings = load_settings()
        spec = TrainSpec(ngrams=NgramSpec() if ngrams else None, calibration=calibration)
        sources = with_sources(with_source)
        with progress_bar(disabled=json_output) as progress:
            card = train_heads(
                settings, output_dir=output_dir, seed=seed, progress=progress, spec=spec, sources=sources
            )
    except BastionError as exc:
        raise _fail(exc.message) from exc
    if json_output:
        typer.echo(json.dumps(card, indent=1))
        return
    metrics = card["metrics"]
    titles = {
        "source_held_out": "source-held-out (each source family scored by heads trained on the others)",
        "test_sources": "test sources (never trained, calibrated or tuned on)",
        "random_test": "random held-out test split (in-domain)",
    }
    for split, title in titles.items():
        if split in metrics:
            console.print(metrics_table(metrics[split], title))
    ece = card.get("calibration", {}).get("ece", {})
    for split, values in ece.items():
        known = [v for v in values.values() if v is not None]
        if known:
            console.print(f"ECE {split}: mean {_fmt(sum(known) / len(known))}, max {_fmt(max(known))}")
    xs = metrics["xstest_any_harm"]
    console.print(
        f"XSTest any-harm: AUPRC {_fmt(xs['auprc'])}, ROC-AUC {_fmt(xs['roc_auc'])}, "
        f"recall {_fmt(xs['recall'])}, false-positive rate on safe prompts {_fmt(xs['fpr'])}"
    )
    if "functional_tests" in metrics:
        console.print(
            f"functional tests accuracy: {_fmt(metrics['functional_tests']['overall']['accuracy'])}"
        )
    console.print(f"trained in {card['training_seconds']} s; wrote {output_dir or 'packaged artefacts'}")


@contextmanager
def progress_bar(disabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display on stderr, one bar per stage; yields the `progress(stage, done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=disabled,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress


@model_app.command("distill")
def distill(
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Where to write the student encoder (default: the packaged artefacts' encoder/)."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Blocks the student keeps, comma-separated 0-based indices: of the teacher (default "
            "0,2,4), or with --start-from of that encoder (default: all of them).",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=50, help="Passes over the training texts.")] = 1,
    max_texts: Annotated[
        int, typer.Option(min=1, help="Use at most this many training texts (a seeded sample).")
    ] = 16000,
    seed: Annotated[int, typer.Option(help="Random seed for sampling, batches and initialisation.")] = 0,
    learning_rate: Annotated[float, typer.Option(min=1e-7, max=1e-2, help="AdamW learning rate.")] = 1e-4,
    task_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="Weight of the multi-label task loss beside the distillation loss (0: distil only)."
        ),
    ] = 0.0,
    start_from: Annotated[
        Path | None, typer.Option(help="Start from this encoder folder instead of the teacher's layers.")
    ] = None,
    heads_from: Annotated[
        Path | None, typer.Option(help="Heads folder whose logistic heads start the task head.")
    ] = None,
    ffn_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Cut every block's feed-forward layer to this many neurons (the most important) first.",
        ),
    ] = None,
    attention_heads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Cut every block's attention to this many heads (the most important) first.",
        ),
    ] = None,
    context_mix: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=4.0,
            help="With --task-weight: extra examples per text, each a text placed after benign ones.",
        ),
    ] = 0.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's record as JSON.")] = False,
    with_source: WithSource = None,
) -> None:
    """Distil a smaller encoder from MiniLM (then run `bastion moderation train` to fit heads on it)."""
    from bastion.core.settings import load_settings
    from bastion.moderation.datasets import with_sources
    from bastion.moderation.distill import DistillSpec, distill_encoder
    from bastion.moderation.train import default_artifacts_dir

    try:
        kept = None if layers is None else tuple(int(part) for part in layers.split(",") if part.strip())
    except ValueError as exc:
        raise _fail(f"--layers must be comma-separated integers, got {layers!r}") from exc
    target = output_dir or default_artifacts_dir() / "encoder"
    try:
        settings = load_settings()
        spec = DistillSpec(
            layers=kept,
            epochs=epochs,
            max_texts=max_texts,
            learning_rate=learning_rate,
            task_weight=task_weight,
            start_from=str(start_from) if start_from else None,
            heads_from=str(heads_from) if heads_from else None,
            ffn_size=ffn_size,
            attention_heads=attention_heads,
            context_mix=context_mix,
        )
        with progress_bar(disabled=json_output) as progress:
            record = distill_encoder(
                settings,
                target,
                spec=spec,
                seed=seed,
                sources=with_sources(with_source),
                progress=progress,
            )
    except BastionError as exc:
        raise _fail(exc.message) from exc
    if json_output:
        typer.echo(json.dumps(record, indent=1))
        return
    console.print(
        f"student with {record['num_layers']} layers distilled on {record['texts']} texts in "
        f"{record['training_seconds']} s (loss per epoch {record['loss_per_epoch']}); wrote {target}"
    )


def _score_texts(texts: list[str], model: str | None) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Scores and thresholds through `ModerationService` when it exists, else the embedded backend alone."""
    from bastion.core.settings import BackendSpec, load_settings

    settings = load_settings()
    try:
        from bastion.moderation.service import ModerationService
    except ImportError:
        ModerationService = None  # type: ignore[assignment,misc]
    if ModerationService is not None and hasattr(ModerationService, "model"):
        service = ModerationService(settings)
        try:
            loaded = service.model(model)
            results = loaded.moderate(texts)
            return [dict(r.category_scores) for r in results], dict(loaded.thresholds)
        finally:
            service.close()
    if model not in (None, "default", "embedded", "bastion-embedded"):
        raise BastionError(f"model {model!r} needs the moderation service, which is not available")
    from bastion.moderation.backends.base import create_backend

    backend = create_backend(BackendSpec(plugin="embedded"), settings)
    try:
        return [r.scores for r in backend.score(texts)], backend.default_thresholds
    finally:
        backend.close()


@model_app.command("eval")
def eval_command(
    data: Annotated[
        Path, typer.Option(help='JSONL file of {"text": ..., "labels": {category: 0|1}} rows.', exists=False)
    ],
    model: Annotated[
        str | None, typer.Option(help="Moderation model name (default: the default model).")
    ] = None,
    json_path: Annotated[
        str | None,
        typer.Option("--json", help="Write the metrics as JSON to this path ('-' prints them to stdout)."),
    ] = None,
) -> None:
    """Score a labelled JSONL file and print AUPRC, ROC-AUC and P/R/F1 at the model's thresholds."""
    from bastion.moderation.evaluate import evaluate, load_eval_rows

    try:
        texts, labels = load_eval_rows(data)
        if not texts:
            raise _fail(f"{data} holds no rows")
        scores, thresholds = _score_texts(texts, model)
        metrics = evaluate(scores, labels, thresholds)
    except BastionError as exc:
        raise _fail(exc.message) from exc
    if json_path == "-":
        typer.echo(json.dumps(metrics, indent=1))
        return
    console.print(metrics_table(metrics, f"{data.name}: {len(texts)} texts"))
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {json_path}: {exc.strerror or exc}") from exc
        console.print(f"wrote {json_path}")


@model_app.command("card")
def card_command(
    model: Annotated[
        str | None, typer.Option(help="Moderation model name (default: the default model).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the cards as JSON, as the API's /card route returns them.")
    ] = False,
) -> None:
    """Print the model card: data, held-out metrics per category and language, thresholds, known limits."""
    from bastion.core.settings import load_settings
    from bastion.moderation.card import model_cards
    from bastion.moderation.service import ModerationService

    service = ModerationService(load_settings())
    try:
        loaded = service.model(model)
        cards = model_cards(loaded.backends)
    except BastionError as exc:
        raise _fail(exc.message) from exc
    finally:
        service.close()
    if as_json:
        typer.echo(json.dumps({"model": loaded.name, "backends": cards}, indent=1, ensure_ascii=False))
        return
    rendered = [c for c in cards if c["markdown"]]
    if not rendered:
        backends = ", ".join(c["backend"] for c in cards)
        raise _fail(f"model {loaded.name!r} has no model card (its backends: {backends})")
    for entry in rendered:
        typer.echo(entry["markdown"])


@model_app.command("profanity-card")
def profanity_card_command(
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write the card (default: the packaged artifacts/profanity.json)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the row sampling (as in `train`).")] = 0,
) -> None:
    """Choose the `profanity` backend's thresholds on the training sources and write its card."""
    from importlib import resources

    from bastion.core.settings import load_settings
    from bastion.moderation.backends.profanity import CARD, card_markdown, fit_card

    try:
        card = fit_card(load_settings(), seed=seed)
    except BastionError as exc:
        raise _fail(exc.message) from exc
    target = output or Path(str(resources.files("bastion.moderation") / "artifacts" / CARD))
    try:
        target.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {target}: {exc.strerror or exc}") from exc
    typer.echo(card_markdown(card))
    console.print(f"wrote {target}")
