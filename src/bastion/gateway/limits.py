"""Per-key rate limits and token quotas, in memory (per process; each API worker counts its own)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from bastion.core.errors import RateLimited
from bastion.gateway.settings import RateLimit


class RateLimiter:
    """Requests per minute (sliding window) and tokens per period (fixed windows), by key id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _now() -> float:
        return time.time()

    def admit(self, key_id: str, limit: RateLimit) -> None:
        """Count a request for `key_id`, or raise RateLimited with the seconds until it would pass."""
        now = self._now()
        with self._lock:
            if limit.token_quota is not None:
                window = int(now // limit.quota_period_s)
                used = self._tokens.get(key_id, (window, 0))
                if used[0] == window and used[1] >= limit.token_quota:
                    retry = (window + 1) * limit.quota_period_s - now
                    raise RateLimited(
                        f"This key used its token quota ({used[1]}/{limit.token_quota} tokens per "
                        f"{limit.quota_period_s} s). Try again in {math.ceil(retry)} s.",
                        retry_after=retry,
                        code="insufficient_quota",
                    )
            if limit.requests_per_minute is not None:
                stamps = self._requests.setdefault(key_id, deque())
                while stamps and stamps[0] <= now - 60.0:
                    stamps.popleft()
                if len(stamps) >= limit.requests_per_minute:
                    retry = stamps[0] + 60.0 - now
                    raise RateLimited(
                        f"Rate limit reached: {limit.requests_per_minute} requests per minute for this key. "
                        f"Try again in {math.ceil(retry)} s.",
                        retry_after=retry,
                    )
                stamps.append(now)

    def add_tokens(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Charge `tokens` to the key's current quota period."""
        if limit.token_quota is None or tokens <= 0:
            return
        window = int(self._now() // limit.quota_period_s)
        with self._lock:
            current = self._tokens.get(key_id)
            used = current[1] if current is not None and current[0] == window else 0
            self._tokens[key_id] = (window, used + tokens)
