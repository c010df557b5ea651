"""Privacy routes: the caller's conversations, `/v1/me` (opt-out, export), safety review, accounts.

Every route is guarded by the authorisation matrix (`bastion.auth.matrix`). Routes about "me" act on the
user the key belongs to; `?user=ID` acts on that account's end user `ID` (the `user` field of its chat
requests). Another user's conversation reads as a 404, exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from bastion.auth.matrix import Caller
from bastion.core.errors import InvalidRequest, NotFound
from bastion.privacy.conversations import ConversationInfo, StoredMessage
from bastion.privacy.schemas import (
    ConversationDeleted,
    ConversationList,
    ConversationOut,
    Me,
    MessageOut,
    OptOut,
    OptOutSet,
    OrgCreate,
    OrgOut,
    ReviewConversation,
    ReviewItem,
    ReviewList,
    UserCreate,
    UserDeleted,
    UserOut,
)
from bastion.privacy.service import Privacy

router = APIRouter(tags=["privacy"])
EndUser = Annotated[
    str | None,
    Query(max_length=256, description="An end user of your key (the `user` of your chat requests)."),
]


def privacy_of(request: Request) -> Privacy:
    """The app's privacy services (made by `create_app`)."""
    privacy: Privacy = request.app.state.privacy
    return privacy


def _out(
    privacy: Privacy, info: ConversationInfo, messages: list[StoredMessage] | None = None
) -> ConversationOut:
    purge_at = privacy.store.purge_due(info) if (info.temporary or info.deleted_at) else None
    return ConversationOut(
        id=info.id,
        model=info.model,
        created_at=info.created_at,
        updated_at=info.updated_at,
        temporary=info.temporary,
        training_opt_out=info.training_opt_out,
        purge_at=purge_at,
        messages=[MessageOut(**asdict(m)) for m in messages] if messages is not None else None,
    )


# -- the caller's conversations -----------------------------------------------------------------------


@router.get("/v1/conversations", response_model=ConversationList, response_model_exclude_none=True)
def list_conversations(request: Request, caller: Caller, user: EndUser = None) -> ConversationList:
    """Your stored conversations (not deleted), newest first."""
    privacy = privacy_of(request)
    owner = privacy.owner(caller, user)
    infos = privacy.store.list(owner) if owner is not None else []
    return ConversationList(data=[_out(privacy, i) for i in infos])


@router.get("/v1/conversations/{conversation_id}", response_model=ConversationOut)
def read_conversation(
    conversation_id: str, request: Request, caller: Caller, user: EndUser = None
) -> ConversationOut:
    """One of your conversations with its messages, decrypted."""
    privacy = privacy_of(request)
    owner = privacy.require_owner(caller, user)
    info = privacy.store.info(conversation_id, owner)
    return _out(privacy, info, privacy.store.messages(conversation_id, owner))


@router.delete("/v1/conversations/{conversation_id}", response_model=ConversationDeleted)
def delete_conversation(
    conversation_id: str, request: Request, caller: Caller, user: EndUser = None
) -> ConversationDeleted:
    """Delete one of your conversations: hidden at once everywhere, kept only for safety review during the
    retention window (at most 30 days), then purged."""
    privacy = privacy_of(request)
    owner = privacy.require_owner(caller, user)
    privacy.store.delete(conversation_id, owner, actor=caller.key_id)
    info = privacy.store.review_info(conversation_id)
    return ConversationDeleted(id=conversation_id, purge_at=privacy.store.purge_due(info))


# -- me -----------------------------------------------------------------------------------------------


@router.get("/v1/me", response_model=Me)
def me(request: Request, caller: Caller, user: EndUser = None) -> Me:
    """Who you are: your user, organisation and training opt-out."""
    privacy = privacy_of(request)
    owner = privacy.owner(caller, user, create=True)
    assert owner is not None
    info = privacy.accounts.user(owner)
    return Me(
        user_id=info.id,
        name=info.name,
        organization_id=info.org_id,
        end_user_of=info.parent_id,
        key_id=caller.key_id,
        role=caller.role.value,
        training_opt_out=OptOut(**privacy.opt_out_state(owner)),
    )


@router.get("/v1/me/export")
def export_me(request: Request, caller: Caller, user: EndUser = None) -> dict[str, Any]:
    """Everything stored about you in one JSON archive: account, keys, conversations (decrypted), usage
    events, training-export manifests and the audit events about you."""
    privacy = privacy_of(request)
    owner = privacy.require_owner(caller, user)
    return privacy.export_user(owner, actor=caller.key_id)


@router.delete("/v1/me", response_model=UserDeleted)
def delete_end_user(request: Request, caller: Caller, user: EndUser = None) -> UserDeleted:
    """Erase an end user of your key (`?user=ID`) now: conversations, data key (crypto-shredding) and
    record. Accounts are erased by an admin (`DELETE /v1/users/{id}`)."""
    if not user:
        raise InvalidRequest(
            "name the end user to erase with ?user=ID; an account is erased by an admin with "
            "DELETE /v1/users/{user_id}",
            param="user",
        )
    privacy = privacy_of(request)
    owner = privacy.require_owner(caller, user)
    return UserDeleted(**privacy.delete_user(owner, actor=caller.key_id))


