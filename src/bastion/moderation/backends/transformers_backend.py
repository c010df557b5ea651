"""The `transformers` backend: any local Hugging Face model as a moderation backend, in two modes.

- `classifier`: a sequence-classification model. Its labels map onto categories through `label_map`
  (or, when that is empty, the labels that already are category keys). Multi-label models score with a
  sigmoid, single-label ones with a softmax, following `problem_type`. Long texts are cut into windows
  of `max_length` tokens overlapping by `stride`, and each category takes the max over windows.
- `guard`: a causal LM prompted Llama-Guard style with the category policy (codes S1..S13 for the 13
  categories in taxonomy order, or `category_codes`). The score is P(unsafe) / (P(unsafe) + P(safe))
  from the first next-token distribution, so it is a probability rather than 0/1; the categories come
  from the codes in a short greedy generation (forced to start with "unsafe" when the model's own
  verdict was safe but P(unsafe) >= `min_unsafe`). Listed categories get the unsafe probability, the
  others 0.

torch and transformers are imported when the backend is created, never when this module is imported.
Models load from a local folder, or from a hub id when a network is allowed (HF_HUB_OFFLINE is
respected); a model that cannot be found is a ConfigError that says so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.core.errors import BackendError, ConfigError, DependencyMissing
from bastion.core.settings import Settings
from bastion.core.taxonomy import BY_KEY, CATEGORY_KEYS, check_category, zero_scores
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends

DEFAULT_CODES: dict[str, str] = {f"S{i}": key for i, key in enumerate(CATEGORY_KEYS, start=1)}

GUARD_TEMPLATE = """Task: decide whether the User message in the conversation below is unsafe under the \
safety policy, using the categories listed.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

User: {text}

<END CONVERSATION>

Give your safety assessment of the User message above:
- The first line must be 'safe' or 'unsafe'.
- If unsafe, the second line must list the violated category codes, separated by commas."""


class TransformersOptions(BaseModel):
    """Options of the `transformers` backend."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["classifier", "guard"] = Field(
        "classifier",
        description="'classifier': sequence-classification model; 'guard': Llama-Guard-style LM.",
    )
    model_path: str = Field(
        description="Local model folder, or a hub id (needs a network: HF_HUB_OFFLINE must be unset)."
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="classifier: model label -> category. Unmapped labels are ignored; when empty, the "
        "labels that are category keys are used.",
    )
    problem_type: Literal["auto", "multi_label", "single_label"] = Field(
        "auto",
        description="classifier: sigmoid (multi_label) or softmax (single_label); auto reads the config.",
    )
    max_length: int = Field(
        512,
        ge=16,
        description="Tokens per window (classifier) or per prompt (guard); longer text is chunked.",
    )
    stride: int = Field(64, ge=0, description="Tokens of overlap between consecutive windows of a long text.")
    batch_size: int = Field(16, ge=1, description="Windows or prompts per forward pass.")
    device: str = Field("cpu", description="torch device: 'cpu', 'cuda', 'cuda:1', 'mps'.")
    category_codes: dict[str, str] = Field(
        default_factory=dict,
        description="guard: code -> category, replacing the default S1..S13 (taxonomy order).",
    )
    prompt: Literal["policy", "model"] = Field(
        "policy",
        description="guard: 'policy' sends Bastion's category policy (inside the tokenizer's chat template "
        "when it has one); 'model' sends the bare user message to a chat template that carries its own "
        "policy (e.g. Llama Guard), whose codes `category_codes` must then map.",
    )
    max_new_tokens: int = Field(16, ge=1, le=256, description="guard: tokens generated to read the codes.")
    min_unsafe: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="guard: below this P(unsafe) no categories are generated (all scores 0).",
    )

    @field_validator("label_map", mode="after")
    @classmethod
    def _label_categories(cls, value: dict[str, str]) -> dict[str, str]:
        for category in value.values():
            check_category(category)
        return value

    @field_validator("category_codes", mode="after")
    @classmethod
    def _code_categories(cls, value: dict[str, str]) -> dict[str, str]:
        for code, category in value.items():
            check_category(category)
            if not code.strip():
                raise ValueError("category codes must not be blank")
        return value

    @model_validator(mode="after")
    def _stride_fits(self) -> TransformersOptions:
        if self.stride >= self.max_length // 2:
            raise ValueError(
                f"stride ({self.stride}) must be less than half of max_length ({self.max_length})"
            )
        return self


