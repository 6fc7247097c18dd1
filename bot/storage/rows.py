"""Rows to domain objects and back, the same for SQLite and PostgreSQL.

JSON documents are stored as text exactly as written here (compact, non-ASCII kept), never as
JSON/JSONB, so a stored model content replays byte for byte (see bot/storage/schema.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import Approval, Session, SessionKey, Turn, TurnKind, TurnState

Row = Mapping[str, Any]


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _from_json(text: str | None) -> Any:
    return json.loads(text) if text else None


def upsert_insert(conn: AsyncConnection, table: Table) -> Insert:
    """An INSERT that can say ON CONFLICT: SQLite's and PostgreSQL's spell the clause alike,
    but each dialect has its own construct, chosen here by the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)  # type: ignore[no-any-return]


def session_from(row: Row) -> Session:
    return Session(
        id=row["id"],
        key=SessionKey(row["platform"], row["workspace"], row["channel"], row["thread"]),
        model=row["model"],
        aspect_ratio=row["aspect_ratio"],
        image_size=row["image_size"],
        head_turn_id=row["head_turn_id"],
        started_by=row["started_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def turn_from(row: Row) -> Turn:
    return Turn(
        id=row["id"],
        session_id=row["session_id"],
        parent_turn_id=row["parent_turn_id"],
        kind=TurnKind(row["kind"]),
        instruction=row["instruction"],
        author=row["author"],
        user_content=json.loads(row["user_content"]),
        state=TurnState(row["state"]),
        model=row["model"],
        aspect_ratio=row["aspect_ratio"],
        image_size=row["image_size"],
        created_at=row["created_at"],
        model_content=_from_json(row["model_content"]),
        version=row["version"],
        image_blob=row["image_blob"],
        image_mime=row["image_mime"],
        text_reply=row["text_reply"],
        reason=row["reason"],
        message=row["message"],
        usage=_from_json(row["usage"]),
        anchor_content=_from_json(row["anchor_content"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def approval_from(row: Row) -> Approval:
    return Approval(row["turn_id"], row["approved_by"], row["approved_at"], row["withdrawn_by"],
                    row["withdrawn_at"])
