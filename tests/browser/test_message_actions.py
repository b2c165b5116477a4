"""What a person does to a message in the web client, in real chromium against a real server,
with the other side watching in a second browser: react (toggle, counts, who), reply (quoted
snippet, jump to the original, also after a reload), edit ("edited" mark), recall (the notice
on both sides), @mention (the member picker, the badge) and mute (stored on the server: the
quiet count survives a reload). Each action is its own test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
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


@dataclasses.dataclass
class Room:
    """Ann (the group's owner) and Bob, each in a browser with the group "team" open."""

    ann: Person
    bob: Person
    ann_id: int
    bob_id: int
    group: int


async def _open(browser: Any, base_url: str, mobile: str, name: str) -> Person:
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    person = Person(page, base_url, mobile, name)
    await person.login()
    await person.wait_online()
    return person


@pytest.fixture
async def room(web: ServerBox, browser: Any) -> AsyncIterator[Room]:
    server = web.server
    assert server is not None
    ann = await register(server, "Ann")
    bob = await register(server, "Bob")
    await befriend(ann, bob)
    group = await make_group(ann, "team", bob)
    await send_texts(server, bob, 10, ann.id, ["a direct message"])
    await send_texts(server, ann, 11, group, ["welcome"])
    people = Room(await _open(browser, web.base_url, ann.mobile, "Ann"),
                  await _open(browser, web.base_url, bob.mobile, "Bob"), ann.id, bob.id, group)
    for person in (people.ann, people.bob):
        await person.open_chat_with("team")
        await person.wait_message("welcome")
    await close_all(ann, bob)
    yield people
    for person in (people.ann, people.bob):
        assert person.errors == [], person.errors


async def _menu(person: Person, text: str) -> Any:
    """Open the action menu of the message showing `text`."""
    message = person.page.locator("[data-test=msg]", has_text=text).last
    await message.locator("[data-test=msg-menu]").click()
    return message


async def test_react_toggles_and_counts_who_reacted(room: Room) -> None:
    await room.bob.send_text("lunch?")
    await room.ann.wait_message("lunch?")
    message = await _menu(room.ann, "lunch?")
    await message.locator("[data-test=react-choice][data-emoji='👍']").click()
    for person in (room.ann, room.bob):
        chip = person.page.locator("[data-test=msg]", has_text="lunch?").locator(
            "[data-test=reaction][data-emoji='👍']")
        await chip.locator("[data-test=reaction-count]", has_text="1").wait_for()
        assert await chip.get_attribute("title") == "Ann"
    await room.bob.page.locator("[data-test=msg]", has_text="lunch?").locator(
        "[data-test=reaction][data-emoji='👍']").click()
    count = room.ann.page.locator("[data-test=msg]", has_text="lunch?").locator(
        "[data-test=reaction][data-emoji='👍'] [data-test=reaction-count]")
    await count.filter(has_text="2").wait_for()
    # Clicking my own reaction takes it back, everywhere.
    await room.ann.page.locator("[data-test=msg]", has_text="lunch?").locator(
        "[data-test=reaction][data-emoji='👍']").click()
    for person in (room.ann, room.bob):
        chip = person.page.locator("[data-test=msg]", has_text="lunch?").locator(
            "[data-test=reaction][data-emoji='👍']")
        await chip.locator("[data-test=reaction-count]", has_text="1").wait_for()
        assert await chip.get_attribute("title") == "Bob"


async def test_reply_shows_the_quote_and_jumps_to_the_original(room: Room) -> None:
    await room.bob.send_text("the plan is ready")
    await room.ann.wait_message("the plan is ready")
    await (await _menu(room.ann, "the plan is ready")).locator("[data-test=menu-reply]").click()
    bar = room.ann.page.locator("[data-test=reply-bar]")
    assert "Replying to Bob" in await bar.inner_text()
    await room.ann.send_text("great, thanks")
    await bar.wait_for(state="detached")
    for person in (room.ann, room.bob):
        reply = person.page.locator("[data-test=msg]", has_text="great, thanks")
        quote = reply.locator("[data-test=msg-quote]")
        await quote.wait_for()
        assert (await quote.inner_text()).strip() == "Bob: the plan is ready"
    await room.bob.page.locator("[data-test=msg]", has_text="great, thanks").locator(
        "[data-test=msg-quote]").click()
    await room.bob.page.locator(".msg.found", has_text="the plan is ready").wait_for()
    # After a reload the quote comes from the server's history.
    await room.bob.page.reload()
    await room.bob.wait_online()
    await room.bob.open_chat_with("team")
    quote = room.bob.page.locator("[data-test=msg]", has_text="great, thanks").locator(
        "[data-test=msg-quote]")
    await quote.wait_for()
    assert (await quote.inner_text()).strip() == "Bob: the plan is ready"


async def test_edit_shows_the_new_text_marked_edited(room: Room) -> None:
    await room.bob.send_text("meet at 3")
    await room.ann.wait_message("meet at 3")
    # Only the sender is offered the edit.
    await (await _menu(room.ann, "meet at 3")).locator("[data-test=menu-reply]").wait_for()
    assert await room.ann.page.locator("[data-test=menu-edit]").count() == 0
    await (await _menu(room.bob, "meet at 3")).locator("[data-test=menu-edit]").click()
    await room.bob.page.fill("[data-test=edit-input]", "meet at 4")
    await room.bob.page.click("[data-test=edit-save]")
    for person in (room.bob, room.ann):
        message = person.page.locator("[data-test=msg]", has_text="meet at 4")
        await message.locator("[data-test=msg-edited]").wait_for()
        assert await person.page.locator("[data-test=msg]", has_text="meet at 3").count() == 0


async def test_recall_replaces_the_message_with_a_notice(room: Room) -> None:
    await room.bob.send_text("oops, wrong group")
    await room.ann.wait_message("oops, wrong group")
    await (await _menu(room.bob, "oops, wrong group")).locator("[data-test=menu-recall]").click()
    await room.bob.page.locator("[data-test=msg-recalled]",
                                has_text="You recalled a message").wait_for()
    await room.ann.page.locator("[data-test=msg-recalled]",
                                has_text="Bob recalled a message").wait_for()
    for person in (room.ann, room.bob):
        assert await person.message("oops, wrong group").count() == 0
    # The group's owner may recall someone else's message; Bob may not recall Ann's.
    await room.ann.send_text("owner's note")
    await room.bob.wait_message("owner's note")
    await _menu(room.bob, "owner's note")
    assert await room.bob.page.locator("[data-test=menu-recall]").count() == 0


async def test_mention_picker_and_badge(room: Room) -> None:
    # Ann looks at another conversation: the group's mention shows as a badge.
    await room.ann.open_chat_with("Bob")
    await room.bob.page.locator("[data-test=composer]").press_sequentially("hi @An", delay=5)
    picker = room.bob.page.locator("[data-test=mention-picker]")
    await picker.locator("[data-test=mention-choice]", has_text="@Ann").click()
    assert await room.bob.page.input_value("[data-test=composer]") == "hi @Ann "
    await room.bob.page.click("[data-test=send]")
    item = room.ann.page.locator("[data-test=conversation-list] .list-item", has_text="team")
    await item.locator("[data-test=mention-badge]").wait_for()
    await item.click()
    await room.ann.page.locator(".msg.mentions-me", has_text="hi @Ann").wait_for()
    await item.locator("[data-test=mention-badge]").wait_for(state="detached")
    # Only the owner is offered @all.
    await room.bob.page.locator("[data-test=composer]").press_sequentially(" @a", delay=5)
    await room.bob.page.locator("[data-test=mention-choice]").first.wait_for()
    assert await room.bob.page.locator("[data-test=mention-choice]",
                                       has_text="@all").count() == 0


async def test_mute_is_quiet_and_kept_by_the_server(room: Room) -> None:
    await room.ann.page.click("[data-test=mute-toggle]")
    item = room.ann.page.locator("[data-test=conversation-list] .list-item", has_text="team")
    await item.locator("[data-test=muted-mark]").wait_for()
    await room.ann.open_chat_with("Bob")
    await room.bob.send_text("noise")
    badge = item.locator("[data-test=unread]")
    await badge.filter(has_text="1").wait_for()
    assert "quiet" in (await badge.get_attribute("class") or "")
    # Another load of the page (any device) asks the server: still muted.
    await room.ann.page.reload()
    await room.ann.wait_online()
    item = room.ann.page.locator("[data-test=conversation-list] .list-item", has_text="team")
    await item.locator("[data-test=muted-mark]").wait_for()
    assert "quiet" in (await item.locator("[data-test=unread]").get_attribute("class") or "")
    await item.click()
    await room.ann.page.click("[data-test=mute-toggle]")
    await item.locator("[data-test=muted-mark]").wait_for(state="detached")
