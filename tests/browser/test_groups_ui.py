"""Group governance in a real chromium, one flow per test: a private group made in the create
dialog (its name does not let anyone in), invitations from the member drawer, an admin made by
the owner, the settings dialog (name, notice, public), a member removed (whose page lets the
group go at once), and the owner handing over, leaving, and the new owner dissolving. Every
change shows as a notice line in each member's conversation, in their language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, Person, ServerBox
from tests.browser.test_web_client import new_person, picture_file

pytestmark = pytest.mark.browser


def drawer_member(person: Person, name: str) -> Any:
    return person.page.locator("[data-test=members-panel] li", has_text=name)


async def notice(person: Person, text: str) -> None:
    await person.page.locator("[data-test=notice]", has_text=text).first.wait_for()


async def confirm(person: Person) -> None:
    await person.page.click("[data-test=confirm-dialog] [data-test=confirm-yes]")
    await person.page.wait_for_selector("[data-test=confirm-dialog]", state="detached")


async def three_people(browser: Any, web: ServerBox) -> tuple[Person, Person, Person]:
    alice = await new_person(browser, web, "13900000011", "Alice", viewport=DESKTOP,
                             locale="en-US")
    bob = await new_person(browser, web, "13900000012", "王小明", viewport=DESKTOP,
                           locale="zh-CN")
    carol = await new_person(browser, web, "13900000013", "Carol", viewport=PHONE,
                             locale="en-US", scale=2)
    for person in (alice, bob, carol):
        await person.register()
        await person.wait_online()
    await alice.add_friend(bob.mobile)
    await alice.add_friend(carol.mobile)
    return alice, bob, carol


async def invite(owner: Person, name: str) -> None:
    page = owner.page
    await page.click("[data-test=members-panel] [data-test=group-invite]")
    await page.locator("[data-test=group-invite-form] li", has_text=name).locator(
        "[data-test=invite-one]").click()
    await page.locator("[data-test=group-invite-form] li", has_text=name).wait_for(
        state="detached")
    await page.click("[data-test=group-invite-form] .form-actions button")


async def test_a_private_group_governed_from_the_drawer(web: ServerBox, browser: Any,
                                                       tmp_path: Path) -> None:
    alice, bob, carol = await three_people(browser, web)
    a, b, c = alice.page, bob.page, carol.page

    # A private group: its name does not let Carol in.
    await alice.menu("create-group")
    await a.fill("[data-test=create-group-form] input[name=name]", "Ops")
    await a.check("[data-test=create-private]")
    await a.click("[data-test=create-group-form] button[type=submit]")
    await alice.wait_title("Ops")
    await a.locator("[data-test=group-kind]", has_text="Private group").wait_for()
    await carol.menu("join-group")
    await c.fill("[data-test=join-group-form] input[name=dstname]", "Ops")
    await c.click("[data-test=join-group-form] button[type=submit]")
    await c.locator("[data-test=join-group-form] .form-error", has_text="invite").wait_for()
    await c.click("[data-test=join-group-form] .form-actions .btn-light")

    # The owner invites both from the drawer; each sees the group and the notice.
    await invite(alice, "王小明")
    await invite(alice, "Carol")
    await notice(alice, "Alice added 王小明")
    await notice(alice, "Alice added Carol")
    await bob.open_chat_with("Ops")
    await notice(bob, "Alice 邀请 王小明 加入了群聊")
    await carol.open_chat_with("Ops")
    await notice(carol, "Alice added Carol")

    # Owner makes Bob an admin: the badge, the notice, and Bob's drawer gains the tools.
    await drawer_member(alice, "王小明").locator("[data-test=toggle-admin]").click()
    await drawer_member(alice, "王小明").locator("[data-test=role]", has_text="Admin").wait_for()
    await notice(bob, "Alice 将 王小明 设为管理员")
    await b.locator("[data-test=members-panel] [data-test=group-settings]").wait_for()
    assert await drawer_member(bob, "Carol").locator("[data-test=transfer]").count() == 0

    # The admin renames the group, writes its notice and makes it public.
    await b.click("[data-test=members-panel] [data-test=group-settings]")
    await b.fill("[data-test=group-settings-form] input[name=name]", "Ops Team")
    await b.fill("[data-test=group-settings-form] textarea[name=memo]", "Deploys on Friday")
    await b.uncheck("[data-test=group-settings-form] input[name=private]")
    await b.set_input_files("[data-test=group-settings-form] input[type=file]",
                            str(picture_file(tmp_path, "icon.png", (120, 120))))
    await b.locator("[data-test=group-settings-form] .icon-pick img[src^='/resource/']").wait_for()
    await b.click("[data-test=group-settings-form] button[type=submit]")
    await b.wait_for_selector("[data-test=group-settings-form]", state="detached")
    await alice.wait_title("Ops Team")
    await notice(alice, '王小明 renamed the group to "Ops Team"')
    await notice(alice, "王小明 changed the group notice: Deploys on Friday")
    await notice(alice, "王小明 made the group public")
    await notice(alice, "王小明 changed the group's icon")
    await a.locator("[data-test=group-notice]", has_text="Deploys on Friday").wait_for()
    await notice(carol, "王小明 made the group public")

    # A member sees no tools; the admin removes her, and her page lets the group go.
    await c.click("[data-test=members-toggle]")
    await c.locator("[data-test=members-panel] [data-test=group-leave]").wait_for()
    assert await c.locator("[data-test=members-panel] [data-test=group-invite]").count() == 0
    assert await c.locator("[data-test=members-panel] [data-test=remove-member]").count() == 0
    await drawer_member(bob, "Carol").locator("[data-test=remove-member]").click()
    await confirm(bob)
    await notice(alice, "王小明 removed Carol")
    await c.wait_for_selector("[data-test=conv-title]", state="detached")
    await c.locator("[data-test=conversation-list] .list-item", has_text="Ops").wait_for(
        state="detached")
    await a.locator("[data-test=members-panel] li", has_text="Carol").wait_for(state="detached")
    for person in (alice, bob, carol):
        assert person.errors == [], person.errors


async def test_hand_over_leave_and_dissolve(web: ServerBox, browser: Any) -> None:
    alice, bob, carol = await three_people(browser, web)
    a, b = alice.page, bob.page
    await alice.create_group("Book Club")
    await invite(alice, "王小明")
    await bob.open_chat_with("Book Club")

    # Alice hands the group over to Bob: she becomes a member, he gets the owner's tools.
    await drawer_member(alice, "王小明").locator("[data-test=transfer]").click()
    await confirm(alice)
    await notice(alice, "Alice handed the group over to 王小明")
    await notice(bob, "Alice 将群主转让给了 王小明")
    await drawer_member(alice, "王小明").locator("[data-test=role]", has_text="Owner").wait_for()
    await a.locator("[data-test=members-panel] [data-test=group-settings]").wait_for(
        state="detached")
    await b.locator("[data-test=members-panel] [data-test=group-dissolve]").wait_for()

    # Alice leaves; Bob sees it, and dissolves the group: it is gone from his page.
    await a.click("[data-test=members-panel] [data-test=group-leave]")
    await confirm(alice)
    await a.locator("[data-test=conversation-list] .list-item", has_text="Book Club").wait_for(
        state="detached")
    await notice(bob, "Alice 退出了群聊")
    await b.click("[data-test=members-panel] [data-test=group-dissolve]")
    await confirm(bob)
    await b.locator("[data-test=conversation-list] .list-item", has_text="Book Club").wait_for(
        state="detached")
    for person in (alice, bob, carol):
        assert person.errors == [], person.errors
