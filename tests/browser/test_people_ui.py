"""People in the web client, in a real chromium, with friend requests on
(`contacts.require_approval`): finding someone in the directory by part of a Chinese or Latin
name, asking, the badge and the answer on the other side, removing a friend and blocking from
the conversation's menu, the blocked list, editing one's profile and changing the password
(the other device is signed out). One person on a desktop in English, one on a phone in
Chinese."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, Person, ServerBox
from tests.browser.test_web_client import new_person
from tests.harness import make_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def web_settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path, "sqlite", contacts={"require_approval": True})


async def _two(browser: Any, web: ServerBox) -> tuple[Person, Person]:
    alice = await new_person(browser, web, "13900000021", "Alice Chen", viewport=DESKTOP,
                             locale="en-US")
    bob = await new_person(browser, web, "13900000022", "王小明", viewport=PHONE,
                           locale="zh-CN", scale=2)
    await alice.register()
    await bob.register()
    await alice.wait_online()
    await bob.wait_online()
    return alice, bob


async def test_find_ask_accept_remove_and_block(web: ServerBox, browser: Any) -> None:
    alice, bob = await _two(browser, web)
    a, b = alice.page, bob.page

    # Alice finds Bob by part of his Chinese name and asks him.
    await alice.menu("people")
    await a.fill("[data-test=people-search]", "小明")
    result = a.locator("[data-test=people-results] li", has_text="王小明")
    await result.wait_for()
    assert await a.locator("[data-test=people-results] li").count() == 1
    await result.locator("[data-test=people-add]").click()
    await result.locator("[data-test=requested]").wait_for()
    await a.keyboard.press("Escape")

    # Bob's + button shows the request at once; he finds it and accepts.
    await b.locator("[data-test=requests-badge]", has_text="1").wait_for()
    await b.click("[data-test=tab-contacts]")
    await b.click("[data-test=open-requests]")
    request = b.locator("[data-test=incoming-requests] li", has_text="Alice Chen")
    await request.locator("[data-test=accept]").click()
    await request.wait_for(state="detached")
    await b.keyboard.press("Escape")
    await b.locator("[data-test=contact-list] [data-friend='13900000021']").wait_for()
    await b.locator("[data-test=requests-badge]").wait_for(state="detached")
    await a.click("[data-test=tab-contacts]")
    await a.locator("[data-test=contact-list] [data-friend='13900000022']").click()
    await alice.send_text("Thanks for accepting!")
    await b.click("[data-test=contact-list] [data-friend='13900000021']")
    await bob.wait_message("Thanks for accepting!")

    # Bob blocks Alice from the conversation's menu (the second click confirms).
    await b.click("[data-test=peer-menu]")
    await b.click("[data-test=block-user]")
    assert await b.inner_text("[data-test=block-user]") == "再点一次确认屏蔽"
    await b.click("[data-test=block-user]")
    await b.locator(".toast", has_text="已屏蔽 Alice Chen").wait_for()
    # Alice's list loses him at once; her next message is refused.
    await a.locator("[data-test=contact-list] [data-friend='13900000022']").wait_for(
        state="detached")
    await alice.send_text("Are you there?")
    await a.locator(".msg.mine", has_text="Are you there?").locator(
        ".status.failed").wait_for()
    # Bob's blocked list has her; he unblocks her there.
    await b.click("[data-test=back]")
    await bob.menu("people")
    await b.click("[data-test=people-tab-blocked]")
    blocked = b.locator("[data-test=blocked-list] li", has_text="Alice Chen")
    await blocked.locator("[data-test=unblock]").click()
    await blocked.wait_for(state="detached")
    await b.keyboard.press("Escape")
    assert alice.errors == [] and bob.errors == []


async def test_removing_a_friend_from_the_menu(web: ServerBox, browser: Any) -> None:
    alice, bob = await _two(browser, web)
    a, b = alice.page, bob.page
    await alice.menu("people")
    await a.fill("[data-test=people-search]", "王")
    await a.locator("[data-test=people-results] li", has_text="王小明").locator(
        "[data-test=people-add]").click()
    await a.keyboard.press("Escape")
    await b.locator("[data-test=requests-badge]").wait_for()
    await bob.menu("people")
    await b.click("[data-test=people-tab-requests]")
    await b.locator("[data-test=incoming-requests] [data-test=accept]").click()
    await b.keyboard.press("Escape")
    await a.click("[data-test=tab-contacts]")
    await a.locator("[data-test=contact-list] [data-friend='13900000022']").click()
    await a.click("[data-test=peer-menu]")
    await a.click("[data-test=remove-friend]")
    await a.click("[data-test=remove-friend]")
    await a.locator(".toast", has_text="王小明 is no longer your friend").wait_for()
    await a.locator("[data-test=contact-list] [data-friend='13900000022']").wait_for(
        state="detached")
    await b.click("[data-test=tab-contacts]")
    await b.locator("[data-test=contact-list] [data-friend='13900000021']").wait_for(
        state="detached")
    assert alice.errors == [] and bob.errors == []


async def test_profile_and_password(web: ServerBox, browser: Any) -> None:
    alice, _bob = await _two(browser, web)
    a = alice.page
    other = await new_person(browser, web, alice.mobile, alice.nickname, viewport=PHONE,
                             locale="en-US")
    await other.login()
    await other.wait_online()

    await a.click("[data-test=open-profile]")
    await a.click("[data-test=edit-profile]")
    await a.fill("[data-test=profile-form] input[name=nickname]", "Alice 陈")
    await a.fill("[data-test=profile-form] input[name=memo]", "Design lead")
    await a.check("[data-test=profile-form] input[name=sex][value=W]")
    await a.click("[data-test=profile-form] button[type=submit]")
    await a.locator("[data-test=profile] h3", has_text="Alice 陈").wait_for()
    await a.locator("[data-test=profile]", has_text="Design lead").wait_for()

    await a.click("[data-test=change-password]")
    await a.fill("[data-test=password-form] input[name=oldpasswd]", "wrong-one")
    await a.fill("[data-test=password-form] input[name=newpasswd]", "new-secret-2")
    await a.click("[data-test=password-form] button[type=submit]")
    await a.locator("[data-test=password-form] .form-error").wait_for()
    await a.fill("[data-test=password-form] input[name=oldpasswd]", "secret-pass-1")
    await a.click("[data-test=password-form] button[type=submit]")
    await a.locator("[data-test=password-form]").wait_for(state="detached")
    # The phone is signed out; the new password signs in.
    await other.page.wait_for_selector("[data-test=login-submit]")
    await other.login(password="new-secret-2")
    await other.wait_online()
    assert await other.page.inner_text(".me-text strong") == "Alice 陈"
    assert alice.errors == []
