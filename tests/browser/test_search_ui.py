"""Message search in the web client, in a real chromium against a real server: search every
conversation from the sidebar (results grouped by conversation, the match highlighted as text),
open a result (the conversation at that message, its neighbours loaded, then back to the
latest), and search within the open conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, Person, ServerBox
from tests.factories import befriend, close_all, make_group, register, send_texts
from tests.harness import make_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def web_settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path, "sqlite", chat={"messages_per_second": 1000})


async def test_search_everywhere_open_a_result_and_search_in_a_chat(web: ServerBox, browser: Any,
                                                                     shots: Path) -> None:
    server = web.server
    assert server is not None
    alice = await register(server, "Alice")
    bob = await register(server, "王小明")
    await befriend(alice, bob)
    group = await make_group(alice, "项目组", bob)
    before = await send_texts(server, bob, 10, alice.id, [f"早上好 {n}" for n in range(40)])
    [hit] = await send_texts(server, bob, 10, alice.id, ["明天的会议改到三点"])
    after = await send_texts(server, bob, 10, alice.id, [f"晚上好 {n}" for n in range(40)])
    [tagged] = await send_texts(server, bob, 10, alice.id, ["<b>会议</b> is not bold"])
    [group_hit] = await send_texts(server, bob, 11, group, ["Q3 预算会议纪要"])

    context = await browser.new_context(viewport=DESKTOP, locale="zh-CN")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    person = Person(page, web.base_url, alice.mobile, "Alice")
    await person.login()
    await person.wait_online()

    # The sidebar's box offers a message search; its results come grouped by conversation.
    await page.fill("[data-test=filter]", "会议")
    await page.click("[data-test=search-messages]")
    hits = page.locator("[data-test=search-hit]")
    await hits.nth(2).wait_for()
    assert await hits.count() == 3
    groups = page.locator(".search-group")
    assert await groups.count() == 2
    assert await groups.nth(0).get_attribute("data-conv") == f"11:{group}"  # newest first
    assert await groups.nth(1).locator("[data-test=search-hit]").count() == 2
    marks = await page.locator("[data-test=search-hit] mark").all_inner_texts()
    assert marks == ["会议", "会议", "会议"], marks
    # Markup in a message is shown as the text it is.
    tagged_hit = page.locator(f"[data-test=search-hit][data-id='{tagged}']")
    assert "<b>会议</b> is not bold" in await tagged_hit.inner_text()
    assert await tagged_hit.locator("b").count() == 0
    await person.screenshot(shots / "search-results.png")

    # A click opens the conversation at the message, with messages on both sides of it.
    await page.click(f"[data-test=search-hit][data-id='{hit}']")
    await person.wait_title("王小明")
    found = page.locator(f".msg.found[data-id='{hit}']")
    await found.wait_for()
    assert await found.is_visible()
    for neighbour in (before[-1], after[0]):
        await page.locator(f".msg[data-id='{neighbour}']").wait_for()
    assert await page.locator(f".msg[data-id='{after[-1]}']").count() == 0
    await person.screenshot(shots / "search-opened.png")
    await page.click("[data-test=jump-latest]")
    await page.locator(f".msg[data-id='{tagged}']").wait_for()
    await page.locator(f".msg[data-id='{after[-1]}']").wait_for()

    # Within one conversation: only its messages.
    await page.click("[data-test=message-search-close]")
    await page.fill("[data-test=filter]", "")
    await person.open_chat_with("项目组")
    await page.click("[data-test=search-in-conv]")
    await page.fill("[data-test=message-search-input]", "q3预算")
    await page.press("[data-test=message-search-input]", "Enter")
    only = page.locator("[data-test=search-hit]")
    await only.first.wait_for()
    assert await only.count() == 1 and await only.get_attribute("data-id") == str(group_hit)
    assert await only.locator("mark").all_inner_texts() == ["Q3", "预算"]
    assert "项目组" in await page.locator("[data-test=search-scope]").inner_text()
    assert person.errors == []
    await context.close()
    await close_all(alice, bob)
