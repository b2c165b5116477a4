"""The message writer without a server: group commit, ids in submission order, exactly-once by
(cid, sender) across batches and within one, a bad message not sinking its batch, server-made
cids, and the publish barrier. On SQLite (the writer's own connection and thread) and MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.chat.wire import CMD_GROUP, CMD_SINGLE, SERVER_CID_PREFIX
from app.model.database import close_database, fetch_all, open_database
from app.model.message_writer import Draft, MessageWriter
from app.model.tables import now_ms


class Outcomes:
    """What the writer told each draft's sender, in the order it told them."""

    def __init__(self) -> None:
        self.done: list[tuple[str, dict[str, Any] | None, bool]] = []
        self.arrived = asyncio.Event()

    def __call__(self, draft: Draft, row: dict[str, Any] | None, duplicate: bool) -> None:
        self.done.append((draft.cid, row, duplicate))
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.done) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


@pytest.fixture
async def writer(settings) -> AsyncIterator[MessageWriter]:
    await open_database(settings)
    running = MessageWriter(max_batch=100)
    running.start()
    try:
        yield running
    finally:
        await running.stop()
        await close_database()


def _draft(outcomes: Outcomes, cid: str, sender: int = 1, content: str = "hi",
           cmd: int = CMD_SINGLE, dstid: int = 2) -> Draft:
    return Draft(cmd, sender, dstid, 1, content, "", "", "", 0, cid, now_ms(), outcomes)


async def _stored_count() -> int:
    return int((await fetch_all("SELECT COUNT(*) AS n FROM im_message"))[0]["n"])


async def test_a_burst_is_committed_in_few_batches_with_ids_in_submission_order(
        writer: MessageWriter) -> None:
    outcomes = Outcomes()
    for n in range(250):
        writer.submit(_draft(outcomes, f"c{n}", content=f"message {n}"))
    await outcomes.wait_for(250)
    assert [cid for cid, _, _ in outcomes.done] == [f"c{n}" for n in range(250)]
    ids = [row["id"] for _, row, _ in outcomes.done]
    assert ids == sorted(ids) and len(set(ids)) == 250
    assert all(not duplicate for _, _, duplicate in outcomes.done)
    # One batch is at most max_batch (100) drafts: 250 at once take 3 to a few commits.
    assert 3 <= writer.batches <= 10
    assert writer.written == 250 and await _stored_count() == 250
    first = outcomes.done[0][1]
    assert first is not None and first["content"] == "message 0"
    assert (first["cmd"], first["dst_user_id"], first["community_id"]) == (CMD_SINGLE, 2, None)


async def test_a_resend_answers_the_original_and_stores_nothing(writer: MessageWriter) -> None:
    outcomes = Outcomes()
    writer.submit(_draft(outcomes, "once", content="first"))
    await outcomes.wait_for(1)
    writer.submit(_draft(outcomes, "once", content="changed on the way"))
    await outcomes.wait_for(2)
    (_, original, first_dup), (_, again, second_dup) = outcomes.done
    assert (first_dup, second_dup) == (False, True)
    assert original is not None and again is not None
    assert again["id"] == original["id"] and again["content"] == "first"
    assert await _stored_count() == 1


async def test_the_same_cid_twice_in_one_batch_is_one_message(writer: MessageWriter) -> None:
    outcomes = Outcomes()
    for content in ("a", "b"):
        writer.submit(_draft(outcomes, "twin", content=content))
    # The same cid from another sender is another message.
    writer.submit(_draft(outcomes, "twin", sender=3, content="c"))
    await outcomes.wait_for(3)
    rows = {(cid, row["sender_id"], duplicate): row for cid, row, duplicate in outcomes.done
            if row is not None}
    assert set(rows) == {("twin", 1, False), ("twin", 1, True), ("twin", 3, False)}
    assert rows[("twin", 1, True)]["id"] == rows[("twin", 1, False)]["id"]
    assert rows[("twin", 1, True)]["content"] == "a"
    assert await _stored_count() == 2


async def test_a_bad_message_fails_alone_and_the_writer_lives_on(writer: MessageWriter) -> None:
    outcomes = Outcomes()
    writer.submit(_draft(outcomes, "good-1"))
    # A lone surrogate cannot be encoded for any database: this message fails, not its batch.
    writer.submit(_draft(outcomes, "bad", content="\ud800"))
    writer.submit(_draft(outcomes, "good-2", cmd=CMD_GROUP, dstid=9))
    await outcomes.wait_for(3)
    by_cid = {cid: row for cid, row, _ in outcomes.done}
    assert by_cid["bad"] is None
    assert by_cid["good-1"] is not None and by_cid["good-2"] is not None
    assert by_cid["good-2"]["community_id"] == 9
    writer.submit(_draft(outcomes, "after"))
    await outcomes.wait_for(4)
    assert outcomes.done[-1][1] is not None
    assert await _stored_count() == 3


async def test_server_made_cids_are_distinct_and_reserved(writer: MessageWriter) -> None:
    cids = {writer.new_cid() for _ in range(1000)}
    assert len(cids) == 1000 and all(c.startswith(SERVER_CID_PREFIX) for c in cids)
    outcomes = Outcomes()
    for cid in sorted(cids)[:50]:
        writer.submit(_draft(outcomes, cid))
    await outcomes.wait_for(50)
    assert await _stored_count() == 50


async def test_published_waits_for_the_batch_in_flight(writer: MessageWriter) -> None:
    """A catch-up that read a committed row waits here until its live copy has been handed to
    the senders' sessions (else it could arrive after the catch-up, as a duplicate)."""
    order: list[str] = []

    def handed(draft: Draft, row: dict[str, Any] | None, duplicate: bool) -> None:
        order.append("handed")

    writer.submit(_draft(handed, "x"))  # type: ignore[arg-type]
    for _ in range(100):  # until the writer task has taken the batch
        if not writer.backlog:
            break
        await asyncio.sleep(0)
    assert writer.backlog == 0
    await writer.published()
    order.append("published")
    assert order == ["handed", "published"]


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_a_large_batch_is_read_back_through_the_cid_index(settings) -> None:
    """A batch of hundreds of messages is read back by cid without reading the whole table:
    given an IN list longer than eq_range_index_dive_limit (200), MariaDB estimates from its
    statistics, and on a table of about a thousand messages it chose a full scan; a table that
    grew fast under load kept that plan, scanning ~150,000 rows a commit (bench/NOTES.md)."""
    from tortoise import Tortoise

    from app.model.database import connection_name

    await open_database(settings)
    running = MessageWriter(max_batch=500)
    try:
        connection = Tortoise.get_connection(connection_name())
        await connection.execute_many(
            "INSERT INTO im_message (cmd, sender_id, dst_user_id, community_id, cid, media, "
            "content, pic, url, memo, amount, created_ms) VALUES "
            "(10, 900001, 900002, NULL, %s, 1, 'older', '', '', '', 0, 1)",
            [(f"older-{n}",) for n in range(1000)])
        await connection.execute_query("ANALYZE TABLE im_message")

        async def rows_scanned() -> int:
            found = await connection.execute_query_dict(
                "SHOW GLOBAL STATUS LIKE 'Handler_read_rnd_next'")
            return int(found[0]["Value"])

        outcomes = Outcomes()
        before = await rows_scanned()
        for n in range(400):
            running.submit(_draft(outcomes, f"big-{n}", sender=3 + n % 7))
        running.start()
        await outcomes.wait_for(400)
        assert running.batches == 1 and running.written == 400
        assert await rows_scanned() - before < 1000
    finally:
        await running.stop()
        await close_database()
