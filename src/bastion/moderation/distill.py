"""A smaller encoder for the embedded model: a few of MiniLM's layers, taught to reproduce its embeddings.

The student starts as the teacher with only `layers` kept (the embeddings and those transformer blocks),
or as an earlier student (`start_from`; `layers` then names which of its own blocks to keep), then learns
to give the same L2-normalised mean-pooled sentence embedding as the teacher (loss: 1 − cosine) on the
training rows of `bastion moderation train` (test sources are never seen). The heads are then
trained on the student's embeddings as usual. Half the layers is about half the compute per text, which is
what the int8 graph spends its time on. With `ffn_size`, every block's feed-forward layer is first cut to
its most important neurons (mean absolute activation on the training texts times output-weight norm), and
the training that follows lets the rest make up for them. The result is a transformers folder (weights stored
in fp16, loaded as fp32) with the teacher's tokenizer files, ready to be `artifacts/embedded/encoder/`.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError
from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS
from bastion.moderation.datasets import LabeledText, load_all
from bastion.moderation.encoder import HEADS_KEPT, load_transformer, pad_batch, shrink_attention
from bastion.moderation.heads import HeadParams
from bastion.moderation.train import (
    EmbeddingCache,
    TrainSpec,
    embed_texts,
    is_benign,
    is_test_source,
    label_arrays,
    select_rows,
)

Progress = Callable[[str, int, int], None]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
)


@dataclass
class DistillSpec:
    """Everything that decides the student (recorded in `distill.json` beside its weights)."""

    layers: tuple[int, ...] | None = None
    """Blocks kept: of the teacher (default `TEACHER_LAYERS`), or of `start_from` (default: all)."""
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.05
    max_length: int = 128
    max_texts: int | None = 16000
    task_weight: float = 0.0
    start_from: str | None = None
    heads_from: str | None = None
    ffn_size: int | None = None
    ffn_importance_texts: int = 2000
    attention_heads: int | None = None
    """Cut every attention block to its this many most important heads first (importance measured on
    `ffn_importance_texts` texts, as for `ffn_size`)."""
    context_mix: float = 0.0
    """With the task loss: this many extra examples per training text, each a training text placed after
    1-3 benign ones (`train.is_benign`; cut to fit `max_length` tokens) and keeping its labels, so that one
    harmful sentence in benign context still reads as harmful (task loss only: no teacher target)."""


TEACHER_LAYERS = (0, 2, 4)
"""The teacher's blocks a student keeps when neither `layers` nor `start_from` says otherwise."""


def keep_layers(model: Any, layers: Sequence[int]) -> Any:
    """`model` with only `layers` kept (0-based indices of its transformer blocks, in the order given)."""
    import torch

    blocks = model.encoder.layer
    if not layers or any(i < 0 or i >= len(blocks) for i in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"layers must be distinct indices in 0..{len(blocks) - 1}, got {list(layers)}")
    model.encoder.layer = torch.nn.ModuleList([blocks[i] for i in layers])
    model.config.num_hidden_layers = len(layers)
    return model


def student_from(teacher_path: Path, layers: Sequence[int]) -> Any:
    """The teacher model with only `layers` kept (0-based indices of its transformer blocks)."""
    import transformers

    model = transformers.AutoModel.from_pretrained(str(teacher_path), local_files_only=True)
    return keep_layers(model, layers).float()


