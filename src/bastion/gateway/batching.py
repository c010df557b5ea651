"""One thread runs every moderation call of the gateway, merging calls that wait into one batch.

Two reasons: model backends score a batch of texts for little more than one text, and torch's OpenMP
keeps a thread team per calling thread, so calls from the server's many worker threads left teams
spinning against each other (5-30x slower calls under load).

When nothing is being scored and the model runs no torch (lists, profanity, a remote model, the embedded model
on ONNX Runtime, which keeps its threads per session), a call is scored on the caller's own thread instead:
the hand-off to the batch thread and back cost more than scoring a short text. Calls that arrive
meanwhile queue for the batch thread as before, and are scored together once the running call is done.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from bastion.core.records import ModerationResult
from bastion.moderation.service import ModerationService

THREAD_FREE_BACKENDS = frozenset({"lists", "profanity", "openai"})  # pure Python, or a call over HTTP


def runs_inline(service: ModerationService, model: str | None) -> bool:
    """Whether `model` may be scored on any thread: none of its backends runs torch (whose OpenMP keeps
    a thread team per calling thread). Unknown backends are assumed to need the batch thread."""
    try:
        backends = service.model(model).backends
    except Exception:
        return False
    for backend in backends:
        name = getattr(backend, "plugin_name", "")
        if name in THREAD_FREE_BACKENDS:
            continue
        if name == "embedded" and getattr(backend, "runtime", None) == "onnx":
            continue
        return False
    return True


@dataclass
class _Call:
    texts: list[str]
    model: str | None
    explain: bool
    threshold_set: str | None
    future: Future[tuple[str, list[ModerationResult]]] = field(default_factory=Future)


class ModerationBatcher:
    """Runs `service.moderate` on its own thread; calls queued meanwhile (same model) share one batch."""

    def __init__(self, service: ModerationService, max_texts: int = 64, *, inline: bool = True) -> None:
        self.service = service
        self.max_texts = max_texts
        self.inline = inline
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._scoring = threading.Lock()  # held while a batch (or an inline call) is being scored
        self._inline_models: dict[str | None, bool] = {}

    def moderate(
        self, texts: Sequence[str], model: str | None, explain: bool, threshold_set: str | None = None
    ) -> tuple[str, list[ModerationResult]]:
        """(moderation model, a verdict per text in order); blocks until the batch holding them is scored."""
        if (
            self.inline
            and self._inline_model(model)
            and self._queue.empty()
            and self._scoring.acquire(blocking=False)
        ):
            try:
                return self.service.moderate(
                    list(texts), model=model, explain=explain, threshold_set=threshold_set, word_spans=False
                )
            finally:
                self._scoring.release()
        call = _Call(list(texts), model, explain, threshold_set)
        with self._lock:  # the thread starts with the first call, so idle apps hold no thread
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bastion-gateway-moderation", daemon=True
                )
                self._thread.start()
        self._queue.put(call)
        return call.future.result()

    def _inline_model(self, model: str | None) -> bool:
        known = self._inline_models.get(model)
        if known is None:
            known = self._inline_models[model] = runs_inline(self.service, model)
        return known

    def _run(self) -> None:
        held: _Call | None = None
        stopping = False
        while True:
            if held is not None:
                first, held = held, None
            elif stopping:
                return
            else:
                queued = self._queue.get()
                if queued is None:
                    return
                first = queued
            batch = [first]
            size = len(first.texts)
            while size < self.max_texts:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                if (more.model, more.explain, more.threshold_set) != (
                    first.model,
                    first.explain,
                    first.threshold_set,
                ):
                    held = more
                    break
                batch.append(more)
                size += len(more.texts)
            self._score(batch)

    def _score(self, batch: list[_Call]) -> None:
        texts = [text for call in batch for text in call.texts]
        try:
            with self._scoring:
                first = batch[0]
                name, results = self.service.moderate(
                    texts,
                    model=first.model,
                    explain=first.explain,
                    threshold_set=first.threshold_set,
                    word_spans=False,
                )
        except BaseException as exc:
            for call in batch:
                call.future.set_exception(exc)
            return
        start = 0
        for call in batch:
            call.future.set_result((name, results[start : start + len(call.texts)]))
            start += len(call.texts)

    def close(self) -> None:
        """Finish what is queued and stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
