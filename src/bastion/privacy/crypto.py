"""Envelope encryption: a per-user AES-256-GCM data key, wrapped by the master key.

Each ciphertext carries a fresh 96-bit random nonce and is bound to its row by associated data, so a
ciphertext copied onto another row does not decrypt. `rotate_master_key` re-wraps every data key;
`shred` deletes a user's data key, after which everything encrypted for that user is unreadable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select

from bastion.core.errors import BastionError, ConfigError, NotFound
from bastion.db.session import Database
from bastion.db.tables import DataKey, utcnow
from bastion.privacy.settings import PrivacySettings

KEY_BYTES = 32
NONCE_BYTES = 12
# Published so that it can be refused: never valid outside development.
DEV_MASTER_KEY = base64.b64encode(b"bastion-development-master-key!!").decode()


class DataKeyShredded(NotFound):
    """The user's data key was destroyed (crypto-shredded) or never existed: the data is unreadable."""

    default_code = "data_key_shredded"


class IntegrityError(BastionError):
    """A ciphertext failed authentication: it was altered, moved to another row, or the key is wrong."""

    default_code = "ciphertext_integrity"


def new_key() -> bytes:
    """32 random bytes for a master or data key."""
    return AESGCM.generate_key(bit_length=256)


def encode_key(key: bytes) -> str:
    """A key as base64 text."""
    return base64.b64encode(key).decode()


def decode_key(text: str, what: str = "master key") -> bytes:
    """Base64 text as a 32-byte key, or a ConfigError saying what is wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"the {what} is not valid base64; generate one with `bastion privacy rotate-key`"
        ) from exc
    if len(key) != KEY_BYTES:
        raise ConfigError(f"the {what} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (to tell which master key wrapped a data key)."""
    return hashlib.sha256(b"bastion-key-id\x00" + key).hexdigest()[:16]


def write_secret(path: Path, data: str) -> None:
    """Write a secret file readable only by its owner (0600), creating its folder (0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data + "\n")
    os.chmod(path, 0o600)


def master_key_path(home: Path) -> Path:
    """Where development keeps its generated master key."""
    return home / "keys" / "master.key"


def load_master_key(privacy: PrivacySettings, *, env: str, home: Path) -> bytes:
    """The master key in force. Production refuses an unset or the development key; development
    generates one once into `$BASTION_HOME/keys/master.key` (0600)."""
    configured = privacy.master_key.get_secret_value() if privacy.master_key is not None else None
    if env == "production":
        if not configured:
            raise ConfigError(
                "privacy.master_key is not set; in production set BASTION_PRIVACY__MASTER_KEY to 32 random "
                "bytes in base64 (`openssl rand -base64 32`)"
            )
        if configured.strip() == DEV_MASTER_KEY:
            raise ConfigError("privacy.master_key is the well-known development key; set a random one")
        return decode_key(configured)
    if configured:
        return decode_key(configured)
    path = master_key_path(home)
    if path.is_file():
        return decode_key(path.read_text(), f"master key in {path}")
    key = new_key()
    write_secret(path, encode_key(key))
    return key


def seal(key: bytes, plaintext: bytes, aad: str) -> tuple[bytes, bytes]:
    """(nonce, ciphertext): AES-256-GCM with a fresh random 96-bit nonce, bound to `aad`."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad.encode())


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, aad: str) -> bytes:
    """The plaintext of `seal`'s output; IntegrityError when anything was altered or moved."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad.encode())
    except InvalidTag as exc:
        raise IntegrityError(
            f"ciphertext {aad!r} failed authentication (altered, moved or wrong key)"
        ) from exc


def mac_hex(key: bytes, message: str) -> str:
    """HMAC-SHA256 of `message` under `key`, as hex."""
    return hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def derive_mac_key(data_key: bytes) -> bytes:
    """The MAC key derived from a user's data key (see `KeyRing.mac_key`)."""
    return hmac.new(data_key, b"bastion-mac-key", hashlib.sha256).digest()


def _wrap_aad(user_id: str) -> bytes:
    return b"bastion-data-key\x00" + user_id.encode()


class KeyRing:
    """Per-user data keys in the `data_keys` table, wrapped by the master key."""

    def __init__(self, db: Database, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigError(f"the master key must be {KEY_BYTES} bytes")
        self.db = db
        self.master_key = master_key

    def _unwrap(self, row: DataKey) -> bytes:
        try:
            return AESGCM(self.master_key).decrypt(row.nonce, row.wrapped_key, _wrap_aad(row.user_id))
        except InvalidTag as exc:
            raise ConfigError(
                f"the data key of {row.user_id!r} was wrapped by master key {row.master_key_id}, not by the "
                f"configured one ({key_id(self.master_key)}); set the master key it was rotated to"
            ) from exc

    def _wrap(self, user_id: str, data_key: bytes, master_key: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, AESGCM(master_key).encrypt(nonce, data_key, _wrap_aad(user_id))

    def data_key(self, user_id: str, *, create: bool = False) -> bytes:
        """The user's data key; created when `create`, else DataKeyShredded if there is none."""
        with self.db.session() as session:
            row = session.get(DataKey, user_id)
            if row is not None:
                return self._unwrap(row)
            if not create:
                raise DataKeyShredded(f"no data key for {user_id!r}: it was shredded or never created")
            key = new_key()
            nonce, wrapped = self._wrap(user_id, key, self.master_key)
            session.add(
                DataKey(
                    user_id=user_id, wrapped_key=wrapped, nonce=nonce, master_key_id=key_id(self.master_key)
                )
            )
        return key

    def encrypt(self, user_id: str, plaintext: bytes, aad: str) -> tuple[bytes, bytes]:
        """(nonce, ciphertext) of `plaintext` under the user's data key, bound to `aad` (the row id)."""
        return seal(self.data_key(user_id, create=True), plaintext, aad)

    def decrypt(self, user_id: str, nonce: bytes, ciphertext: bytes, aad: str) -> bytes:
        """The plaintext; DataKeyShredded when the key is gone, IntegrityError when anything was altered."""
        return open_sealed(self.data_key(user_id), nonce, ciphertext, aad)

    def mac(self, user_id: str, message: str) -> str:
        """HMAC-SHA256 (hex) of `message` under a MAC key derived from the user's data key: a stable,
        non-reversible reference (end-user ids, conversation heads) that shredding the user erases."""
        return mac_hex(self.mac_key(user_id), message)

    def mac_key(self, user_id: str) -> bytes:
        """The user's MAC key (derived from the data key, which is created if missing)."""
        return derive_mac_key(self.data_key(user_id, create=True))

    def rotate_master_key(self, new_master_key: bytes) -> int:
        """Re-wrap every data key with `new_master_key` in one transaction; returns how many."""
        if len(new_master_key) != KEY_BYTES:
            raise ConfigError(f"the new master key must be {KEY_BYTES} bytes")
        count = 0
        with self.db.session() as session:
            for row in session.scalars(select(DataKey)):
                data_key = self._unwrap(row)
                row.nonce, row.wrapped_key = self._wrap(row.user_id, data_key, new_master_key)
                row.master_key_id = key_id(new_master_key)
                row.rotated_at = utcnow()
                count += 1
        self.master_key = new_master_key
        return count

    def shred(self, user_id: str) -> bool:
        """Destroy the user's data key (crypto-shredding); True if there was one."""
        with self.db.session() as session:
            result = session.execute(delete(DataKey).where(DataKey.user_id == user_id))
        return bool(getattr(result, "rowcount", 0))
