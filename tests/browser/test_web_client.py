"""The web client in a real chromium: two people register through the pages, befriend, chat one
to one (text, emoji, sticker, picture) and in a group, and see each other's receipts, typing
and presence; the log-in page, language switch and log-out; hostile text shown as text."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.conftest import DESKTOP, PHONE, Person, ServerBox

pytestmark = pytest.mark.browser


def picture_file(folder: Path, name: str = "photo.png", size: tuple[int, int] = (640, 420)) -> Path:
    """A small but real photo-like PNG (a gradient with a sun) to upload."""
    width, height = size
    image = Image.new("RGB", size)
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            pixels[x, y] = (60 + 120 * y // height, 140 + 80 * x // width, 230 - 60 * y // height)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.62, height * 0.15, width * 0.82, height * 0.45), fill=(255, 214, 90))
    draw.polygon([(0, height), (width * 0.35, height * 0.5), (width * 0.7, height)],
                 fill=(40, 110, 90))
    draw.polygon([(width * 0.4, height), (width * 0.72, height * 0.6), (width, height)],
                 fill=(30, 90, 75))
    path = folder / name
    out = io.BytesIO()
    image.save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path


async def new_person(browser: Any, web: ServerBox, mobile: str, nickname: str, *,
                     viewport: dict[str, int], locale: str, scale: float = 1) -> Person:
    context = await browser.new_context(viewport=viewport, locale=locale,
                                        device_scale_factor=scale)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    return Person(page, web.base_url, mobile, nickname)


async def test_two_people_chat_one_to_one_and_in_a_group(web: ServerBox, browser: Any,
                                                         shots: Path, tmp_path: Path) -> None:
    alice = await new_person(browser, web, "13900000001", "Alice Chen", viewport=DESKTOP,
                             locale="en-US")
    bob = await new_person(browser, web, "13900000002", "王小明", viewport=PHONE,
                           locale="zh-CN", scale=2)
    a, b = alice.page, bob.page

    # Registration through the pages (each with a built-in avatar), then both are online.
    await alice.register(builtin_avatar=2)
    await bob.register(builtin_avatar=5)
    await alice.wait_online()
    await bob.wait_online()
    assert await b.locator("[data-test=tab-chats]").inner_text() == "消息"  # zh-CN from locale

    # Alice adds Bob by mobile; her conversation with him opens and shows him online.
    await alice.add_friend(bob.mobile)
    await alice.wait_title(bob.nickname)
    await a.locator("[data-test=presence]", has_text="Online").wait_for()

    # Text with a link: shown in both windows without reload, the link safe and clickable.
    await alice.send_text("Hello Bob, the plan is at https://example.com/docs?q=1.")
    await alice.wait_message("Hello Bob")
    unread = b.locator("[data-test=conversation-list] .list-item", has_text=alice.nickname)
    await unread.locator("[data-test=unread]", has_text="1").wait_for()
    await bob.open_chat_with(alice.nickname)
    link = (await bob.wait_message("Hello Bob")).locator("a")
    assert await link.get_attribute("href") == "https://example.com/docs?q=1"
    assert await link.get_attribute("target") == "_blank"
    assert {"noopener", "noreferrer"} <= set((await link.get_attribute("rel") or "").split())
    assert await link.inner_text() == "https://example.com/docs?q=1"

    # Bob opened it: Alice sees the read receipt on her message.
    mine = a.locator(".msg.mine", has_text="Hello Bob")
    await mine.locator("[data-test=receipt].read").wait_for()

    # Bob types: Alice sees the typing notice; then he sends text with an emoji from the picker.
    await bob.type_message("好的")
    await a.locator("[data-test=typing]").wait_for()
    await b.click("[data-test=emoji-toggle]")
    await b.locator("[data-test=emoji-panel] .emoji", has_text="😀").first.click()
    assert await b.input_value("[data-test=composer]") == "好的😀"
    await b.click("[data-test=send]")
    await alice.wait_message("好的😀")
    await b.locator(".msg.mine", has_text="好的😀").locator("[data-test=receipt].read").wait_for()

    # A sticker from the project's own pack.
    await a.click("[data-test=sticker-toggle]")
    await a.click('[data-test=sticker-panel] [data-sticker="/asset/plugins/doutu/imface/wave.gif"]')
    sticker = b.locator('[data-test=msg-sticker][src="/asset/plugins/doutu/imface/wave.gif"]')
    await sticker.wait_for()

    # A picture: preview first, then uploaded; Bob gets the thumbnail from /resource/.
    await a.set_input_files("[data-test=picture-file]", str(picture_file(tmp_path)))
    await a.locator("[data-test=picture-preview] img").wait_for()
    await a.click("[data-test=picture-send]")
    picture = b.locator("[data-test=msg-picture]").first
    await picture.wait_for()
    src = await picture.get_attribute("src") or ""
    assert src.startswith("/resource/") and src.endswith("_t.webp"), src
    await b.wait_for_function(
        "() => { const i = document.querySelector('[data-test=msg-picture]');"
        " return i && i.complete && i.naturalWidth > 0; }")
    await picture.click()  # opens the full picture
    full = b.locator("[data-test=lightbox] img")
    assert (await full.get_attribute("src") or "").startswith("/resource/")
    await b.click("[data-test=lightbox]")

    # A group: Alice creates it, Bob joins it by name, they talk there.
    await alice.create_group("Design Team", memo="Weekly design sync and reviews")
    await b.click("[data-test=back]")
    await bob.join_group("Design Team")
    await bob.send_text("大家好，我是小明 👋")
    group_row = a.locator("[data-test=conversation-list] .list-item", has_text="Design Team")
    await group_row.wait_for()
    await alice.wait_message("大家好")
    sender = a.locator(".msg", has_text="大家好").locator(".msg-sender")
    assert await sender.inner_text() == bob.nickname
    await alice.send_text("Welcome to the team! Mockups: https://example.com/mockups")
    await bob.wait_message("Welcome to the team")
    await b.click("[data-test=sticker-toggle]")
    await b.click('[data-test=sticker-panel] [data-sticker="/asset/plugins/doutu/imface/love.png"]')
    await a.locator('[data-test=msg-sticker][src$="imface/love.png"]').wait_for()
    await a.set_input_files("[data-test=picture-file]", str(picture_file(tmp_path)))
    await a.click("[data-test=picture-send]")
    await b.locator("[data-test=msg-picture]").first.wait_for()
    await alice.send_text("Love it 😍 Let's review on Friday at 10:00.")
    await bob.wait_message("Let's review on Friday")

    # Group read receipts: everyone (Alice) has read Bob's message.
    await b.locator(".msg.mine", has_text="大家好").locator(
        "[data-test=receipt].read").wait_for()

    # Members: Alice's desktop drawer lists both, Bob's typing shows the group's notice.
    if not await a.locator("[data-test=members-panel]").count():
        await a.click("[data-test=members-toggle]")
    members = a.locator("[data-test=members-panel] [data-member]")
    await members.nth(1).wait_for()
    assert await members.count() == 2
    await bob.type_message("收到")
    await a.locator("[data-test=typing]", has_text=bob.nickname).wait_for()

    for page in (a, b):  # let the "group created/joined" toasts go first
        await page.locator(".toast").first.wait_for(state="detached")
    await alice.screenshot(shots / "group-desktop.png")
    await b.fill("[data-test=composer]", "")
    await bob.screenshot(shots / "group-phone.png")
    assert alice.errors == [] and bob.errors == []


async def test_login_page_language_and_logout(web: ServerBox, browser: Any, shots: Path) -> None:
    from tests.factories import register

    assert web.server is not None
    user = await register(web.server, nickname="Carol", mobile="13900000009")
    await user.client.aclose()

    desktop = await new_person(browser, web, user.mobile, "Carol", viewport=DESKTOP,
                               locale="en-US")
    page = desktop.page
    # /app without a session lands on the log-in page.
    await page.goto(web.base_url + "/app")
    await page.wait_for_selector("[data-test=login-submit]")
    assert page.url.endswith("/")
    await desktop.screenshot(shots / "login-desktop.png")
    await page.fill("input[name=mobile]", user.mobile)
    await page.fill("input[name=passwd]", "wrong-password")
    await page.click("[data-test=login-submit]")
    await page.locator(".form-error").wait_for()

    # Switch to Chinese: the page follows at once and remembers the choice.
    await page.select_option("[data-test=lang]", "zh-CN")
    assert await page.inner_text("[data-test=login-submit]") == "登录"
    await page.reload()
    assert await page.inner_text("[data-test=login-submit]") == "登录"
    await page.select_option("[data-test=lang]", "en")

    await desktop.login()
    await desktop.wait_online()
    await page.reload()  # the HttpOnly cookie keeps the session
    await desktop.wait_online()
    await page.click("[data-test=open-profile]")
    await page.click("[data-test=logout]")
    await page.wait_for_selector("[data-test=login-submit]")
    await page.goto(web.base_url + "/app")
    await page.wait_for_selector("[data-test=login-submit]")

    phone = await new_person(browser, web, user.mobile, "Carol", viewport=PHONE,
                             locale="zh-CN", scale=2)
    await phone.page.goto(web.base_url + "/")
    await phone.page.wait_for_selector("[data-test=login-submit]")
    await phone.screenshot(shots / "login-phone.png")
    assert desktop.errors == [] and phone.errors == []


async def test_hostile_text_shows_as_text_and_hidden_tab_notifies(web: ServerBox,
                                                                  browser: Any) -> None:
    from tests.factories import befriend, register

    assert web.server is not None
    mallory = await register(web.server, nickname="<b>Mallory</b>", mobile="13900000011")
    victim = await register(web.server, nickname="Victor", mobile="13900000012")
    await befriend(mallory, victim)
    for user in (mallory, victim):
        await user.client.aclose()

    sender = await new_person(browser, web, mallory.mobile, "<b>Mallory</b>", viewport=DESKTOP,
                              locale="en-US")
    reader = await new_person(browser, web, victim.mobile, "Victor", viewport=DESKTOP,
                              locale="en-US")
    await sender.login()
    await reader.login()
    await sender.wait_online()
    await reader.wait_online()
    page = reader.page
    # The reader's tab is hidden and notifications are allowed: new messages notify.
    await page.evaluate("""() => {
        window.__notes = [];
        Object.defineProperty(document, 'visibilityState', { get: () => 'hidden' });
        class FakeNotification {
            constructor(title, options) { window.__notes.push({ title, body: options.body }); }
            close() {}
        }
        FakeNotification.permission = 'granted';
        FakeNotification.requestPermission = () => Promise.resolve('granted');
        window.Notification = FakeNotification;
    }""")

    await sender.page.click("[data-test=tab-contacts]")
    await sender.page.click('[data-friend="13900000012"]')
    hostile = "<img src=x onerror=alert(1)> <script>alert(2)</script> javascript:alert(3)"
    await sender.send_text(hostile)
    await page.locator("[data-test=conversation-list] .list-item",
                       has_text="<b>Mallory</b>").wait_for()
    await page.wait_for_function("() => window.__notes.length > 0")
    notes = await page.evaluate("() => window.__notes")
    assert notes[0]["title"] == "<b>Mallory</b>" and notes[0]["body"] == hostile

    await reader.open_chat_with("<b>Mallory</b>")
    bubble = await reader.wait_message("onerror")
    assert await bubble.inner_text() == hostile
    assert await bubble.locator("img, script, a, b").count() == 0
    assert await page.locator("b", has_text="Mallory").count() == 0
    await page.wait_for_timeout(300)
    assert reader.errors == [] and sender.errors == []  # no alert() dialog ever opened


async def test_history_scrolls_back_page_by_page(web: ServerBox, browser: Any) -> None:
    from tests.factories import befriend, connect, recv_until, register

    assert web.server is not None
    writer = await register(web.server, nickname="Writer", mobile="13900000021")
    reader_user = await register(web.server, nickname="Reader", mobile="13900000022")
    await befriend(writer, reader_user)
    ws = await connect(web.server, writer)
    try:
        for number in range(1, 76):
            while True:  # the server throttles bursts: wait and resend with the same cid
                await ws.send(f'{{"cmd":10,"dstid":{reader_user.id},"media":1,'
                              f'"content":"line {number:03d}","cid":"h{number}"}}')
                answer = await recv_until(ws, lambda f, c=f"h{number}": f.get("cid") == c)
                if answer["cmd"] == 100:
                    break
                assert answer.get("reason") == "throttled", answer
                await asyncio.sleep(0.2)
    finally:
        await ws.close()
    for user in (writer, reader_user):
        await user.client.aclose()

    reader = await new_person(browser, web, reader_user.mobile, "Reader", viewport=DESKTOP,
                              locale="en-US")
    await reader.login()
    page = reader.page
    badge = page.locator("[data-test=conversation-list] .list-item", has_text="Writer")
    await badge.locator("[data-test=unread]", has_text="75").wait_for()
    await reader.open_chat_with("Writer")
    await reader.wait_message("line 075")
    texts = page.locator("[data-test=msg-text]")
    assert await texts.count() == 30
    for expected in (60, 75):
        await page.evaluate("() => { const s = document.querySelector('[data-test=messages]');"
                            " s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); }")
        await page.wait_for_function(f"() => document.querySelectorAll("
                                     f"'[data-test=msg-text]').length === {expected}")
    await page.locator(".history-edge", has_text="beginning").wait_for()
    contents = await texts.all_inner_texts()
    assert contents == [f"line {n:03d}" for n in range(1, 76)]
    assert reader.errors == []


async def test_register_with_an_uploaded_avatar(web: ServerBox, browser: Any,
                                                tmp_path: Path) -> None:
    assert web.server is not None
    person = await new_person(browser, web, "13900000031", "Dana", viewport=DESKTOP,
                              locale="en-US")
    await person.register(avatar_file=picture_file(tmp_path, "me.png", (300, 300)))
    await person.wait_online()
    avatar = person.page.locator(".sidebar-head .avatar img")
    assert (await avatar.get_attribute("src") or "").startswith("/resource/")
    await person.page.reload()
    await person.wait_online()
    assert (await avatar.get_attribute("src") or "").startswith("/resource/")
    assert person.errors == []


async def test_a_second_device_follows_the_first(web: ServerBox, browser: Any) -> None:
    from tests.factories import befriend, connect, recv_until, register

    assert web.server is not None
    eve = await register(web.server, nickname="Eve", mobile="13900000051")
    finn = await register(web.server, nickname="Finn", mobile="13900000052")
    await befriend(eve, finn)
    for user in (eve, finn):
        await user.client.aclose()

    laptop = await new_person(browser, web, eve.mobile, "Eve", viewport=DESKTOP, locale="en-US")
    phone = await new_person(browser, web, eve.mobile, "Eve", viewport=PHONE, locale="en-US")
    await laptop.login()
    await phone.login()
    await laptop.wait_online()
    await phone.wait_online()

    # Sent on the laptop: the phone shows it as Eve's own message, once.
    await laptop.page.click("[data-test=tab-contacts]")
    await laptop.page.click(f'[data-friend="{finn.mobile}"]')
    await laptop.send_text("sent from my laptop")
    await phone.open_chat_with("Finn")
    mine = phone.page.locator(".msg.mine", has_text="sent from my laptop")
    await mine.wait_for()
    assert await mine.count() == 1
    await phone.page.click("[data-test=back]")

    # Finn answers; the laptop has the conversation open and reads it, so the phone's
    # unread badge goes away by itself (Eve's read receipt reaches her other device).
    ws = await connect(web.server, finn)
    try:
        await ws.send(json.dumps({"cmd": 10, "dstid": eve.id, "media": 1,
                                  "content": "got it", "cid": "finn-1"}))
        await recv_until(ws, lambda f: f.get("cmd") == 100)
        await laptop.wait_message("got it")
        read = await recv_until(ws, lambda f: f.get("cmd") == 102 and f.get("userid") == eve.id)
        assert read["id"] > 0
    finally:
        await ws.close()
    row = phone.page.locator("[data-test=conversation-list] .list-item", has_text="Finn")
    await row.locator(".list-sub", has_text="got it").wait_for()
    await row.locator("[data-test=unread]").wait_for(state="detached")
    assert laptop.errors == [] and phone.errors == []


async def test_a_dialogs_first_field_does_not_take_the_focus_back(web: ServerBox,
                                                                  browser: Any) -> None:
    """The dialog focuses its first field a moment after opening; someone who has already moved
    to another field keeps typing there."""
    person = await new_person(browser, web, "13900000041", "Erin", viewport=DESKTOP,
                              locale="en-US")
    await person.register()
    await person.wait_online()
    page = person.page
    await person.menu("create-group")
    memo = page.locator("[data-test=create-group-form] input[name=memo]")
    await memo.focus()
    await page.wait_for_timeout(200)  # well past the dialog's own focus timer
    await page.keyboard.type("typed into the memo")
    assert await memo.input_value() == "typed into the memo"
    name = page.locator("[data-test=create-group-form] input[name=name]")
    assert await name.input_value() == ""
    assert person.errors == []
