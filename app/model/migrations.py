"""Schema versions and upgrades.

The database records the version of its schema in `im_schema` (one row). Opening it:
- an empty database gets the current schema (Tortoise's tables, then what the models cannot
  say, such as MySQL collations) and is stamped with SCHEMA_VERSION;
- an older one is brought forward one step at a time, each step recorded as it completes, a
  SQLite file backed up first (`<file>.schema-<N>.bak`), with a progress line per step;
- a newer one is refused, naming both versions, so an old binary never writes to a schema it does
  not know.

Release 0.1.0 had no `im_schema`: a database with imchat's tables and no version is schema 1.

Why not aerich or Tortoise's own migrations: both record applied migrations by name and
generate DDL from model diffs. imchat's first step is MySQL-only DDL the models cannot express
(byte-exact collations), every 0.1.0 database in the field has no migration history to fake, and
the one-file binary would have to carry a migrations package for their loaders to find. A list
of plain async steps, each written for both engines and tested by upgrading the 0.1.0 fixtures
(tests/test_upgrade.py), is smaller than that and checks the same things.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from app.model.backup import backup_sqlite
from app.model.collation import exact_collation
from app.settings import Settings

log = logging.getLogger("imchat.db")

SCHEMA_VERSION = 12
# The release that introduced each schema version, for messages that name both sides.
RELEASE_OF_SCHEMA = {1: "0.1.0", **{version: "0.2.0" for version in range(2, SCHEMA_VERSION + 1)}}

Progress = Callable[[str], None]


class SchemaError(Exception):
    """The database cannot be used by this imchat (newer schema, or a failed upgrade)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One upgrade: from `version - 1` to `version`."""

    version: int
    title: str
    run: Callable[[BaseDBAsyncClient, Progress], Awaitable[None]]


# Columns that identify something and must compare byte for byte. MySQL's default collations
# ignore case and accents, so "cidA" and "cida" (or "àlice" and "alice") would be one key.
_EXACT_COLUMNS = (
    ("im_message", "cid", "VARCHAR(64) NOT NULL"),
    ("im_user", "mobile", "VARCHAR(20) NOT NULL"),
    ("im_token", "token_hash", "VARCHAR(64) NOT NULL"),
    ("im_attachment", "sha256", "VARCHAR(64) NOT NULL"),
    ("im_attachment", "stored_name", "VARCHAR(100) NOT NULL"),
)


async def _exact_identifiers(connection: BaseDBAsyncClient, progress: Progress) -> None:
    if connection.capabilities.dialect != "mysql":
        return  # SQLite compares text byte for byte already
    collation = await exact_collation(connection)
    for table, column, definition in _EXACT_COLUMNS:
        rows = await _table_rows(connection, table)
        progress(f"  {table}.{column}: byte-exact comparison ({rows} rows)")
        await connection.execute_script(
            f"ALTER TABLE `{table}` MODIFY `{column}` {definition.replace(' NOT NULL', '')} "
            f"CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL")


async def _search_tokens(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Schema 3 made a table of tokens on both engines. Step 4 makes the index this imchat
    # uses (and on SQLite replaces that table): indexing every message here too would be
    # done twice on the way from 0.1.0.
    return None


# Schema 3's token tables on SQLite, replaced by an FTS5 table in schema 4.
_SQLITE_TOKEN_TABLES = ("im_search_token", "im_search_word", "im_search_state")


async def _search_index(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # The search index of every message stored so far (app/service/search/); the indexer of
    # the running server keeps it up to date from here on. SQLite: FTS5 instead of schema 3's
    # token table, built from scratch. MySQL: its tables; step 12 builds the index (it would
    # be built twice on the way from 0.1.0).
    from app.service.search import create_tables, reindex

    if connection.capabilities.dialect != "sqlite":
        await create_tables(connection)
        return
    for table in _SQLITE_TOKEN_TABLES:
        await connection.execute_query(f"DROP TABLE IF EXISTS {table}")
    await reindex(connection, progress)


async def _relations_and_mutes(_connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Two new tables (im_message_relation, im_mute), made from their models when the upgrade
    # ends (below: Tortoise cannot generate DDL inside a transaction on MySQL), with the same
    # DDL a fresh database gets. Stored messages need nothing: none is a reply or a change,
    # and each can be recalled, edited or reacted to as it is.
    progress("  new tables im_message_relation and im_mute (made from the models)")


async def _people_and_files(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Attachments' names and kinds and the quota index (app/model/people_schema.py); the
    # friend request and block tables are made from the models when the upgrade ends.
    from app.model.people_schema import attachment_names_and_kinds

    await attachment_names_and_kinds(connection, progress)


async def _group_roles(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Private groups and member roles (app/model/groups_schema.py): every group so far stays
    # public, its owner's membership becomes the owner's.
    from app.model.groups_schema import roles_and_private_groups

    await roles_and_private_groups(connection, progress)


async def _admin_and_audit(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # New tables only (im_admin, im_audit, im_directory_account), made from their models
    # exactly as a fresh database makes them: CREATE ... IF NOT EXISTS leaves the others
    # alone. (The admin role is a table, not a column on im_user: SQLite adds a NOT NULL
    # column only with a DEFAULT clause, which the fresh table would lack.)
    from tortoise.utils import get_schema_sql

    # The SQL comes from the client that began the transaction (MySQL's generator reads its
    # charset, which a transaction wrapper lacks) and runs in the step's transaction.
    sql = get_schema_sql(getattr(connection, "_parent", connection), safe=True)
    # One statement at a time: aiomysql inside a transaction fails a script of several.
    statements = [part.strip() for part in sql.split(";\n") if part.strip(" \n;")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already exists")
        for statement in statements:
            await connection.execute_script(statement)


async def _file_access(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Who may download a file (app/service/file_access.py) is looked up by link: indexes on
    # message links, avatars, icons and attachment names; the table of users who uploaded a
    # file already stored (im_upload) is made from its model when the upgrade ends.
    from app.model.file_access_schema import link_indexes

    await link_indexes(connection, progress)


async def _membership_index(connection: BaseDBAsyncClient, progress: Progress) -> None:
    from app.model.file_access_schema import membership_index

    await membership_index(connection, progress)


async def _search_after_changes(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # Until now an edit or a recall left the search index as it was: the messages changed so
    # far are indexed as they now read (app/service/search/indexer.py). Coming from before
    # schema 7 there is nothing to do: edits and recalls came with it (and its tables are made
    # when the upgrade ends).
    from app.service.search import index_changed_messages

    if "im_message_relation" in await _tables(connection):
        await index_changed_messages(connection, progress)


async def _search_blocks(connection: BaseDBAsyncClient, progress: Progress) -> None:
    # MySQL/MariaDB: the index becomes posting lists sealed per block of message ids
    # (app/service/search/mysql_blocks.py), the token table keeping edited texts only; built
    # again from every stored message. SQLite: nothing changes.
    from app.service.search import reindex

    if connection.capabilities.dialect != "sqlite":
        await reindex(connection, progress, from_scratch=True)


STEPS: tuple[Step, ...] = (
    Step(2, "identifiers compare byte for byte on MySQL (message cids, mobiles)",
         _exact_identifiers),
    Step(3, "message search: the token tables (made by step 4 since)", _search_tokens),
    Step(4, "message search: the index (SQLite: FTS5), with every stored message",
         _search_index),
    Step(5, "files and people: attachment names and kinds, the upload quota index, friend "
            "requests and blocks", _people_and_files),
    Step(6, "groups: private groups, and the roles owner, admin and member", _group_roles),
    Step(7, "replies, edits, recalls, reactions, mentions and mutes: their tables",
         _relations_and_mutes),
    Step(8, "administrators, the audit log and directory sign-in: new tables",
         _admin_and_audit),
    Step(9, "file downloads for those a file was shared with: link indexes, a table of "
            "uploaders", _file_access),
    Step(10, "catch-up: memberships by user (an index)", _membership_index),
    Step(11, "message search: messages edited or recalled so far, indexed as they now read",
         _search_after_changes),
    Step(12, "message search on MySQL/MariaDB: posting lists sealed per block of messages "
             "(about one row a message instead of ~40-80)", _search_blocks),
)
assert [s.version for s in STEPS] == list(range(2, SCHEMA_VERSION + 1))


async def _table_rows(connection: BaseDBAsyncClient, table: str) -> int:
    rows = await connection.execute_query_dict(f"SELECT COUNT(*) AS n FROM {table}")
    return int(rows[0]["n"])


async def _tables(connection: BaseDBAsyncClient) -> set[str]:
    if connection.capabilities.dialect == "sqlite":
        rows = await connection.execute_query_dict(
            "SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r["name"] for r in rows}
    rows = await connection.execute_query_dict(
        "SELECT table_name AS name FROM information_schema.tables "
        "WHERE table_schema = DATABASE()")
    return {r["name"] for r in rows}


async def schema_version(connection: BaseDBAsyncClient) -> int | None:
    """The version recorded in the database; 1 for 0.1.0's tables, None for an empty one."""
    tables = await _tables(connection)
    if "im_schema" in tables:
        rows = await connection.execute_query_dict("SELECT version FROM im_schema")
        if rows:
            return int(rows[0]["version"])
    return 1 if "im_user" in tables else None