@router.get("/v1/me/training-opt-out", response_model=OptOut)
def get_opt_out(request: Request, caller: Caller, user: EndUser = None) -> OptOut:
    """Your training opt-out: your own flag, your organisation's and the one in force."""
    privacy = privacy_of(request)
    owner = privacy.owner(caller, user, create=True)
    assert owner is not None
    return OptOut(**privacy.opt_out_state(owner))


@router.put("/v1/me/training-opt-out", response_model=OptOut)
def set_opt_out(body: OptOutSet, request: Request, caller: Caller, user: EndUser = None) -> OptOut:
    """Opt out of (or back in to) training. Conversations snapshot the flag when they start."""
    privacy = privacy_of(request)
    owner = privacy.owner(caller, user, create=True)
    assert owner is not None
    return OptOut(**privacy.set_opt_out(owner, body.opt_out, actor=caller.key_id))


# -- safety review ------------------------------------------------------------------------------------


@router.get("/v1/review/conversations", response_model=ReviewList)
def review_queue(request: Request, _caller: Caller) -> ReviewList:
    """Deleted conversations inside the retention window, with when each will be purged (no content)."""
    privacy = privacy_of(request)
    now = privacy.clock()
    items = []
    for info in privacy.store.review_queue():
        due = privacy.store.purge_due(info)
        if info.deleted_at is not None and due > now:
            items.append(
                ReviewItem(
                    id=info.id,
                    model=info.model,
                    deleted_at=info.deleted_at,
                    purge_at=due,
                    temporary=info.temporary,
                )
            )
    return ReviewList(retention_days=privacy.settings.privacy.retention_days, data=items)


@router.get("/v1/review/conversations/{conversation_id}", response_model=ReviewConversation)
def review_read(conversation_id: str, request: Request, caller: Caller) -> ReviewConversation:
    """Read a deleted conversation for safety review; every read is an audit event."""
    privacy = privacy_of(request)
    info, messages = privacy.store.review_read(conversation_id, caller.key_id)
    out = _out(privacy, info, messages)
    assert info.deleted_at is not None
    return ReviewConversation(**out.model_dump(), deleted_at=info.deleted_at)


# -- organisations and users (admin) ------------------------------------------------------------------


@router.get("/v1/organizations", response_model=list[OrgOut])
def list_orgs(request: Request, _caller: Caller) -> list[OrgOut]:
    """Every organisation."""
    return [OrgOut(**asdict(o)) for o in privacy_of(request).accounts.list_orgs()]


@router.post("/v1/organizations", response_model=OrgOut, status_code=201)
def create_org(body: OrgCreate, request: Request, caller: Caller) -> OrgOut:
    """A new organisation; `enterprise` ones are opted out of training unless told otherwise."""
    privacy = privacy_of(request)
    org = privacy.accounts.create_org(body.name, body.plan, body.training_opt_out)
    privacy.audit.append(
        caller.key_id,
        "org.create",
        org.id,
        details={"plan": org.plan, "training_opt_out": org.training_opt_out},
    )
    return OrgOut(**asdict(org))


@router.put("/v1/organizations/{org_id}/training-opt-out", response_model=OrgOut)
def set_org_opt_out(org_id: str, body: OptOutSet, request: Request, caller: Caller) -> OrgOut:
    """Opt an organisation out of (or in to) training: it applies to all its users."""
    privacy = privacy_of(request)
    privacy.set_org_opt_out(org_id, body.opt_out, actor=caller.key_id)
    return OrgOut(**asdict(privacy.accounts.org(org_id)))


@router.get("/v1/users", response_model=list[UserOut])
def list_users(request: Request, _caller: Caller, org_id: str | None = None) -> list[UserOut]:
    """Accounts (not end users), optionally of one organisation."""
    return [UserOut(**_user(u)) for u in privacy_of(request).accounts.list_users(org_id)]


@router.post("/v1/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, request: Request, caller: Caller) -> UserOut:
    """A new account in an organisation; give it keys with `POST /v1/keys {"user_id": ...}`."""
    privacy = privacy_of(request)
    info = privacy.accounts.create_user(body.org_id, body.name)
    privacy.audit.append(caller.key_id, "user.create", info.id, details={"org_id": info.org_id})
    return UserOut(**_user(info))


@router.delete("/v1/users/{user_id}", response_model=UserDeleted)
def delete_user(user_id: str, request: Request, caller: Caller) -> UserDeleted:
    """Erase an account and its end users now: conversations everywhere, keys revoked, data keys
    destroyed (crypto-shredding), records removed."""
    privacy = privacy_of(request)
    info = privacy.accounts.user(user_id)
    if info.parent_id is not None:
        raise NotFound(f"no account {user_id!r}", param="user_id")
    return UserDeleted(**privacy.delete_user(user_id, actor=caller.key_id))


def _user(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "org_id": info.org_id,
        "name": info.name,
        "training_opt_out": info.training_opt_out,
        "created_at": info.created_at,
    }
