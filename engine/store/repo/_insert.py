"""What the repository modules share: INSERT ... ON CONFLICT on either dialect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.postgresql import Insert as PGInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def dialect_insert(session: Session) -> Callable[[Any], PGInsert | SQLiteInsert]:
    """The dialect's INSERT (both have ON CONFLICT, which the generic one lacks)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def insert_ignore(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: safe when many requests create the same row at once."""
    session.execute(dialect_insert(session)(model).values(**values).on_conflict_do_nothing(index_elements=keys))
