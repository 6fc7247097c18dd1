"""Alembic's entry point for threadedit's store (SQLite or PostgreSQL).

Run from code, not the `alembic` command: `bot.storage.migrate.upgrade(url)` hands over an open
connection in `config.attributes["connection"]`, already in the transaction it commits (and, on
SQLite, with foreign keys off so a batch table copy cannot cascade deletes). To run the `alembic`
command line (e.g. `revision --autogenerate`), set `sqlalchemy.url` with `-x url=...`:
    .venv/bin/alembic -c migrations/alembic.ini -x url=sqlite+aiosqlite:////tmp/x.sqlite3 ...
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from bot.storage.schema import include_name, metadata

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name,
        # SQLite can ALTER almost nothing: batch mode copies a table into its new shape.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=config.attributes.get("on_version_apply", []),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    from bot.storage.migrate import migration_connection

    async with migration_connection(url) as conn:
        await conn.run_sync(run_migrations)


def _url() -> str:
    url: Any = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url")
    if not url:
        raise SystemExit("Give the database: alembic -x url=sqlite+aiosqlite:///path ...")
    return str(url)


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    asyncio.run(_run_with_own_engine(_url()))