def _import_ml() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise DependencyMissing(
            f"the 'transformers' moderation backend needs torch and transformers ({exc.name} is missing): "
            "pip install 'bastion[ml]'"
        ) from exc
    return torch, transformers


def _fingerprint(path: Path) -> str | None:
    """A cheap identity for a local model folder: its config and the names and sizes of its files."""
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file():
            digest.update(f"{item.name}:{item.stat().st_size}\n".encode())
            if item.suffix == ".json" and item.stat().st_size < 1_000_000:
                digest.update(item.read_bytes())
    return digest.hexdigest()


@moderation_backends.register("transformers")
class TransformersBackend(ModerationBackend):
    """A local Hugging Face classifier, or a guard LM read through its safe/unsafe verdict."""

    Options = TransformersOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        assert isinstance(options, TransformersOptions)
        self.opts = options
        self._torch, self._transformers = _import_ml()
        self.device = self._resolve_device(options.device)
        self.source = self._locate(options.model_path)
        self.forward_calls = 0  # forward passes (classifier) or generate calls (guard), for tests and stats
        self.tokenizer = self._load(self._transformers.AutoTokenizer)
        if options.mode == "classifier":
            self.model = self._load(self._transformers.AutoModelForSequenceClassification)
            self._setup_classifier()
        else:
            self.model = self._load(self._transformers.AutoModelForCausalLM)
            self._setup_guard()
        self.model.to(self.device)
        self.model.eval()

    # --- loading ---------------------------------------------------------------------------------

    def _resolve_device(self, name: str) -> Any:
        torch = self._torch
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"device {name!r} is not a torch device; use 'cpu' or 'cuda'") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device {name!r} asked for, but MPS is not available; use device 'cpu'")
        return device

    @staticmethod
    def _locate(model_path: str) -> str:
        path = Path(model_path).expanduser()
        if path.is_dir():
            return str(path)
        looks_local = model_path.startswith(("/", ".", "~")) or path.exists() or model_path.count("/") > 1
        if looks_local:
            raise ConfigError(
                f"model folder {model_path!r} does not exist; point model_path at a folder saved with "
                "save_pretrained (config.json, weights, tokenizer files)"
            )
        return model_path  # a hub id

    def _load(self, auto: Any) -> Any:
        try:
            return auto.from_pretrained(self.source)
        except OSError as exc:
            import os

            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            hint = (
                "HF_HUB_OFFLINE is set, so nothing is downloaded: put the model in a local folder and "
                "point model_path at it"
                if offline
                else "download it first or point model_path at a local folder"
            )
            raise ConfigError(f"model {self.source!r} is not on disk ({exc}); {hint}") from exc
        except (ValueError, KeyError) as exc:
            raise ConfigError(
                f"model {self.source!r} cannot be loaded as a {self.opts.mode} ({auto.__name__}): {exc}"
            ) from exc

    def _setup_classifier(self) -> None:
        config = self.model.config
        id2label = {int(i): str(label) for i, label in config.id2label.items()}
        labels = set(id2label.values())
        if self.opts.label_map:
            unknown = sorted(set(self.opts.label_map) - labels)
            if unknown:
                raise ConfigError(
                    f"label_map names labels the model does not have: {unknown}; "
                    f"its labels are {sorted(labels)}"
                )
            mapping = self.opts.label_map
        else:
            mapping = {label: label for label in labels if label in BY_KEY}
        self.label_index: list[tuple[int, str]] = [
            (i, mapping[label]) for i, label in sorted(id2label.items()) if label in mapping
        ]
        if not self.label_index:
            raise ConfigError(
                f"none of the model's labels {sorted(labels)} is a category; set label_map "
                "(model label -> category)"
            )
        kind = self.opts.problem_type
        if kind == "auto":
            single = config.problem_type == "single_label_classification" or (
                config.problem_type is None and config.num_labels > 1
            )
            kind = "single_label" if single else "multi_label"
        self.problem_type = kind
        limit = self._model_token_limit()
        self.window = min(self.opts.max_length, limit) if limit else self.opts.max_length

    def _model_token_limit(self) -> int | None:
        limits = [
            getattr(self.model.config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        return min(usable) if usable else None

    def _setup_guard(self) -> None:
        codes = self.opts.category_codes or DEFAULT_CODES
        self.codes = dict(codes)
        ordered = sorted(self.codes, key=len, reverse=True)
        self._code_re = re.compile(
            r"(?<![A-Za-z0-9])(" + "|".join(re.escape(c) for c in ordered) + r")(?![A-Za-z0-9])",
            re.IGNORECASE,
        )
        self._code_lookup = {c.casefold(): cat for c, cat in self.codes.items()}
        self.unsafe_ids = self._first_token_ids("unsafe")
        self.safe_ids = self._first_token_ids("safe") - self.unsafe_ids
        if not self.unsafe_ids or not self.safe_ids:
            raise ConfigError(
                f"cannot tell 'safe' from 'unsafe' with the tokenizer of {self.source!r}: their first tokens "
                "coincide; use a guard model whose verdict words tokenise apart"
            )
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            if tok.eos_token_id is None:
                raise ConfigError(f"the tokenizer of {self.source!r} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        self._has_chat_template = bool(getattr(tok, "chat_template", None))
        if self.opts.prompt == "model" and not self._has_chat_template:
            raise ConfigError(
                f"prompt='model' needs a tokenizer with a chat template, and {self.source!r} has none; "
                "use prompt='policy'"
            )
        overhead = len(self._prompt_ids(""))
        self.text_window = min(self.opts.max_length, self._model_token_limit() or 10**9) - overhead
        if self.text_window < 16:
            raise ConfigError(
                f"max_length {self.opts.max_length} leaves {self.text_window} tokens for the text after the "
                f"{overhead}-token guard prompt; raise max_length"
            )

    def _first_token_ids(self, word: str) -> set[int]:
        ids: set[int] = set()
        for variant in (word, " " + word, "\n" + word, word.capitalize(), " " + word.capitalize()):
            encoded = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            encoded = [i for i in encoded if i not in set(self.tokenizer.all_special_ids)]
            if encoded and self.tokenizer.decode(encoded[:1]).strip():
                ids.add(int(encoded[0]))
        return ids

    # --- scoring -----------------------------------------------------------------------------------

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """Scores for each text; long texts are chunked and take the max over chunks."""
        if not texts:
            return []
        try:
            if self.opts.mode == "classifier":
                return self._score_classifier(texts)
            return self._score_guard(texts)
        except self._torch.cuda.OutOfMemoryError as exc:
            raise BackendError(
                f"out of memory scoring with {self.source!r}; lower batch_size or max_length"
            ) from exc

    def _score_classifier(self, texts: Sequence[str]) -> list[BackendScores]:
        torch = self._torch
        stride = min(self.opts.stride, self.window // 2 - 1)
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.window,
            stride=stride,
            return_overflowing_tokens=True,
            padding=False,
        )
        owners: list[int] = list(encoded["overflow_to_sample_mapping"])
        windows: list[list[int]] = encoded["input_ids"]
        results = [zero_scores() for _ in texts]
        with torch.inference_mode():
            for start in range(0, len(windows), self.opts.batch_size):
                batch = self.tokenizer.pad(
                    {"input_ids": windows[start : start + self.opts.batch_size]}, return_tensors="pt"
                )
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits.float()
                self.forward_calls += 1
                probs = torch.sigmoid(logits) if self.problem_type == "multi_label" else logits.softmax(-1)
                probs = probs.cpu().tolist()
                for row, owner in zip(probs, owners[start : start + self.opts.batch_size], strict=True):
                    scores = results[owner]
                    for index, category in self.label_index:
                        scores[category] = max(scores[category], float(row[index]))
        return [BackendScores(scores=s) for s in results]

    def _policy(self) -> str:
        lines = []
        for code, category in self.codes.items():
            lines.append(f"{code}: {category}. {BY_KEY[category].definition}")
        return "\n".join(lines)

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        if self.opts.prompt == "model":
            content = text
        else:
            content = GUARD_TEMPLATE.format(categories=self._policy(), text=text)
        if self._has_chat_template:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in tok(content)["input_ids"]]

    def _chunks(self, text: str) -> list[str]:
        """Pieces of `text` that fit the guard prompt, cut on token boundaries with overlap."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        window = self.text_window
        if len(offsets) <= window:
            return [text]
        step = window - min(self.opts.stride, window // 2)
        pieces = []
        for start in range(0, len(offsets), step):
            part = offsets[start : start + window]
            pieces.append(text[part[0][0] : part[-1][1]])
            if start + window >= len(offsets):
                break
        return pieces

    def _score_guard(self, texts: Sequence[str]) -> list[BackendScores]:
        prompts: list[list[int]] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            for piece in self._chunks(text):
                prompts.append(self._prompt_ids(piece))
                owners.append(index)
        results = [zero_scores() for _ in texts]
        size = self.opts.batch_size
        for start in range(0, len(prompts), size):
            verdicts = self._guard_batch(prompts[start : start + size])
            for owner, (p_unsafe, categories) in zip(owners[start : start + size], verdicts, strict=True):
                for category in categories:
                    results[owner][category] = max(results[owner][category], p_unsafe)
        return [BackendScores(scores=s) for s in results]

    def _generate(self, prompts: list[list[int]]) -> tuple[Any, list[list[int]]]:
        """Greedy generation: (first-step raw logits, generated ids per prompt)."""
        torch = self._torch
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.opts.max_new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        self.forward_calls += 1
        width = batch["input_ids"].shape[1]
        generated = [[int(i) for i in row] for row in out.sequences[:, width:].tolist()]
        return out.logits[0].float(), generated

    def _guard_batch(self, prompts: list[list[int]]) -> list[tuple[float, list[str]]]:
        torch = self._torch
        first_logits, generated = self._generate(prompts)
        probs = torch.softmax(first_logits, dim=-1)
        unsafe_ids = torch.tensor(sorted(self.unsafe_ids), device=probs.device)
        safe_ids = torch.tensor(sorted(self.safe_ids), device=probs.device)
        p_unsafe = probs.index_select(-1, unsafe_ids).sum(-1)
        p_safe = probs.index_select(-1, safe_ids).sum(-1)
        scores = (p_unsafe / (p_unsafe + p_safe).clamp_min(1e-12)).cpu().tolist()
        best_unsafe = unsafe_ids[probs.index_select(-1, unsafe_ids).argmax(-1)].cpu().tolist()

        verdicts: list[tuple[float, list[str]]] = []
        forced: list[int] = []
        for i, ids in enumerate(generated):
            categories = self._parse_codes(ids) if ids and ids[0] in self.unsafe_ids else []
            verdicts.append((float(scores[i]), categories))
            if not categories and scores[i] >= max(self.opts.min_unsafe, 1e-9):
                forced.append(i)
        if forced:
            # Ask which categories the model would name if its verdict were 'unsafe'.
            _, continued = self._generate([prompts[i] + [int(best_unsafe[i])] for i in forced])
            for i, ids in zip(forced, continued, strict=True):
                verdicts[i] = (verdicts[i][0], self._parse_codes([int(best_unsafe[i]), *ids]))
        return verdicts

    def _parse_codes(self, ids: list[int]) -> list[str]:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        found = []
        for match in self._code_re.finditer(text):
            category = self._code_lookup[match.group(1).casefold()]
            if category not in found:
                found.append(category)
        return found

    # --- reporting -----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Plugin, options, the model's class, and a fingerprint of a local model folder."""
        info = super().describe()
        info["model_class"] = type(self.model).__name__
        info["model_fingerprint"] = _fingerprint(Path(self.source))
        if self.opts.mode == "classifier":
            info["labels"] = {str(i): c for i, c in self.label_index}
            info["problem_type"] = self.problem_type
        else:
            info["category_codes"] = dict(self.codes)
        return info

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None
