import base64
import stat
from pathlib import Path

import pytest

from bastion.core.errors import ConfigError
from bastion.db.session import Database
from bastion.privacy.crypto import (
    DEV_MASTER_KEY,
    DataKeyShredded,
    IntegrityError,
    KeyRing,
    encode_key,
    load_master_key,
    new_key,
)
from bastion.privacy.settings import PrivacySettings


def test_round_trip_with_unique_nonces_bound_to_the_row(keyring: KeyRing) -> None:
    first = keyring.encrypt("alice", b"secret words", "message:1")
    second = keyring.encrypt("alice", b"secret words", "message:1")
    assert first[0] != second[0] and first[1] != second[1]
    assert len(first[0]) == 12
    assert b"secret words" not in first[1]
    assert keyring.decrypt("alice", *first, "message:1") == b"secret words"
    with pytest.raises(IntegrityError):
        keyring.decrypt("alice", *first, "message:2")  # moved onto another row
    with pytest.raises(IntegrityError):
        keyring.decrypt("alice", first[0], first[1][:-1] + bytes([first[1][-1] ^ 1]), "message:1")


def test_each_user_has_its_own_key(keyring: KeyRing) -> None:
    nonce, ciphertext = keyring.encrypt("alice", b"hello", "row")
    keyring.data_key("bob", create=True)
    with pytest.raises(IntegrityError):
        keyring.decrypt("bob", nonce, ciphertext, "row")


def test_rotation_keeps_data_readable_and_retires_the_old_master(
    database: Database, keyring: KeyRing
) -> None:
    old = keyring.master_key
    sealed = {user: keyring.encrypt(user, user.encode(), "r") for user in ("alice", "bob")}
    new = new_key()
    assert keyring.rotate_master_key(new) == 2
    fresh = KeyRing(database, new)
    for user, (nonce, ciphertext) in sealed.items():
        assert fresh.decrypt(user, nonce, ciphertext, "r") == user.encode()
    with pytest.raises(ConfigError, match="master key"):
        KeyRing(database, old).decrypt("alice", *sealed["alice"], "r")


def test_shredding_makes_the_data_unreadable(database: Database, keyring: KeyRing) -> None:
    nonce, ciphertext = keyring.encrypt("alice", b"hello", "r")
    assert keyring.shred("alice")
    with pytest.raises(DataKeyShredded):
        keyring.decrypt("alice", nonce, ciphertext, "r")
    with pytest.raises(DataKeyShredded):
        KeyRing(database, keyring.master_key).decrypt("alice", nonce, ciphertext, "r")
    assert not keyring.shred("alice")


def test_production_refuses_a_missing_or_development_master_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not set"):
        load_master_key(PrivacySettings(), env="production", home=tmp_path)
    with pytest.raises(ConfigError, match="development key"):
        load_master_key(PrivacySettings(master_key=DEV_MASTER_KEY), env="production", home=tmp_path)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_master_key(
            PrivacySettings(master_key=base64.b64encode(b"short").decode()), env="production", home=tmp_path
        )
    key = new_key()
    assert (
        load_master_key(PrivacySettings(master_key=encode_key(key)), env="production", home=tmp_path) == key
    )
    assert not (tmp_path / "keys").exists()


def test_development_generates_a_private_key_file_once(tmp_path: Path) -> None:
    first = load_master_key(PrivacySettings(), env="development", home=tmp_path)
    path = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(PrivacySettings(), env="development", home=tmp_path) == first
    assert len(first) == 32
