from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.auth.keys import KeyStore, Role
from bastion.core.errors import InvalidRequest, NotFound
from bastion.core.records import Message
from bastion.db.accounts import Accounts
from bastion.db.session import Database
from bastion.privacy.conversations import ConversationStore, StoringSink
from bastion.privacy.crypto import DataKeyShredded, KeyRing
from bastion.privacy.settings import PrivacySettings

from .conftest import Clock, scan_database

SECRET = "my bank PIN is 4815162342"
ANSWER = "Please never share your PIN, zebracorn."


def _conversation(store: ConversationStore, owner: str = "alice", *, temporary: bool = False) -> str:
    info = store.create(owner, "echo", key_id="key1", temporary=temporary)
    store.append(
        info.id, owner, "user", SECRET, verdict={"action": "allow", "categories": [], "spans": ["x"]}
    )
    store.append(info.id, owner, "assistant", ANSWER)
    return info.id


def test_round_trip_and_no_plaintext_in_any_table(store: ConversationStore, database: Database) -> None:
    conversation_id = _conversation(store)
    read = store.read(conversation_id, "alice")
    assert [(m.role, m.content) for m in read.messages] == [("user", SECRET), ("assistant", ANSWER)]
    assert scan_database(database, SECRET, "4815162342", "zebracorn") == []
    assert scan_database(database, conversation_id)  # the scan does see what is there


def test_verdicts_keep_only_content_free_fields(store: ConversationStore, database: Database) -> None:
    conversation_id = _conversation(store)
    assert scan_database(database, conversation_id)
    assert not any(hit[1] == "verdict" for hit in scan_database(database, "spans"))


def test_owner_sees_only_their_own_and_delete_hides_at_once(store: ConversationStore) -> None:
    mine = _conversation(store, "alice")
    theirs = _conversation(store, "bob")
    assert [c.id for c in store.list("alice")] == [mine]
    with pytest.raises(NotFound):
        store.read(theirs, "alice")
    with pytest.raises(NotFound):
        store.delete(theirs, "alice")
    with pytest.raises(NotFound):
        store.append(theirs, "alice", "user", "hi")
    store.delete(mine, "alice")
    assert store.list("alice") == []
    with pytest.raises(NotFound):
        store.read(mine, "alice")
    with pytest.raises(NotFound):
        store.append(mine, "alice", "user", "more")
    assert [c.id for c in store.list("bob")] == [theirs]


def test_unknown_role_is_refused(store: ConversationStore) -> None:
    info = store.create("alice", "echo")
    with pytest.raises(InvalidRequest):
        store.append(info.id, "alice", "wizard", "hi")


def test_purge_is_not_early_is_on_time_and_leaves_no_residue(
    store: ConversationStore, database: Database, clock: Clock
) -> None:
    deleted = _conversation(store)
    kept = store.create("alice", "echo")
    store.append(kept.id, "alice", "user", "keep me, quokka")
    store.delete(deleted, "alice")
    clock.advance(days=30, seconds=-1)
    assert store.purge(clock()).conversations == 0
    assert scan_database(database, deleted)  # still there for safety review
    clock.advance(seconds=1)
    report = store.purge(clock())
    assert (report.conversations, report.messages) == (1, 2)
    assert scan_database(database, deleted, SECRET, "zebracorn") == []
    assert store.read(kept.id, "alice").messages[0].content == "keep me, quokka"


def test_shorter_retention_is_honoured(database: Database, keyring: KeyRing, clock: Clock) -> None:
    store = ConversationStore(database, keyring, PrivacySettings(retention_days=7), clock=clock)
    conversation_id = _conversation(store)
    store.delete(conversation_id, "alice")
    assert store.purge(clock.advance(days=6)).conversations == 0
    assert store.purge(clock.advance(days=1)).conversations == 1
    assert scan_database(database, conversation_id) == []


def test_retention_cannot_exceed_thirty_days() -> None:
    with pytest.raises(ValidationError):
        PrivacySettings(retention_days=31)
    with pytest.raises(ValidationError):
        PrivacySettings(temporary_days=45)


def test_temporary_chats_are_purged_thirty_days_after_their_last_message(
    store: ConversationStore, database: Database, clock: Clock
) -> None:
    temporary = _conversation(store, temporary=True)
    assert store.list("alice")[0].training_opt_out  # never used for training
    clock.advance(days=20)
    store.append(temporary, "alice", "user", "a later message, okapi")
    assert store.purge(clock.advance(days=29)).conversations == 0
    assert store.purge(clock.advance(days=1)).conversations == 1
    assert scan_database(database, temporary, "okapi", SECRET) == []


def test_shredding_the_owner_makes_conversations_unreadable(
    store: ConversationStore, keyring: KeyRing
) -> None:
    conversation_id = _conversation(store)
    keyring.shred("alice")
    with pytest.raises(DataKeyShredded):
        store.read(conversation_id, "alice")


@dataclass
class FakeExchange:
    request_id: str = "chatcmpl-1"
    key_id: str = "key1"
    user: str | None = "end-user-7"
    model: str = "echo"
    policy: str = "default"
    messages: list[Message] = field(default_factory=lambda: [Message(role="user", content=SECRET)])
    answers: list[str | None] = field(default_factory=lambda: [ANSWER])
    input: dict[str, Any] = field(default_factory=lambda: {"action": "allow", "categories": []})
    output: dict[str, Any] | None = None
    store: bool = True


