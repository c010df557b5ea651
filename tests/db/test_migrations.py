from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from bastion.db.migrate import alembic_config, current_revision
from bastion.db.session import Database
from bastion.db.tables import Base


def test_upgrade_reaches_head_and_is_idempotent(database: Database) -> None:
    head = ScriptDirectory.from_config(alembic_config(database.engine)).get_current_head()
    assert current_revision(database.engine) == head
    database.upgrade()
    assert current_revision(database.engine) == head
    columns = {c["name"] for c in inspect(database.engine).get_columns("api_keys")}
    assert {"id", "role", "key_hash", "prefix", "revoked_at"} <= columns


def test_migrations_match_the_tables(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()
