"""A tamper-evident audit log: events are leaves of an RFC 6962 Merkle tree with signed checkpoints.

A leaf is SHA-256(0x00 || canonical JSON of the stored event fields), a node SHA-256(0x01 || left || right),
and a tree of n > 1 leaves splits at the largest power of two below n (RFC 6962 §2.1). Every append
stores the event and an Ed25519-signed checkpoint (tree size, root hash). `verify()` recomputes each leaf
from the stored fields and every checkpoint's root, and names the first event that was edited, removed,
inserted or reordered. Personal fields are encrypted with the subject's data key before hashing, so
crypto-shredding a user leaves the ciphertext, and the tree, intact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from bastion.core.errors import BastionError, ConfigError
from bastion.db.session import Database
from bastion.db.tables import AuditCheckpointRow, AuditEventRow, utcnow
from bastion.privacy.crypto import DataKeyShredded, KeyRing, decode_key, open_sealed, seal, write_secret
from bastion.privacy.settings import PrivacySettings

CHECKPOINT_CONTEXT = b"bastion-audit-checkpoint-v1\x00"


# -- Merkle tree (RFC 6962) ------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash of already-hashed leaves (SHA-256 of nothing for an empty tree)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    split = 1 << ((n - 1).bit_length() - 1)  # the largest power of two strictly below n
    return node_hash(merkle_root(leaves[:split]), merkle_root(leaves[split:]))


# -- events and checkpoints ------------------------------------------------------------------------------


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def event_leaf_data(
    seq: int,
    created_at: datetime,
    actor: str,
    action: str,
    target: str,
    subject: str | None,
    details: dict[str, Any],
) -> bytes:
    """The canonical bytes an event's leaf hashes: every stored field, as sorted compact JSON."""
    fields = {
        "seq": seq,
        "time": _timestamp(created_at),
        "actor": actor,
        "action": action,
        "target": target,
        "subject": subject,
        "details": details,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_leaf(row: AuditEventRow, seq: int | None = None) -> bytes:
    """The leaf hash recomputed from a stored row (optionally as if it had sequence number `seq`)."""
    data = event_leaf_data(
        row.seq if seq is None else seq,
        row.created_at,
        row.actor,
        row.action,
        row.target,
        row.subject,
        row.details,
    )
    return leaf_hash(data)


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: JSON-ready, to be stored outside the server."""

    tree_size: int
    root_hash: str
    signature: str
    public_key: str
    created_at: str

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(self.tree_size, self.root_hash)

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint as a JSON object."""
        return asdict(self)


def checkpoint_message(tree_size: int, root_hash: str) -> bytes:
    """What a checkpoint signs: a context string, the tree size and the hex root."""
    return CHECKPOINT_CONTEXT + f"{tree_size}\n{root_hash}\n".encode()


def public_key_text(key: Ed25519PublicKey) -> str:
    """A raw Ed25519 public key as base64."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def verify_checkpoint(checkpoint: Checkpoint, public_key: str | None = None) -> bool:
    """True when the checkpoint's signature verifies with `public_key` (default: the one it names)."""
    try:
        raw = base64.b64decode(public_key or checkpoint.public_key, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
        key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.message())
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def signing_key_path(home: Path) -> Path:
    """Where development keeps its generated audit signing key."""
    return home / "keys" / "audit_ed25519.key"


def load_signing_key(privacy: PrivacySettings, *, env: str, home: Path) -> Ed25519PrivateKey:
    """The Ed25519 checkpoint signing key: from settings, or generated once in development."""
    configured = privacy.audit_signing_key.get_secret_value() if privacy.audit_signing_key else None
    if configured:
        return Ed25519PrivateKey.from_private_bytes(decode_key(configured, "audit signing key"))
    if env == "production":
        raise ConfigError(
            "privacy.audit_signing_key is not set; in production set BASTION_PRIVACY__AUDIT_SIGNING_KEY to "
            "a raw 32-byte Ed25519 private key in base64 (`openssl rand -base64 32`)"
        )
    path = signing_key_path(home)
    if path.is_file():
        return Ed25519PrivateKey.from_private_bytes(decode_key(path.read_text(), f"signing key in {path}"))
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    write_secret(path, base64.b64encode(raw).decode())
    return key


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as stored (personal fields still encrypted)."""

    seq: int
    created_at: datetime
    actor: str
    action: str
    target: str
    subject: str | None
    details: dict[str, Any]
    leaf_hash: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of `AuditLog.verify()`: ok, or the first problem and the event it concerns."""

    ok: bool
    tree_size: int
    root_hash: str
    checkpoints: int
    problem: str | None = None
    kind: str | None = None  # edited | removed | inserted | reordered | signature
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return asdict(self)


class AuditLog:
    """Appends and verifies audit events."""

    def __init__(
        self,
        db: Database,
        keyring: KeyRing,
        signing_key: Ed25519PrivateKey,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.signing_key = signing_key
        self.public_key = public_key_text(signing_key.public_key())
        self.clock = clock

    def _sign(self, tree_size: int, root_hash: str) -> str:
        return base64.b64encode(self.signing_key.sign(checkpoint_message(tree_size, root_hash))).decode()

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        details: dict[str, Any] | None = None,
        personal: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> AuditEvent:
        """Append an event and sign the new tree head. `personal` is encrypted with `subject`'s data key."""
        if personal and subject is None:
            raise ConfigError("an audit event with personal fields needs the subject whose key encrypts them")
        data_key = self.keyring.data_key(subject, create=True) if personal and subject else None
        for _attempt in range(5):
            try:
                return self._append_once(actor, action, target, details or {}, personal, subject, data_key)
            except SQLIntegrityError:  # another writer took this sequence number: read the tree again
                continue
        raise BastionError("could not append to the audit log: too many concurrent writers")

    def _append_once(
        self,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any],
        personal: dict[str, Any] | None,
        subject: str | None,
        data_key: bytes | None,
    ) -> AuditEvent:
        with self.db.session() as session:
            leaves = [
                bytes.fromhex(h)
                for h in session.scalars(select(AuditEventRow.leaf_hash).order_by(AuditEventRow.seq))
            ]
            seq = (session.scalar(select(func.max(AuditEventRow.seq))) or 0) + 1
            stored = dict(details)
            if personal and data_key is not None:
                plaintext = json.dumps(personal, sort_keys=True).encode()
                nonce, ciphertext = seal(data_key, plaintext, f"audit:{seq}")
                stored["personal"] = {
                    "nonce": base64.b64encode(nonce).decode(),
                    "ciphertext": base64.b64encode(ciphertext).decode(),
                }
            now = self.clock()
            leaf = leaf_hash(event_leaf_data(seq, now, actor, action, target, subject, stored))
            leaves.append(leaf)
            root = merkle_root(leaves).hex()
            row = AuditEventRow(
                seq=seq,
                created_at=now,
                actor=actor,
                action=action,
                target=target,
                subject=subject,
                details=stored,
                leaf_hash=leaf.hex(),
            )
            session.add(row)
            session.flush()
            session.add(
                AuditCheckpointRow(
                    tree_size=seq,
                    root_hash=root,
                    created_at=now,
                    signature=self._sign(seq, root),
                    public_key=self.public_key,
                )
            )
        return AuditEvent(seq, now, actor, action, target, subject, stored, leaf.hex())

    def events(self) -> list[AuditEvent]:
        """Every stored event, in sequence order."""
        with self.db.session() as session:
            rows = session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq)).all()
            return [
                AuditEvent(
                    r.seq, r.created_at, r.actor, r.action, r.target, r.subject, r.details, r.leaf_hash
                )
                for r in rows
            ]

    @staticmethod
    def events_for(rows: Sequence[AuditEventRow]) -> list[AuditEvent]:
        """Stored rows as events."""
        return [
            AuditEvent(r.seq, r.created_at, r.actor, r.action, r.target, r.subject, r.details, r.leaf_hash)
            for r in rows
        ]

    def personal(self, event: AuditEvent) -> dict[str, Any] | None:
        """The decrypted personal fields of `event`, or None when there are none or they were shredded."""
        sealed = event.details.get("personal")
        if not sealed or event.subject is None:
            return None
        try:
            key = self.keyring.data_key(event.subject)
        except DataKeyShredded:
            return None
        plaintext = open_sealed(
            key,
            base64.b64decode(sealed["nonce"]),
            base64.b64decode(sealed["ciphertext"]),
            f"audit:{event.seq}",
        )
        result: dict[str, Any] = json.loads(plaintext)
        return result

    def head(self) -> Checkpoint | None:
        """The latest signed checkpoint, or None for an empty log."""
        with self.db.session() as session:
            row = session.scalars(
                select(AuditCheckpointRow).order_by(AuditCheckpointRow.tree_size.desc()).limit(1)
            ).first()
            return _checkpoint(row) if row is not None else None

    def verify(self, trusted: Checkpoint | None = None) -> VerifyReport:
        """Recompute every leaf and root; report the first edited, removed, inserted or reordered event.

        `trusted` is a head kept outside the server (`bastion audit checkpoint`): it also catches a log
        cut back together with its checkpoints."""
        with self.db.session() as session:
            rows = session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq)).all()
            checkpoints = [
                _checkpoint(r)
                for r in session.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.tree_size))
            ]
        leaves = [bytes.fromhex(r.leaf_hash) if _is_hex(r.leaf_hash) else b"" for r in rows]
        root = merkle_root(leaves).hex()

        def fail(kind: str, seq: int | None, problem: str) -> VerifyReport:
            return VerifyReport(False, len(rows), root, len(checkpoints), problem, kind, seq)

        for cp in checkpoints:
            if cp.public_key != self.public_key or not verify_checkpoint(cp, self.public_key):
                return fail(
                    "signature", cp.tree_size, f"checkpoint at tree size {cp.tree_size} has a bad signature"
                )
        for index, row in enumerate(rows):
            expected = index + 1
            if row.seq != expected:
                return fail(
                    "removed", expected, f"audit event {expected} was removed (next stored is {row.seq})"
                )
            if row_leaf(row).hex() != row.leaf_hash:
                moved = _written_as(row, len(rows) + 1)
                if moved is not None:
                    return fail(
                        "reordered", row.seq, f"audit event {row.seq} was moved: it was written as {moved}"
                    )
                return fail(
                    "edited", row.seq, f"audit event {row.seq} was edited: its fields do not hash to its leaf"
                )
        if trusted is not None:
            if not verify_checkpoint(trusted, self.public_key):
                return fail("signature", trusted.tree_size, "the trusted head's signature does not verify")
            if trusted.tree_size > len(rows):
                n = len(rows) + 1
                return fail(
                    "removed", n, f"audit event {n} was removed: the trusted head covers {trusted.tree_size}"
                )
            if merkle_root(leaves[: trusted.tree_size]).hex() != trusted.root_hash:
                return fail(
                    "edited",
                    trusted.tree_size,
                    f"audit events 1..{trusted.tree_size} no longer match the trusted head",
                )
        signed = checkpoints[-1].tree_size if checkpoints else 0
        if len(rows) < signed:
            n = len(rows) + 1
            return fail("removed", n, f"audit event {n} was removed: the signed head covers {signed} events")
        if len(rows) > signed:
            n = signed + 1
            return fail("inserted", n, f"audit event {n} was inserted: no signed checkpoint covers it")
        bad = _first_bad_checkpoint(checkpoints, leaves)
        if bad is not None:
            earlier = max((c.tree_size for c in checkpoints if c.tree_size < bad), default=0)
            seq = earlier + 1
            span = f"{seq}" if seq == bad else f"{seq}..{bad}"
            return fail(
                "edited",
                seq,
                f"audit event {span} was edited: the tree no longer matches the head signed at size {bad}",
            )
        return VerifyReport(True, len(rows), root, len(checkpoints))


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _written_as(row: AuditEventRow, limit: int) -> int | None:
    """The sequence number under which the row's fields hash to its stored leaf, if another one."""
    for seq in range(1, limit + 1):
        if seq != row.seq and row_leaf(row, seq).hex() == row.leaf_hash:
            return seq
    return None


def _first_bad_checkpoint(checkpoints: Sequence[Checkpoint], leaves: Sequence[bytes]) -> int | None:
    """The smallest tree size whose signed root differs from the stored leaves' (binary search)."""

    def matches(cp: Checkpoint) -> bool:
        return merkle_root(leaves[: cp.tree_size]).hex() == cp.root_hash

    if not checkpoints or matches(checkpoints[-1]):
        return None
    low, high = 0, len(checkpoints) - 1  # checkpoints[high] is known bad
    while low < high:
        middle = (low + high) // 2
        if matches(checkpoints[middle]):
            low = middle + 1
        else:
            high = middle
    return checkpoints[high].tree_size


def _checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(
        tree_size=row.tree_size,
        root_hash=row.root_hash,
        signature=row.signature,
        public_key=row.public_key,
        created_at=_timestamp(row.created_at),
    )
