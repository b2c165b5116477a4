"""Answering a search: candidates from the engine's index in the caller's readable
conversations (app/service/access.py's rule), each checked again on the stored message (the
rule, and the query's text in order: the index finds candidates, the text decides), exact
phrase matches first, newest first, within a row and a time budget per query. When a budget
runs out the answer says `more` and where to go on (`next_before`)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tortoise import Tortoise

from app.model import message_store
from app.model.database import connection_name, fetch_all
from app.service import access, messages
from app.service.access import Readable
from app.service.search import mysql_index, sqlite_index
from app.service.search.text import Query, match_of
from app.util.errors import Refused

Found = tuple[bool, dict[str, Any], list[tuple[int, int]]]


@dataclasses.dataclass(frozen=True)
class Budget:
    candidates: int  # message rows checked in Python per query
    seconds: float


@dataclasses.dataclass
class _Scan:
    """Where a search is: the next candidates are below `cursor`."""

    cursor: int
    deadline: float
    checked: int = 0
    more: bool = False


async def _candidates(readable: Readable, query: Query, scan: _Scan, window: int) -> list[int]:
    left_ms = int((scan.deadline - time.monotonic()) * 1000)
    sqlite = Tortoise.get_connection(connection_name()).capabilities.dialect == "sqlite"
    index = sqlite_index if sqlite else mysql_index
    return await index.candidates(readable, query, scan.cursor, window, left_ms)


async def _check(ids: list[int], readable: Readable, query: Query, scan: _Scan,
                 found: list[Found], limit: int) -> None:
    """The candidates' messages, newest first, until `limit` are found: each must be readable
    (also against an index left stale by a restored or copied database) and hold the query."""
    ids = list(dict.fromkeys(ids))  # MySQL's candidates may repeat an id
    # Read back as many as could still be found, then twice as many each time: most candidates
    # hold the query, and reading rows is most of a search's time on MySQL.
    start, size = 0, max(limit - len(found), 10)
    while start < len(ids):
        chunk = ids[start:start + size]
        rows = await fetch_all(f"SELECT {message_store.SELECT} FROM im_message "
                               f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        by_id = {int(r["id"]): r for r in rows}
        for message_id in chunk:
            row = by_id.get(message_id)
            scan.cursor = message_id
            scan.checked += 1
            if row is None or not readable.allows(row):
                continue
            matched = match_of(row["content"], query)
            if matched is not None:
                found.append((matched[0], row, matched[1]))
                if len(found) >= limit:
                    return
        start, size = start + size, size * 2


async def _scan(readable: Readable, query: Query, scan: _Scan, limit: int,
                budget: Budget) -> list[Found]:
    found: list[Found] = []
    while True:
        window = min(max(limit * 4, 50), budget.candidates - scan.checked)
        try:
            ids = await _candidates(readable, query, scan, window)
        except mysql_index.BudgetSpent as spent:
            if spent.ids:
                await _check(spent.ids, readable, query, scan, found, limit)
            if scan.checked == 0:
                raise Refused("this search takes too long; add words or search in one "
                              "conversation") from None
            scan.more = True
            return found
        if ids:
            await _check(ids, readable, query, scan, found, limit)
        if len(ids) < window and len(found) < limit:
            return found  # the index has nothing more below the cursor
        # At `limit`: cheap and honest, there may be more below the cursor.
        if len(found) >= limit or scan.checked >= budget.candidates or (
                time.monotonic() >= scan.deadline):
            scan.more = True
            return found


async def search(user_id: int, query: Query, cmd: int | None, dstid: int | None,
                 before: int | None, limit: int, budget: Budget) -> dict[str, Any]:
    """Messages the user may read that match the query: exact phrase matches first, then the
    others, newest first within each. `more` says whether to ask again with `before`."""
    readable = await access.readable(user_id, cmd, dstid)
    scan = _Scan(cursor=before or 2**62, deadline=time.monotonic() + budget.seconds)
    found = await _scan(readable, query, scan, limit, budget)
    found.sort(key=lambda f: (not f[0], -int(f[1]["id"])))
    # As history shows them: a reply's rel/ref and quote, mentions, `edited`, reactions (the
    # text is the stored one: an edit rewrites it, so it is the current text).
    results = await messages.current_state([row for _, row, _ in found], 0, readable.allows)
    for message, (exact, _, spans) in zip(results, found, strict=True):
        message["match"] = [list(span) for span in spans]
        message["exact"] = exact
    return {"rows": results, "more": scan.more,
            "next_before": scan.cursor if scan.more else None}
