"""Organisations and users: an API key belongs to a user, a user to an organisation.

Shared by auth (every key gets a user) and privacy (conversations, opt-out, export), so it lives here.

- An organisation has a plan (`free`, `team`, `enterprise`); enterprise organisations are opted out of
  training by default, others are not. Either way the organisation's flag can be changed.
- A user is an *account* (holds keys) or an *end user* of a client key: the request's `user` field names
  one of the app's own users. Bastion keeps end users apart (their own conversations, data key, opt-out)
  but knows them only by an HMAC of that field, computed by the caller (`external_hash`).
- The training opt-out in force for a user is the OR of its own flag, its parent account's (for an end
  user) and its organisation's: a user cannot opt back in to what the organisation opted out of.
- A key created without a user gets a new user of its own in the default organisation (`org_default`,
  plan `team`), named after the key.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.core.errors import InvalidRequest, NotFound
from bastion.db.session import Database
from bastion.db.tables import ApiKey, Organization, User, utcnow

PLANS = ("free", "team", "enterprise")
DEFAULT_ORG_ID = "org_default"


@dataclass(frozen=True)
class OrgInfo:
    """An organisation."""

    id: str
    name: str
    plan: str
    training_opt_out: bool
    created_at: datetime


@dataclass(frozen=True)
class UserInfo:
    """A user (an account, or an end user of a client key when `parent_id` is set)."""

    id: str
    org_id: str
    parent_id: str | None
    name: str
    training_opt_out: bool
    created_at: datetime


def _org(row: Organization) -> OrgInfo:
    return OrgInfo(row.id, row.name, row.plan, row.training_opt_out, row.created_at)


def _user(row: User) -> UserInfo:
    return UserInfo(row.id, row.org_id, row.parent_id, row.name, row.training_opt_out, row.created_at)


def new_user_id() -> str:
    """A fresh user id."""
    return "usr_" + secrets.token_hex(10)


def check_plan(plan: str) -> str:
    """`plan` if it is known, else InvalidRequest listing the plans."""
    if plan not in PLANS:
        raise InvalidRequest(f"unknown plan {plan!r}; expected one of: {', '.join(PLANS)}", param="plan")
    return plan


def ensure_default_org(session: Session, now: datetime) -> str:
    """The default organisation's id, created on first use."""
    if session.get(Organization, DEFAULT_ORG_ID) is None:
        session.add(
            Organization(
                id=DEFAULT_ORG_ID, name="Default", plan="team", training_opt_out=False, created_at=now
            )
        )
        session.flush()
    return DEFAULT_ORG_ID


