import pytest
from sqlalchemy import text

from bastion.auth.keys import KeyStore, Role
from bastion.core.errors import AuthenticationError, NotFound
from bastion.db.session import Database


def test_create_authenticate_revoke(database: Database) -> None:
    store = KeyStore(database)
    secret, info = store.create(Role.RED_TEAMER, "expert")
    assert secret.startswith("bst-") and len(secret) > 40
    principal = store.authenticate(secret)
    assert (principal.key_id, principal.role) == (info.id, Role.RED_TEAMER)
    assert [k.id for k in store.list()] == [info.id]
    store.revoke(info.id)
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)
    assert store.list() == []
    assert [k.id for k in store.list(include_revoked=True)] == [info.id]


def test_secret_is_never_stored(database: Database) -> None:
    secret, _ = KeyStore(database).create(Role.CLIENT)
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).all()
    assert rows and all(secret not in str(tuple(row)) for row in rows)


def test_unknown_key_and_unknown_id(database: Database) -> None:
    store = KeyStore(database)
    with pytest.raises(AuthenticationError):
        store.authenticate("bst-not-a-key")
    with pytest.raises(NotFound):
        store.revoke("key_missing")


def test_has_active_admin(database: Database) -> None:
    store = KeyStore(database)
    assert not store.has_active_admin()
    _, info = store.create(Role.ADMIN)
    assert store.has_active_admin()
    store.revoke(info.id)
    assert not store.has_active_admin()
