from sqlalchemy import inspect

from bastion.db.migrate import current_revision
from bastion.db.session import Database


def test_upgrade_creates_schema_and_is_idempotent(database: Database) -> None:
    assert current_revision(database.engine) == "0001"
    database.upgrade()
    columns = {c["name"] for c in inspect(database.engine).get_columns("api_keys")}
    assert {"id", "role", "key_hash", "prefix", "revoked_at"} <= columns


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()
