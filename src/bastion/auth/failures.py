"""Authentication failures as audit events, rate-limited so that a flood cannot flood the audit log.

At most one event per client address per `window_s` (the next one carries how many were suppressed), and
at most `global_per_window` events per window in all (a spray from many addresses is summarised too).
The address is kept only as a keyed pseudonym, never in the clear.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from bastion.core.audit import AuditTrail


class AuthFailureAudit:
    """Records `auth.failure` events for 401s, rate-limited per address and overall."""

    def __init__(
        self,
        audit: AuditTrail,
        *,
        window_s: float = 60.0,
        global_per_window: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.window_s = window_s
        self.global_per_window = global_per_window
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._window_start = -1e18
        self._window_count = 0
        self._global_suppressed = 0

    def record(self, address: str, reason: str, path: str) -> bool:
        """Note one failure; True when it was written as an audit event."""
        now = self.clock()
        source = "ip:" + hashlib.sha256(b"bastion-ip\x00" + address.encode()).hexdigest()[:16]
        with self._lock:
            if now - self._window_start >= self.window_s:
                self._window_start, self._window_count = now, 0
                if len(self._last) > 10_000:  # forget old addresses
                    self._last = {k: v for k, v in self._last.items() if now - v < self.window_s}
            last = self._last.get(source)
            if (
                last is not None and now - last < self.window_s
            ) or self._window_count >= self.global_per_window:
                if last is not None and now - last < self.window_s:
                    self._suppressed[source] = self._suppressed.get(source, 0) + 1
                else:
                    self._global_suppressed += 1
                return False
            self._last[source] = now
            self._window_count += 1
            suppressed = self._suppressed.pop(source, 0)
            spray, self._global_suppressed = self._global_suppressed, 0
        self.audit.append(
            "anonymous",
            "auth.failure",
            path[:256],
            details={
                "reason": reason,
                "source": source,
                "suppressed": suppressed,
                "others_suppressed": spray,
            },
        )
        return True