def _hooked_passes(
    model: Any,
    modules: Sequence[Any],
    hook: Callable[[int], Callable[..., None]],
    batches: Sequence[tuple[Any, Any]],
    current: dict[str, Any],
) -> int:
    """Run `batches` ((input_ids, attention_mask) pairs) through `model` in eval mode without gradients,
    with `hook(i)` on `modules[i]` and the batch's mask in `current["mask"]`; returns the real tokens."""
    import torch

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(modules)]
    was_training = model.training
    model.eval()
    tokens = 0
    try:
        with torch.no_grad():
            for ids, mask in batches:
                current["mask"] = mask.to(torch.float32)
                tokens += int(mask.sum())
                model(input_ids=ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return tokens


def ffn_importance(model: Any, batches: Sequence[tuple[Any, Any]]) -> list[Any]:
    """Per transformer block, each feed-forward neuron's importance: its mean absolute activation over
    the real tokens of `batches` ((input_ids, attention_mask) pairs) times the norm of its output weights,
    i.e. how much it adds to the block's output on such text."""
    import torch

    blocks = model.encoder.layer
    totals = [torch.zeros(int(block.intermediate.dense.out_features)) for block in blocks]
    current: dict[str, Any] = {}

    def hook(index: int) -> Callable[..., None]:
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            totals[index] += (output.abs() * current["mask"].unsqueeze(-1)).sum((0, 1))

        return record

    tokens = _hooked_passes(model, [block.intermediate for block in blocks], hook, batches, current)
    return [
        total / max(tokens, 1) * block.output.dense.weight.detach().norm(dim=0)
        for total, block in zip(totals, blocks, strict=True)
    ]


def prune_ffn(model: Any, size: int, importance: Sequence[Any]) -> Any:
    """`model` with every block's feed-forward layer cut to its `size` most important neurons (in their
    original order); about 2/3 of a block's weights, so of its compute per token, are feed-forward."""
    import torch

    blocks = model.encoder.layer
    current = int(model.config.intermediate_size)
    if not 1 <= size <= current:
        raise ConfigError(f"the feed-forward size must be in 1..{current}, got {size}")
    for block, scores in zip(blocks, importance, strict=True):
        keep = torch.sort(torch.topk(scores, size).indices).values
        up, down = block.intermediate.dense, block.output.dense
        new_up = torch.nn.Linear(up.in_features, size)
        new_down = torch.nn.Linear(size, down.out_features)
        with torch.no_grad():
            new_up.weight.copy_(up.weight[keep])
            new_up.bias.copy_(up.bias[keep])
            new_down.weight.copy_(down.weight[:, keep])
            new_down.bias.copy_(down.bias)
        block.intermediate.dense, block.output.dense = new_up, new_down
    model.config.intermediate_size = size
    return model


def head_importance(model: Any, batches: Sequence[tuple[Any, Any]]) -> list[Any]:
    """Per transformer block, each attention head's importance: the mean norm, over the real tokens of
    `batches`, of what the head adds to the block's output (its context vector through its slice of the
    output projection)."""
    import torch

    blocks = model.encoder.layer
    heads = int(model.config.num_attention_heads)
    head_size = int(model.config.hidden_size) // heads
    totals = [torch.zeros(block.attention.self.query.out_features // head_size) for block in blocks]
    current: dict[str, Any] = {}

    def hook(index: int) -> Callable[..., None]:
        weight = blocks[index].attention.output.dense.weight.detach()  # [hidden, heads * head_size]

        def record(_module: Any, _inputs: Any, output: Any) -> None:
            context = output[0] if isinstance(output, tuple) else output  # [batch, tokens, heads * size]
            mask = current["mask"]
            for h in range(totals[index].numel()):
                part = slice(h * head_size, (h + 1) * head_size)
                added = (context[..., part] @ weight[:, part].T).norm(dim=-1)
                totals[index][h] += (added * mask).sum()

        return record

    tokens = _hooked_passes(model, [block.attention.self for block in blocks], hook, batches, current)
    return [total / max(tokens, 1) for total in totals]


def prune_heads(model: Any, heads: int, importance: Sequence[Any]) -> Any:
    """`model` with every attention block cut to its `heads` most important heads (in their original
    order): the query, key and value projections and the output projection's inputs shrink with them."""
    import torch

    config = model.config
    head_size = int(config.hidden_size) // int(config.num_attention_heads)
    current = int(model.encoder.layer[0].attention.self.query.out_features) // head_size
    if not 1 <= heads <= current:
        raise ConfigError(f"the number of attention heads must be in 1..{current}, got {heads}")
    names = ("query", "key", "value")
    blocks = model.encoder.layer
    old = [({n: getattr(b.attention.self, n) for n in names}, b.attention.output.dense) for b in blocks]
    shrink_attention(model, heads)
    for (projections, out_old), block, scores in zip(old, model.encoder.layer, importance, strict=True):
        keep = torch.sort(torch.topk(scores, heads).indices).values
        rows = torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in keep.tolist()])
        with torch.no_grad():
            for name in names:
                source, target = projections[name], getattr(block.attention.self, name)
                target.weight.copy_(source.weight[rows])
                target.bias.copy_(source.bias[rows])
            block.attention.output.dense.weight.copy_(out_old.weight[:, rows])
            block.attention.output.dense.bias.copy_(out_old.bias)
    return model


def context_mixes(
    encoded: Sequence[Sequence[int]], benign: Sequence[int], count: int, max_length: int, rng: random.Random
) -> list[tuple[list[int], int]]:
    """`count` (token ids, index of the inner text) pairs: a random text's tokens after those of 1-3
    random benign texts, the context cut so that the whole fits `max_length` with [CLS] and [SEP]."""
    out: list[tuple[list[int], int]] = []
    if not benign or not encoded:
        return out
    for _ in range(count):
        inner = rng.randrange(len(encoded))
        body = list(encoded[inner][1:-1])[: max_length - 3]
        context = [
            t for b in rng.sample(list(benign), min(len(benign), rng.randint(1, 3))) for t in encoded[b][1:-1]
        ]
        room = max_length - 2 - len(body)  # at least 1: the body was cut to max_length - 3
        out.append(([encoded[inner][0], *context[-room:], *body, encoded[inner][-1]], inner))
    return out


def _padded(encoded: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """`encoder.pad_batch` as torch tensors."""
    import torch

    ids, mask = pad_batch(encoded, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _load_student(path: Path) -> Any:
    try:
        return load_transformer(path).float()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the encoder to start from at {path}: {exc}") from exc


def pooled(model: Any, ids: Any, mask: Any) -> Any:
    """L2-normalised mean-pooled last hidden states (the sentence embedding MiniLM serves)."""
    import torch

    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def pass_texts(
    rows: Sequence[LabeledText],
    train_spec: TrainSpec,
    seed: int,
    max_texts: int | None,
    rng: random.Random | None = None,
) -> dict[str, LabeledText]:
    """The texts a distillation pass with `seed` trains on, in its order, each with its row: the training
    rows `select_rows` picks (test sources left out), cut to `max_train_chars` (the first row kept per
    text), shuffled by `rng` (default: a fresh one seeded with `seed`, as the pass's own is at this point),
    the first `max_texts`."""
    chosen = [
        r
        for r in select_rows(rows, train_spec, random.Random(seed))
        if not is_test_source(r.source, train_spec)
    ]
    by_text: dict[str, LabeledText] = {}
    for r in chosen:
        by_text.setdefault(r.text[: train_spec.max_train_chars], r)
    texts = sorted(by_text)
    (rng or random.Random(seed)).shuffle(texts)
    if max_texts is not None:
        texts = texts[:max_texts]
    return {text: by_text[text] for text in texts}


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def distill_encoder(
    settings: Settings,
    output_dir: Path,
    *,
    spec: DistillSpec | None = None,
    train_spec: TrainSpec | None = None,
    seed: int = 0,
    teacher_path: Path | None = None,
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a student encoder into `output_dir`; returns its record (spec, losses, timing)."""
    import torch

    from bastion.moderation.encoder import Encoder, model_fingerprint, resolve_model_path, sanitize

    spec = spec or DistillSpec()
    if spec.context_mix > 0 and spec.task_weight <= 0:  # before any data is loaded or embedded
        raise ConfigError("context_mix needs the task loss (task_weight > 0)")
    train_spec = train_spec or TrainSpec()
    started = time.monotonic()
    rng = random.Random(seed)
    torch.manual_seed(seed)

    def step(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(name, done, total)

    teacher_dir = resolve_model_path(teacher_path)
    teacher = Encoder(teacher_dir)
    by_text = pass_texts(load_all(settings.data_dir, sources).rows, train_spec, seed, spec.max_texts, rng)
    texts = list(by_text)
    if not texts:
        raise ConfigError(f"no training texts found under {settings.data_dir}")
    cache = EmbeddingCache(settings.cache_dir("embeddings", teacher.fingerprint[:16]))
    targets = torch.from_numpy(embed_texts(teacher, texts, cache, step))

    windows = teacher.tokenizer.windows([sanitize(t) for t in texts])
    first: dict[int, list[int]] = {}
    for owner, ids_ in zip(windows.text_index.tolist(), windows.ids, strict=True):
        first.setdefault(owner, ids_)
    # The first window of each text, cut to max_length tokens keeping the closing [SEP].
    encoded = [
        first[i] if len(first[i]) <= spec.max_length else [*first[i][: spec.max_length - 1], first[i][-1]]
        for i in range(len(texts))
    ]
    pad_id = teacher.tokenizer.pad_id
    if spec.start_from:
        student = _load_student(Path(spec.start_from))
        if spec.layers is not None:
            student = keep_layers(student, spec.layers)
    else:
        layers = spec.layers or TEACHER_LAYERS
        spec = replace(spec, layers=layers)
        student = student_from(teacher_dir, layers)
    pruned_from = heads_from = None
    if spec.ffn_size is not None or spec.attention_heads is not None:
        sample = sorted(range(min(len(encoded), spec.ffn_importance_texts)), key=lambda i: len(encoded[i]))
        batches = [
            _padded([encoded[i] for i in sample[k : k + spec.batch_size]], pad_id)
            for k in range(0, len(sample), spec.batch_size)
        ]
        step("prune", 0, 1)
        if spec.attention_heads is not None:
            heads_from = int(getattr(student.config, HEADS_KEPT, None) or student.config.num_attention_heads)
            student = prune_heads(student, spec.attention_heads, head_importance(student, batches))
        if spec.ffn_size is not None:
            pruned_from = int(student.config.intermediate_size)
            student = prune_ffn(student, spec.ffn_size, ffn_importance(student, batches))
        step("prune", 1, 1)
    student.train()
    params = list(student.parameters())
    head = None
    if spec.task_weight > 0:
        # Multi-label task loss through a linear head (started from trained heads when given), masked
        # where a source is silent: the encoder learns the categories while the distillation term keeps
        # it near the teacher.
        head = torch.nn.Linear(int(student.config.hidden_size), len(CATEGORY_KEYS))
        if spec.heads_from:
            init = HeadParams.load(Path(spec.heads_from) / "heads.npz")
            if init.hidden_weight is not None:
                raise ConfigError("task fine-tuning starts from logistic heads only")
            with torch.no_grad():
                head.weight.copy_(torch.from_numpy(init.weight))
                head.bias.copy_(torch.from_numpy(init.bias))
        params += list(head.parameters())
        y_np, m_np = label_arrays([by_text[t] for t in texts])
        labels, known = torch.from_numpy(y_np), torch.from_numpy(m_np)
    mixes: list[tuple[list[int], int]] = []
    if spec.context_mix > 0:
        benign = [i for i, t in enumerate(texts) if is_benign(by_text[t])]
        count = int(len(texts) * spec.context_mix)
        mixes = context_mixes(encoded, benign, count, spec.max_length, random.Random(f"mix-{seed}"))
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.01)
    plan = [_batches([len(e) for e in encoded], spec.batch_size, rng) for _ in range(spec.epochs)]
    total = sum(len(p) for p in plan)
    warmup = max(1, int(total * spec.warmup_fraction))

    def schedule(i: int) -> float:
        return min(1.0, (i + 1) / warmup) * max(0.0, (total - i) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    losses: list[float] = []
    done = 0
    for epoch_batches in plan:
        epoch_loss = 0.0
        for batch in epoch_batches:
            ids, mask = _padded([encoded[i] for i in batch], pad_id)
            out = pooled(student, ids, mask)
            loss = (1.0 - (out * targets[batch]).sum(1)).mean()
            if head is not None:
                bce = torch.nn.functional.binary_cross_entropy_with_logits(
                    head(out), labels[batch], weight=known[batch], reduction="sum"
                ) / known[batch].sum().clamp(min=1.0)
                loss = loss + spec.task_weight * bce
                if mixes:
                    share = max(1, round(len(batch) * spec.context_mix))
                    picked = [mixes[(done * share + k) % len(mixes)] for k in range(share)]
                    mix_ids, mix_mask = _padded([ids_ for ids_, _ in picked], pad_id)
                    inner = [i for _, i in picked]
                    mixed = torch.nn.functional.binary_cross_entropy_with_logits(
                        head(pooled(student, mix_ids, mix_mask)),
                        labels[inner],
                        weight=known[inner],
                        reduction="sum",
                    ) / known[inner].sum().clamp(min=1.0)
                    loss = loss + spec.task_weight * mixed
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.item() * len(batch)
            done += 1
            step("distill", done, total)
        losses.append(epoch_loss / len(texts))

    output_dir.mkdir(parents=True, exist_ok=True)
    student.eval()
    student.half().save_pretrained(str(output_dir), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (teacher_dir / name).is_file():
            shutil.copy2(teacher_dir / name, output_dir / name)
    # Served windows are as long as the texts the student learned on.
    (output_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": spec.max_length, "do_lower_case": False}, indent=2) + "\n",
        encoding="utf-8",
    )
    record = {
        "teacher": str(teacher_dir),
        "teacher_fingerprint": model_fingerprint(str(teacher_dir)),
        "spec": asdict(spec),
        "seed": seed,
        "texts": len(texts),
        "num_layers": int(student.config.num_hidden_layers),
        **({"ffn_pruned_from": pruned_from} if pruned_from is not None else {}),
        **({"attention_heads_pruned_from": heads_from} if heads_from is not None else {}),
        "test_sources_excluded": list(train_spec.test_sources),
        "loss_per_epoch": [round(v, 5) for v in losses],
        "training_seconds": round(time.monotonic() - started, 1),
    }
    earlier = Path(spec.start_from) / "distill.json" if spec.start_from else None
    if earlier is not None and earlier.is_file():
        record["started_from"] = json.loads(earlier.read_text(encoding="utf-8"))
    (output_dir / "distill.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def embedding_agreement(
    student_dir: Path, teacher_dir: Path | None, texts: Sequence[str]
) -> dict[str, float]:
    """Cosine between student and teacher embeddings on `texts` (mean and 5th percentile)."""
    from bastion.moderation.encoder import Encoder

    a = Encoder(student_dir).encode(list(texts))
    b = Encoder(teacher_dir).encode(list(texts))
    cos = (a * b).sum(1)
    return {"mean_cosine": float(cos.mean()), "p5_cosine": float(np.percentile(cos, 5))}
