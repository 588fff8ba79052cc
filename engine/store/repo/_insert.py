"""What the repository modules share: INSERT ... ON CONFLICT on either dialect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, inspect
from sqlalchemy.dialects.postgresql import Insert as PGInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def dialect_insert(session: Session) -> Callable[[Any], PGInsert | SQLiteInsert]:
    """The dialect's INSERT (both have ON CONFLICT, which the generic one lacks)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


#: insert_ignore's statements, one per dialect, table and conflict keys: built once, the values
#: travel as parameters (so the compiled form is reused).
_IGNORING: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def insert_ignore(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: safe when many requests create the same row at once."""
    dialect = session.get_bind().dialect.name
    key = (dialect, model.__name__, tuple(keys))
    statement = _IGNORING.get(key)
    if statement is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = cast(Table, inspect(model).local_table)
        statement = _IGNORING[key] = insert(table).on_conflict_do_nothing(index_elements=keys)
    session.execute(statement, values)
