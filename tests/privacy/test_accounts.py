"""Organisations and users: keys belong to users, enterprise organisations are opted out by default, the
opt-out in force is the user's, its account's or its organisation's, and migration 0004 gives every
existing key a user."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from bastion.auth.keys import KeyStore, Role
from bastion.core.errors import InvalidRequest, NotFound
from bastion.db.accounts import DEFAULT_ORG_ID, Accounts
from bastion.db.migrate import upgrade
from bastion.db.session import Database
from bastion.db.tables import ApiKey, User, utcnow


def test_a_key_without_a_user_gets_its_own_in_the_default_org(database: Database) -> None:
    _, first = KeyStore(database).create(Role.CLIENT, "first app")
    _, second = KeyStore(database).create(Role.CLIENT, "second app")
    assert first.user_id and second.user_id and first.user_id != second.user_id
    user = Accounts(database).user(first.user_id)
    assert user.org_id == DEFAULT_ORG_ID and user.name == "first app" and user.parent_id is None
    _, third = KeyStore(database).create(Role.ANNOTATOR, "same person", user_id=first.user_id)
    assert third.user_id == first.user_id
    assert Accounts(database).user_for_key(third.id).id == first.user_id


def test_enterprise_default_and_the_opt_out_in_force(database: Database) -> None:
    accounts = Accounts(database)
    enterprise = accounts.create_org("Big", "enterprise")
    team = accounts.create_org("Small", "team")
    assert enterprise.training_opt_out and not team.training_opt_out
    assert not accounts.create_org("Big but opted in", "enterprise", training_opt_out=False).training_opt_out
    with pytest.raises(InvalidRequest):
        accounts.create_org("x", "platinum")
    with pytest.raises(NotFound):
        accounts.create_user("org_missing")
    corporate = accounts.create_user(enterprise.id)
    small = accounts.create_user(team.id)
    assert accounts.effective_opt_out(corporate.id)  # the organisation's opt-out binds its users
    accounts.set_user_opt_out(corporate.id, False)
    assert accounts.effective_opt_out(corporate.id)
    assert not accounts.effective_opt_out(small.id)
    end_user = accounts.end_user(small.id, "h" * 64)
    assert accounts.end_user(small.id, "h" * 64).id == end_user.id  # found again, not created twice
    assert end_user.org_id == team.id and not accounts.effective_opt_out(end_user.id)
    accounts.set_user_opt_out(small.id, True)  # the account opts out: its end users too
    assert accounts.effective_opt_out(end_user.id)
    accounts.set_user_opt_out(small.id, False)
    accounts.set_org_opt_out(team.id, True)
    assert accounts.effective_opt_out(end_user.id) and accounts.effective_opt_out(small.id)
    assert accounts.effective_opt_out("usr_unknown")  # unknown: never trained on


def test_migration_0004_gives_existing_keys_a_user(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine, "0003")
        with db.engine.begin() as conn:
            conn.execute(
                insert(ApiKey.__table__).values(  # type: ignore[arg-type]
                    id="key_old",
                    name="old key",
                    role="admin",
                    prefix="bst-abc",
                    key_hash="0" * 64,
                    created_at=utcnow(),
                )
            )
        db.upgrade()
        with db.session() as session:
            key = session.get(ApiKey, "key_old")
            assert key is not None and key.user_id is not None
            user = session.scalars(select(User).where(User.id == key.user_id)).one()
            assert user.org_id == DEFAULT_ORG_ID and user.name == "old key"
    finally:
        db.dispose()
