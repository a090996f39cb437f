"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from bot.db.engine import downgrade, make_engine, upgrade
from bot.db.models import SQLModel

EXPECTED_TABLES = {
    "users", "follows", "spaces", "participants", "speak_requests", "invitations", "reminders",
    "tip_jars", "reactions", "message_refs", "announcements", "audit_log", "sync_state",
    "handled_events", "room_joins", "apscheduler_jobs", "space_files",
}


def _diff(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, SQLModel.metadata)


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert EXPECTED_TABLES <= tables
    assert "alembic_version" in tables
    assert _diff(engine) == []
    engine.dispose()


def test_downgrade_to_nothing_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_upgrade_twice_is_harmless(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1


def test_follower_count_uses_the_followee_index(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(engine)
    with engine.connect() as conn:
        plan = conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM follows WHERE followee_id = '@a:b'")).all()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "ix_follows_followee" in detail, detail
    assert "SCAN follows" not in detail.replace("USING COVERING INDEX", "")


@pytest.mark.postgres
def test_postgres_follower_count_plan_uses_index(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plan = conn.execute(text(
            "EXPLAIN SELECT count(*) FROM follows WHERE followee_id = '@a:b'")).all()
    assert "ix_follows_followee" in " ".join(r[0] for r in plan)
    engine.dispose()


def test_old_handled_event_ids_are_pruned(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta

    from bot.db import models as m
    from bot.db.engine import session_scope
    from bot.db.store import Store

    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(engine)
    store = Store(engine)
    assert store.claim_event("$new")
    with session_scope(engine) as s:
        s.add(m.HandledEvent(event_id="$old", handled_at=datetime.now(UTC) - timedelta(days=40)))
    assert store.prune_handled(datetime.now(UTC) - timedelta(days=30)) == 1
    assert not store.claim_event("$new")  # the recent one is still remembered
    assert store.claim_event("$old")
