"""The audit seam every capability writes security-relevant events to.

The privacy capability supplies the implementation (`bastion.privacy.audit.AuditLog`: an RFC 6962 hash tree
with signed checkpoints); others depend only on this protocol. `personal` fields are encrypted with the
data key of `subject` (a user id), so crypto-shredding that user erases them without breaking the tree.
"""

from __future__ import annotations

from typing import Any, Protocol


class AuditTrail(Protocol):
    """Appends audit events."""

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        details: dict[str, Any] | None = None,
        personal: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> Any:
        """Record one event: who (`actor`), what (`action`), on what (`target`)."""


class NoAudit:
    """An audit trail that records nothing (library use without the privacy capability)."""

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        details: dict[str, Any] | None = None,
        personal: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> None:
        """Drop the event."""
