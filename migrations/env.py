"""Alembic environment: sync drivers, batch mode on SQLite, the models' metadata as target.

Run through `imagine-bot migrate` (or engine.store.migrate in code and tests). A caller may pass
an open connection in `config.attributes["connection"]`; otherwise the URL comes from the
alembic config or, failing that, from imagine-bot's settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from engine.store.db import Database
from engine.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from engine.config import get_settings

        url = get_settings().database_url
    database = Database(url)
    try:
        with database.sync_engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        database.sync_engine.dispose()


if context.is_offline_mode():
    raise SystemExit("imagine-bot migrations run online only: use `imagine-bot migrate`.")
run_migrations_online()
