"""What the gateway records: a usage event per request (no content), and the seam for conversations.

Usage events go to the `usage_events` table through a background writer, so that a request does not wait
for the database: it waits `linger_s` after an event for more to arrive, then writes them all with one
statement in one transaction; `flush()` waits until everything queued is written. Conversations (message
content) are handed to a `ConversationSink`; the default drops them. The privacy capability supplies the
sink that stores them encrypted, with opt-out and retention.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert

from bastion.core.records import Message
from bastion.db.session import Database
from bastion.db.tables import UsageEvent, utcnow

logger = logging.getLogger("bastion.gateway.usage")
_USAGE = cast(Table, UsageEvent.__table__)


@dataclass
class UsageRecord:
    """One request's metadata: never message content."""

    id: str
    key_id: str
    user: str | None
    model: str
    backend: str
    policy: str
    stream: bool
    status: str = "ok"
    action: str = "allow"
    http_status: int = 200
    error_code: str | None = None
    latency_ms: float = 0.0
    upstream_ms: float | None = None
    moderation_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_categories: dict[str, str] = field(default_factory=dict)
    output_categories: dict[str, str] = field(default_factory=dict)
    input_scores: dict[str, float] = field(default_factory=dict)
    output_scores: dict[str, float] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    def row(self) -> UsageEvent:
        """The table row for this record (scores rounded to 4 places)."""
        return UsageEvent(**self.values())

    def values(self) -> dict[str, Any]:
        """The column values for this record (scores rounded to 4 places)."""
        values: dict[str, Any] = dict(self.__dict__)
        for name, size in (
            ("key_id", 64),
            ("model", 200),
            ("backend", 64),
            ("policy", 64),
            ("error_code", 64),
        ):
            if isinstance(values[name], str):
                values[name] = values[name][:size]  # a requested model name can be anything
        values["input_scores"] = {k: round(v, 4) for k, v in self.input_scores.items()}
        values["output_scores"] = {k: round(v, 4) for k, v in self.output_scores.items()}
        return values


class UsageRecorder:
    """Writes usage events from a background thread, in batches."""

    def __init__(self, db: Database | None, enabled: bool = True, *, linger_s: float = 0.02) -> None:
        self.db = db
        self.enabled = enabled and db is not None
        self.linger_s = linger_s
        self._queue: queue.Queue[UsageRecord | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(self, event: UsageRecord) -> None:
        """Queue `event` for writing."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bastion-usage", daemon=True)
                self._thread.start()
        self._queue.put(event)

    def _run(self) -> None:
        assert self.db is not None
        while True:
            first = self._queue.get()
            batch = [first]
            if first is not None and self.linger_s > 0:
                time.sleep(self.linger_s)  # gather what arrives meanwhile: one transaction for them all
            while len(batch) < 200 and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            try:
                if events:
                    with self.db.session() as session:
                        session.execute(insert(_USAGE), [e.values() for e in events])
            except Exception:
                logger.exception("could not write %d usage events", len(events))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(e is None for e in batch):
                return

    def flush(self) -> None:
        """Wait until every queued event is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)


@dataclass
class Exchange:
    """One request and its answer, with content: what a conversation store would keep."""

    request_id: str
    key_id: str
    user: str | None
    model: str
    policy: str
    messages: list[Message]
    answers: list[str | None]
    input: dict[str, Any]
    output: dict[str, Any] | None
    store: bool = True  # false: a temporary chat (`store: false` in the request)


class ConversationSink(Protocol):
    """Receives each exchange after it is answered (the privacy capability's seam)."""

    def record(self, exchange: Exchange) -> None:
        """Keep (or drop) the exchange; must not raise for ordinary failures."""


class DiscardConversations:
    """The default sink: conversations are not stored."""

    def record(self, exchange: Exchange) -> None:
        """Drop the exchange."""
