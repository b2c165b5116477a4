"""Schema step "groups": a group may be private (`im_community.is_private`) and each membership
has a role (`im_membership.role`: member, admin, owner). Every group stored before is public,
its owner's membership becomes the owner's (and an owner who somehow was no member becomes
one), everybody else stays a member.

The step must leave exactly the schema a fresh database gets (tests/test_upgrade.py compares
them). Its DDL is written out as Tortoise generates it for the models of this step (a step is a
snapshot: later model changes must not change what it does). On SQLite, whose ALTER TABLE
would leave a differently spelled definition, both tables are rebuilt: their rows are set aside
in temporary tables first and the old tables dropped child first, because with foreign keys on,
dropping a group table that a membership table still references would delete the memberships
(ON DELETE CASCADE). MySQL normalises what it shows, so there the columns are added in place, at
the position a fresh table has them. Every part is skipped when already there (a fresh
database, or a MySQL step run again after a failure).
"""

from __future__ import annotations

from collections.abc import Callable

from tortoise.backends.base.client import BaseDBAsyncClient

ROLE_OWNER = 2  # app/model/tables.py's value at this step

_SQLITE_COMMUNITY = """CREATE TABLE IF NOT EXISTS "im_community" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(40) NOT NULL UNIQUE,
    "icon" VARCHAR(255) NOT NULL,
    "memo" VARCHAR(140) NOT NULL,
    "cate" INT NOT NULL,
    "created_ms" BIGINT NOT NULL,
    "is_private" INT NOT NULL,
    "owner_id" BIGINT NOT NULL REFERENCES "im_user" ("id") ON DELETE CASCADE
)"""
_SQLITE_MEMBERSHIP = """CREATE TABLE IF NOT EXISTS "im_membership" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "created_ms" BIGINT NOT NULL,
    "role" SMALLINT NOT NULL,
    "community_id" BIGINT NOT NULL REFERENCES "im_community" ("id") ON DELETE CASCADE,
    "user_id" BIGINT NOT NULL REFERENCES "im_user" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_im_membersh_communi_e310ad" UNIQUE ("community_id", "user_id")
)"""
_COMMUNITY_COLUMNS = "id, name, icon, memo, cate, created_ms, owner_id"
_MEMBERSHIP_COLUMNS = "id, created_ms, community_id, user_id"

# The owner's membership is the owner's; an owner with no membership gets one.
_OWNERS = (f"UPDATE im_membership SET role = {ROLE_OWNER} WHERE EXISTS (SELECT 1 FROM "
           "im_community c WHERE c.id = im_membership.community_id "
           "AND c.owner_id = im_membership.user_id)")
_MISSING_OWNERS = (
    f"INSERT INTO im_membership (created_ms, role, community_id, user_id) "
    f"SELECT c.created_ms, {ROLE_OWNER}, c.id, c.owner_id FROM im_community c WHERE NOT EXISTS "
    "(SELECT 1 FROM im_membership m WHERE m.community_id = c.id AND m.user_id = c.owner_id)")


async def _columns(connection: BaseDBAsyncClient, table: str) -> set[str]:
    if connection.capabilities.dialect == "sqlite":
        rows = await connection.execute_query_dict(f'PRAGMA table_info("{table}")')
        return {row["name"] for row in rows}
    rows = await connection.execute_query_dict(
        "SELECT column_name AS name FROM information_schema.columns "
        f"WHERE table_schema = DATABASE() AND table_name = '{table}'")
    return {row["name"] for row in rows}


async def _rebuild_sqlite(connection: BaseDBAsyncClient) -> None:
    # execute_query, not execute_script: Python's executescript commits first, and this must
    # stay inside the step's transaction (a failure leaves the previous schema).
    run = connection.execute_query
    await run(f"CREATE TEMP TABLE step_community AS SELECT {_COMMUNITY_COLUMNS} FROM im_community")
    await run(f"CREATE TEMP TABLE step_membership AS SELECT {_MEMBERSHIP_COLUMNS} "
              "FROM im_membership")
    await run('DROP TABLE "im_membership"')  # the child first: nothing cascades
    await run('DROP TABLE "im_community"')
    await run(_SQLITE_COMMUNITY)
    await run(_SQLITE_MEMBERSHIP)
    await run(f"INSERT INTO im_community ({_COMMUNITY_COLUMNS}, is_private) "
              f"SELECT {_COMMUNITY_COLUMNS}, 0 FROM temp.step_community")
    await run(f"INSERT INTO im_membership ({_MEMBERSHIP_COLUMNS}, role) "
              f"SELECT {_MEMBERSHIP_COLUMNS}, 0 FROM temp.step_membership")
    await run("DROP TABLE temp.step_community")
    await run("DROP TABLE temp.step_membership")


async def _alter_mysql(connection: BaseDBAsyncClient) -> None:
    if "is_private" not in await _columns(connection, "im_community"):
        await connection.execute_script(
            "ALTER TABLE `im_community` ADD COLUMN `is_private` BOOL NOT NULL AFTER `created_ms`")
    if "role" not in await _columns(connection, "im_membership"):
        await connection.execute_script(
            "ALTER TABLE `im_membership` ADD COLUMN `role` SMALLINT NOT NULL AFTER `created_ms`")


async def roles_and_private_groups(connection: BaseDBAsyncClient,
                                   progress: Callable[[str], None]) -> None:
    sqlite = connection.capabilities.dialect == "sqlite"
    if sqlite and "role" in await _columns(connection, "im_membership"):
        return  # a fresh database: the models made it so
    rows = await connection.execute_query_dict("SELECT COUNT(*) AS n FROM im_membership")
    progress(f"  im_community, im_membership: private groups and roles ({rows[0]['n']} "
             "memberships)")
    if sqlite:
        await _rebuild_sqlite(connection)
    else:
        await _alter_mysql(connection)
    await connection.execute_query(_OWNERS)
    await connection.execute_query(_MISSING_OWNERS)
