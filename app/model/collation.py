"""MySQL's byte-exact collation: which one this server has (identifiers, search tokens)."""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

# Binary collations that also count trailing spaces ("cid" and "cid " differ): MariaDB's
# nopad_bin, MySQL 8's 0900_bin; plain utf8mb4_bin (PAD SPACE) only where neither exists.
_EXACT_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


async def exact_collation(connection: BaseDBAsyncClient) -> str:
    rows = await connection.execute_query_dict(
        "SELECT collation_name AS name FROM information_schema.collations "
        "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin', 'utf8mb4_bin')")
    present = {r["name"] for r in rows}
    return next(c for c in _EXACT_COLLATIONS if c in present)