def test_gateway_sink_stores_exchanges_encrypted(store: ConversationStore, database: Database) -> None:
    accounts = Accounts(database)
    _, key = KeyStore(database).create(Role.CLIENT, "app")
    sink = StoringSink(store, accounts, background=False)
    sink.record(FakeExchange(key_id=key.id))
    sink.record(FakeExchange(key_id=key.id, store=False, request_id="chatcmpl-2"))
    owner = sink.owner_for(key.id, "end-user-7")
    assert owner is not None and owner.startswith("usr_")
    assert accounts.user(owner).parent_id == key.user_id  # the end user of the key's account
    owned = store.list(owner)
    assert sorted(c.temporary for c in owned) == [False, True]
    read = store.read(owned[0].id, owner)
    assert [m.content for m in read.messages] == [SECRET, ANSWER]
    assert store.list(key.user_id or "") == []  # the account's own conversations are apart
    assert scan_database(database, SECRET, "zebracorn", "end-user-7") == []


def test_a_follow_up_request_continues_the_conversation(store: ConversationStore, database: Database) -> None:
    accounts = Accounts(database)
    _, key = KeyStore(database).create(Role.CLIENT, "app")
    sink = StoringSink(store, accounts, background=False)
    first = [Message(role="user", content=SECRET)]
    sink.record(FakeExchange(key_id=key.id, user=None, messages=first))
    follow = [*first, Message(role="assistant", content=ANSWER), Message(role="user", content="and then?")]
    sink.record(FakeExchange(key_id=key.id, user=None, messages=follow, answers=["the end"]))
    sink.record(FakeExchange(key_id=key.id, user=None, messages=[Message(role="user", content="new")]))
    owner = key.user_id or ""
    conversations = store.list(owner)
    assert len(conversations) == 2
    contents = sorted([m.content for m in store.read(c.id, owner).messages] for c in conversations)
    assert contents == [[SECRET, ANSWER, "and then?", "the end"], ["new", ANSWER]]


def test_the_background_sink_stores_a_batch_in_order(store: ConversationStore, database: Database) -> None:
    """Exchanges queued together are stored together: a follow-up in the same batch continues the
    conversation its predecessor started, and every usage event is linked to its conversation."""
    from bastion.db.tables import UsageEvent
    from bastion.gateway.usage import UsageRecord, UsageRecorder

    accounts = Accounts(database)
    _, key = KeyStore(database).create(Role.CLIENT, "app")
    usage = UsageRecorder(database)
    sink = StoringSink(store, accounts, usage_flush=usage.flush, linger_s=0.2)
    first = [Message(role="user", content=SECRET)]
    follow = [*first, Message(role="assistant", content=ANSWER), Message(role="user", content="and then?")]
    exchanges = [
        FakeExchange(request_id="r1", key_id=key.id, user=None, messages=first),
        FakeExchange(request_id="r2", key_id=key.id, user=None, messages=follow, answers=["the end"]),
        FakeExchange(request_id="r3", key_id=key.id, user="end-user-7"),
        FakeExchange(
            request_id="r4", key_id=key.id, user=None, messages=[Message(role="user", content="new")]
        ),
    ]
    for exchange in exchanges:
        usage.record(
            UsageRecord(exchange.request_id, key.id, exchange.user, "echo", "echo", "default", False)
        )
        sink.record(exchange)
    sink.flush()
    owner = key.user_id or ""
    contents = sorted([m.content for m in store.read(c.id, owner).messages] for c in store.list(owner))
    assert contents == [[SECRET, ANSWER, "and then?", "the end"], ["new", ANSWER]]
    end_user = sink.owner_for(key.id, "end-user-7", create=False)
    assert end_user is not None and len(store.list(end_user)) == 1
    with database.session() as session:
        links = {e.id: e.conversation_id for e in session.query(UsageEvent)}
    assert links["r1"] == links["r2"] and len({links["r1"], links["r3"], links["r4"]}) == 3
    assert None not in links.values()
    sink.close()
    usage.close()


def test_a_failing_exchange_does_not_lose_the_rest_of_its_batch(
    store: ConversationStore, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = Accounts(database)
    _, key = KeyStore(database).create(Role.CLIENT, "app")
    sink = StoringSink(store, accounts, linger_s=0.2)
    bad = [Message(role="user", content="x")]
    sink.record(FakeExchange(request_id="ok1", key_id=key.id, user=None))
    sink.record(FakeExchange(request_id="bad", key_id="key_missing_owner", user=None, messages=bad))
    broken = FakeExchange(
        request_id="broken", key_id=key.id, user=None, messages=[Message(role="user", content="y")]
    )
    broken.answers = ["z"]
    broken.messages[0].__dict__["role"] = "wizard"  # not a stored role: the batch's transaction fails
    sink.record(broken)
    sink.record(
        FakeExchange(
            request_id="ok2", key_id=key.id, user=None, messages=[Message(role="user", content="fine")]
        )
    )
    sink.flush()
    sink.close()
    owner = key.user_id or ""
    stored = sorted(m.content for c in store.list(owner) for m in store.read(c.id, owner).messages)
    assert stored == sorted([SECRET, ANSWER, "fine", ANSWER])
    assert "storing them one by one" in caplog.text
    assert "could not store conversation of request broken" in caplog.text