class Accounts:
    """Create and look up organisations and users; resolve the training opt-out in force."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    # -- organisations --------------------------------------------------------------------------------

    def create_org(self, name: str, plan: str = "team", training_opt_out: bool | None = None) -> OrgInfo:
        """A new organisation; opted out by default when its plan is `enterprise`."""
        check_plan(plan)
        opt_out = plan == "enterprise" if training_opt_out is None else training_opt_out
        row = Organization(
            id="org_" + secrets.token_hex(8),
            name=name[:200] or "Organisation",
            plan=plan,
            training_opt_out=opt_out,
            created_at=self.clock(),
        )
        with self.db.session() as session:
            session.add(row)
        return _org(row)

    def org(self, org_id: str) -> OrgInfo:
        """One organisation; NotFound if there is none."""
        with self.db.session() as session:
            if org_id == DEFAULT_ORG_ID:
                ensure_default_org(session, self.clock())
            row = session.get(Organization, org_id)
            if row is None:
                raise NotFound(f"no organisation {org_id!r}", param="org_id")
            return _org(row)

    def list_orgs(self) -> list[OrgInfo]:
        """Every organisation, oldest first."""
        with self.db.session() as session:
            return [_org(r) for r in session.scalars(select(Organization).order_by(Organization.created_at))]

    def set_org_opt_out(self, org_id: str, value: bool) -> OrgInfo:
        """Set an organisation's training opt-out."""
        with self.db.session() as session:
            row = session.get(Organization, org_id)
            if row is None:
                raise NotFound(f"no organisation {org_id!r}", param="org_id")
            row.training_opt_out = value
            return _org(row)

    # -- users ----------------------------------------------------------------------------------------

    def create_user(self, org_id: str | None = None, name: str = "") -> UserInfo:
        """A new account in `org_id` (default: the default organisation)."""
        with self.db.session() as session:
            return _user(self._create_user(session, org_id, name))

    def _create_user(self, session: Session, org_id: str | None, name: str) -> User:
        now = self.clock()
        if org_id is None or org_id == DEFAULT_ORG_ID:
            org_id = ensure_default_org(session, now)
        elif session.get(Organization, org_id) is None:
            raise NotFound(
                f"no organisation {org_id!r}; `bastion privacy orgs list` shows them", param="org_id"
            )
        row = User(id=new_user_id(), org_id=org_id, name=name[:200], training_opt_out=False, created_at=now)
        session.add(row)
        session.flush()
        return row

    def user(self, user_id: str) -> UserInfo:
        """One user; NotFound if there is none."""
        with self.db.session() as session:
            row = session.get(User, user_id)
            if row is None:
                raise NotFound(f"no user {user_id!r}", param="user_id")
            return _user(row)

    def list_users(self, org_id: str | None = None) -> list[UserInfo]:
        """Accounts (not end users), oldest first, optionally of one organisation."""
        query = select(User).where(User.parent_id.is_(None)).order_by(User.created_at)
        if org_id is not None:
            query = query.where(User.org_id == org_id)
        with self.db.session() as session:
            return [_user(r) for r in session.scalars(query)]

    def user_for_key(self, key_id: str) -> UserInfo:
        """The user a key belongs to. A key without one (or a synthetic principal such as auth-off) gets
        a user of its own, created now."""
        with self.db.session() as session:
            key = session.get(ApiKey, key_id)
            if key is not None and key.user_id is not None:
                row = session.get(User, key.user_id)
                if row is not None:
                    return _user(row)
            if key is None:  # a principal without a key row: one user per principal, by a stable hash
                marker = "principal:" + key_id
                found = session.scalars(
                    select(User).where(User.parent_id.is_(None), User.external_hash == marker[:64])
                ).first()
                if found is not None:
                    return _user(found)
                row = self._create_user(session, None, key_id)
                row.external_hash = marker[:64]
                return _user(row)
            row = self._create_user(session, None, key.name)
            key.user_id = row.id
            return _user(row)

    def end_user(self, parent_id: str, external_hash: str) -> UserInfo:
        """The end user of account `parent_id` known by `external_hash`, created on first sight."""
        for _attempt in range(3):
            with self.db.session() as session:
                query = select(User).where(User.parent_id == parent_id, User.external_hash == external_hash)
                found = session.scalars(query).first()
                if found is not None:
                    return _user(found)
            try:
                with self.db.session() as session:
                    parent = session.get(User, parent_id)
                    if parent is None:
                        raise NotFound(f"no user {parent_id!r}", param="user_id")
                    row = User(
                        id=new_user_id(),
                        org_id=parent.org_id,
                        parent_id=parent_id,
                        external_hash=external_hash,
                        name="",
                        training_opt_out=False,
                        created_at=self.clock(),
                    )
                    session.add(row)
                return _user(row)
            except IntegrityError:  # created at the same moment by another request: read it
                continue
        raise NotFound(f"could not create an end user of {parent_id!r}")

    def find_end_user(self, parent_id: str, external_hash: str) -> UserInfo | None:
        """The end user if Bastion has seen it, else None (nothing is created)."""
        with self.db.session() as session:
            query = select(User).where(User.parent_id == parent_id, User.external_hash == external_hash)
            found = session.scalars(query).first()
            return _user(found) if found is not None else None

    def set_user_opt_out(self, user_id: str, value: bool) -> UserInfo:
        """Set a user's own training opt-out flag."""
        with self.db.session() as session:
            row = session.get(User, user_id)
            if row is None:
                raise NotFound(f"no user {user_id!r}", param="user_id")
            row.training_opt_out = value
            return _user(row)

    def effective_opt_out(self, user_id: str) -> bool:
        """The opt-out in force: the user's own flag, its parent account's, or its organisation's."""
        with self.db.session() as session:
            row = session.get(User, user_id)
            if row is None:
                return True  # unknown: never train on it
            if row.training_opt_out:
                return True
            if row.parent_id is not None:
                parent = session.get(User, row.parent_id)
                if parent is None or parent.training_opt_out:
                    return True
            org = session.get(Organization, row.org_id)
            return org is None or org.training_opt_out
