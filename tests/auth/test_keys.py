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


def test_authenticated_keys_are_cached_for_the_ttl(database: Database) -> None:
    store = KeyStore(database, cache_ttl_s=60)
    secret, info = store.create(Role.CLIENT)
    assert store.cached_principal(secret) is None
    assert store.authenticate(secret).role == Role.CLIENT
    assert store.cached_principal(secret) == store.authenticate(secret)
    # A change behind the store's back (another process) shows only after the TTL ...
    with database.session() as session:
        session.execute(text("UPDATE api_keys SET role = 'annotator' WHERE id = :id"), {"id": info.id})
    assert store.authenticate(secret).role == Role.CLIENT
    # ... which a store without a cache does not have.
    assert KeyStore(database, cache_ttl_s=0).authenticate(secret).role == Role.ANNOTATOR
    with pytest.raises(AuthenticationError):
        store.authenticate("bst-not-a-key")  # failures are never cached
    assert store.cached_principal("bst-not-a-key") is None


def test_revocation_and_role_change_take_effect_at_once_despite_the_cache(database: Database) -> None:
    store = KeyStore(database, cache_ttl_s=60)
    secret, info = store.create(Role.RED_TEAMER)
    assert store.authenticate(secret).role == Role.RED_TEAMER
    other = KeyStore(database)  # e.g. the privacy service's store, which revokes a deleted user's keys
    other.set_role(info.id, Role.ANNOTATOR)
    assert store.authenticate(secret).role == Role.ANNOTATOR
    other.revoke(info.id)
    assert store.cached_principal(secret) is None
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)


def test_a_lookup_that_raced_a_revocation_is_not_cached(database: Database) -> None:
    store = KeyStore(database, cache_ttl_s=60)
    secret, info = store.create(Role.CLIENT)
    lookup = store._authenticate

    def revoked_meanwhile(digest: str):  # type: ignore[no-untyped-def]
        principal = lookup(digest)  # read while the key was still valid
        KeyStore(database).revoke(info.id)
        return principal

    store._authenticate = revoked_meanwhile  # type: ignore[method-assign]
    store.authenticate(secret)
    store._authenticate = lookup  # type: ignore[method-assign]
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)
