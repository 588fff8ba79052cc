"""Migrations: upgrade from empty, downgrade to base and up again, and models == migrations."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from engine.store.db import Database
from engine.store.migrate import downgrade, upgrade
from engine.store.models import Base
from tests.conftest import PG_ADMIN_URL, require


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require("postgres")
    import psycopg

    name = f"imagine_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        return set(inspect(db.sync_engine).get_table_names()) - {"alembic_version"}
    finally:
        db.sync_engine.dispose()


def _diff(url: str) -> list:
    db = Database(url)
    try:
        with db.sync_engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        db.sync_engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url):
    """The schema comes up from empty, goes back to nothing, and comes up again."""
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == set(Base.metadata.tables)
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == set()
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == set(Base.metadata.tables)


def test_models_match_migrations(empty_database_url):
    """Autogenerate finds nothing to do: the models and the migrations agree."""
    upgrade(empty_database_url)
    assert _diff(empty_database_url) == []