async def _stamp(connection: BaseDBAsyncClient, version: int) -> None:
    with warnings.catch_warnings():  # MySQL warns that the table exists (aiomysql raises it)
        warnings.filterwarnings("ignore", message=".*already exists")
        await connection.execute_script("CREATE TABLE IF NOT EXISTS im_schema "
                                        "(id INT NOT NULL PRIMARY KEY, version INT NOT NULL)")
    await connection.execute_script("DELETE FROM im_schema")
    await connection.execute_query(
        f"INSERT INTO im_schema (id, version) VALUES (1, {int(version)})")


def _describe(version: int) -> str:
    release = RELEASE_OF_SCHEMA.get(version)
    return f"schema {version}" + (f" (imchat {release})" if release else " (a newer imchat)")


def _backup_sqlite(settings: Settings, version: int) -> Path:
    target = settings.sqlite_path.with_name(f"{settings.sqlite_path.name}.schema-{version}.bak")
    counter = 1
    while target.exists():
        counter += 1
        target = target.with_name(
            f"{settings.sqlite_path.name}.schema-{version}.{counter}.bak")
    backup_sqlite(settings, target)
    return target


async def prepare_schema(settings: Settings, connection_name: str,
                         progress: Progress | None = None) -> int:
    """Create, check or upgrade the schema of the open database; answer its version."""
    say = progress or log.info
    connection = Tortoise.get_connection(connection_name)
    version = await schema_version(connection)
    if version is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*already exists")
            await Tortoise.generate_schemas(safe=True)
        for step in STEPS:
            await step.run(connection, lambda _line: None)
        await _stamp(connection, SCHEMA_VERSION)
        say(f"created a new database at schema {SCHEMA_VERSION}")
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has {_describe(version)}, but this imchat "
            f"{__import__('app').__version__} knows schema {SCHEMA_VERSION} at most; install "
            "the newer imchat again, or restore a backup made before the upgrade")
    if version == SCHEMA_VERSION:
        return version
    if settings.database.engine == "sqlite":
        say(f"backing up the database to {_backup_sqlite(settings, version)}")
    say(f"upgrading the database from {_describe(version)} to {_describe(SCHEMA_VERSION)}")
    for step in STEPS:
        if step.version <= version:
            continue
        say(f"step {step.version - 1} -> {step.version}: {step.title}")
        try:
            # SQLite runs DDL inside the transaction: a failed step leaves the previous schema.
            # MySQL commits each ALTER by itself; its steps are written to be re-runnable.
            async with in_transaction(connection_name) as transaction:
                await step.run(transaction, say)
                await _stamp(transaction, step.version)
        except Exception as error:
            raise SchemaError(f"upgrading to schema {step.version} failed: {error}; the "
                              f"database stays at schema {step.version - 1}") from error
    # Tables a step did not create itself (friend requests, blocks; step 6's relations and
    # mutes) come from the models here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already exists")
        await Tortoise.generate_schemas(safe=True)
    say(f"database upgraded to schema {SCHEMA_VERSION}")
    return SCHEMA_VERSION
