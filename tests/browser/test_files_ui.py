"""Files and voice in the web client, in a real chromium: a PDF sent from a desktop arrives on
a phone as a card with its name, size and type icon, downloads under its name (with the
session cookie) and previews; a picture sent as a file shows its picture; a voice clip recorded
by holding the microphone (chromium's fake microphone) arrives as a playable clip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM_ARGS, DESKTOP, PHONE, Person, ServerBox
from tests.browser.test_web_client import new_person, picture_file

pytestmark = pytest.mark.browser

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# A microphone without a person: chromium answers getUserMedia with a test tone, and lets the
# page have it without asking.
FAKE_MICROPHONE = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path,
                                                    args=CHROMIUM_ARGS + FAKE_MICROPHONE)
        try:
            yield launched
        finally:
            await launched.close()


async def _friends(browser: Any, web: ServerBox) -> tuple[Person, Person]:
    alice = await new_person(browser, web, "13900000011", "Alice", viewport=DESKTOP,
                             locale="en-US")
    bob = await new_person(browser, web, "13900000012", "王小明", viewport=PHONE,
                           locale="zh-CN", scale=2)
    await alice.register()
    await bob.register()
    await alice.wait_online()
    await bob.wait_online()
    await alice.add_friend(bob.mobile)
    await alice.wait_title(bob.nickname)
    return alice, bob


async def test_a_file_goes_from_desktop_to_phone_and_downloads(web: ServerBox, browser: Any,
                                                               tmp_path: Path) -> None:
    alice, bob = await _friends(browser, web)
    a, b = alice.page, bob.page
    report = tmp_path / "季度报告 Q3.pdf"
    report.write_bytes(PDF)
    await a.set_input_files("[data-test=file-input]", str(report))
    mine = a.locator(".msg.mine [data-test=msg-file]")
    await mine.wait_for()
    await mine.locator("..").locator("xpath=ancestor::div[contains(@class,'msg')]").locator(
        "[data-test=receipt]").first.wait_for()

    await bob.open_chat_with(alice.nickname)
    card = b.locator("[data-test=msg-file]").first
    await card.wait_for()
    assert await card.get_attribute("data-name") == "季度报告 Q3.pdf"
    assert await card.locator(".file-name").inner_text() == "季度报告 Q3.pdf"
    assert await card.locator(".file-icon").inner_text() == "PDF"
    assert await card.locator(".muted").inner_text() == f"{len(PDF)} B"
    href = await card.locator("[data-test=file-download]").get_attribute("href") or ""
    assert href.startswith("/resource/") and "?name=" in href
    assert await card.locator("[data-test=file-download]").get_attribute(
        "download") == "季度报告 Q3.pdf"
    # The link works with the session cookie, and the file comes back as it was sent.
    fetched = await b.request.get(web.base_url + href)
    assert fetched.status == 200 and await fetched.body() == PDF
    assert fetched.headers["content-disposition"].startswith("attachment; ")
    # The preview shows the PDF in a frame.
    await card.locator("[data-test=file-preview]").click()
    frame = b.locator("[data-test=pdf-frame]")
    assert "preview=1" in (await frame.get_attribute("src") or "")
    await b.keyboard.press("Escape")
    await frame.wait_for(state="detached")

    # A picture sent as a file: a card with the picture in it.
    photo = picture_file(tmp_path, "holiday.png", (320, 200))
    await a.set_input_files("[data-test=file-input]", str(photo))
    pictured = b.locator("[data-test=msg-file][data-name='holiday.png'] [data-test=file-picture] img")
    await pictured.wait_for()
    await b.wait_for_function(
        "() => { const i = document.querySelector('[data-test=file-picture] img');"
        " return i && i.complete && i.naturalWidth > 0; }")
    # The chat list says what arrived.
    await b.click("[data-test=back]")
    row = b.locator("[data-test=conversation-list] .list-item", has_text=alice.nickname)
    await row.locator(".list-sub", has_text="[文件] holiday.png").wait_for()
    assert alice.errors == [] and bob.errors == []


async def test_a_voice_clip_is_recorded_by_holding_the_microphone(web: ServerBox,
                                                                  browser: Any) -> None:
    alice, bob = await _friends(browser, web)
    a, b = alice.page, bob.page
    microphone = a.locator("[data-test=voice-record]")
    await microphone.hover()
    await a.mouse.down()
    await a.locator("[data-test=recording]").wait_for()
    await a.wait_for_timeout(1600)
    await a.mouse.up()
    await a.locator("[data-test=recording]").wait_for(state="detached")
    await bob.open_chat_with(alice.nickname)
    clip = b.locator("[data-test=msg-voice] audio").first
    await clip.wait_for()
    src = await clip.get_attribute("src") or ""
    assert src.startswith("/resource/") and src.endswith((".webm", ".ogg")), src
    fetched = await b.request.get(web.base_url + src)
    assert fetched.status == 200 and fetched.headers["content-type"].startswith("audio/")
    assert len(await fetched.body()) > 1000
    # A tap is not a clip: nothing is sent.
    await microphone.hover()
    await a.mouse.down()
    await a.mouse.up()
    await a.wait_for_timeout(500)
    assert await b.locator("[data-test=msg-voice]").count() == 1
    assert alice.errors == [] and bob.errors == []
