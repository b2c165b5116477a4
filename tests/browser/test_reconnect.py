"""A page that outlives its server: the server stops and a new one starts on the same port and
database; the page shows that it is reconnecting, gets back what was sent while it was away,
and sends what was typed meanwhile exactly once (the client's `cid`)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.browser.conftest import DESKTOP, Person, ServerBox
from tests.factories import befriend, recv_until, register

pytestmark = pytest.mark.browser


async def history(web: ServerBox, token: str, peer: int) -> list[dict[str, Any]]:
    assert web.server is not None
    async with web.server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        answer = (await client.post("/message/history",
                                    json={"cmd": 10, "dstid": peer, "limit": 100})).json()
    assert answer["code"] == 0, answer
    return answer["rows"]


async def test_page_survives_a_server_restart(web: ServerBox, browser: Any) -> None:
    assert web.server is not None
    ann = await register(web.server, nickname="Ann", mobile="13900000041")
    ben = await register(web.server, nickname="Ben", mobile="13900000042")
    await befriend(ann, ben)
    for user in (ann, ben):
        await user.client.aclose()

    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    person = Person(page, web.base_url, ann.mobile, "Ann")
    await person.login()
    await person.wait_online()
    await page.click("[data-test=tab-contacts]")
    await page.click(f'[data-friend="{ben.mobile}"]')
    await person.wait_title("Ben")
    await person.send_text("before the restart")
    await page.locator(".msg.mine", has_text="before the restart").locator(
        "[data-test=receipt]").wait_for()
    last_id = (await history(web, ann.token, ben.id))[-1]["id"]

    # The server goes away: the page says it is reconnecting and keeps what Ann writes.
    await web.stop()
    banner = page.locator("[data-test=conn-banner]")
    await banner.wait_for()
    await person.send_text("typed while the server was down")
    queued = page.locator(".msg.mine", has_text="typed while the server was down")
    await queued.locator("[data-test=status]").wait_for()

    # Ann's page may not come back before Ben has written: until then its attempts to
    # connect are turned away (Playwright stands in for the network).
    gate = {"open": False}
    attempts: list[str] = []

    async def network(route: Any) -> None:
        attempts.append("through" if gate["open"] else "refused")
        if gate["open"]:
            route.connect_to_server()
        else:
            await route.close(code=1012)  # "service restart"

    await page.route_web_socket(re.compile(r".*/chat\b.*"), network)

    # A new server on the same port and database; Ben writes before Ann's page is back.
    restarted = await web.start()
    # Ben connects syncing from the last message he knows (he may catch Ann's queued message
    # live or in that sync, as long as it comes exactly once).
    ben_ws = await ws_connect(f"{restarted.ws_url}/chat?v=2&since={last_id}",
                              additional_headers={"Authorization": f"Bearer {ben.token}"})
    try:
        await ben_ws.send(json.dumps({"cmd": 10, "dstid": ann.id, "media": 1,
                                      "content": "sent while you were away", "cid": "ben-1"}))
        seen: list[dict[str, Any]] = []  # frames before the ack may hold Ann's message

        def acked(frame: dict[str, Any]) -> bool:
            seen.append(frame)
            return frame.get("cmd") == 100 and frame.get("cid") == "ben-1"

        await recv_until(ben_ws, acked)
        gate["open"] = True

        # Ann's page comes back by itself, catches up, and delivers her queued message.
        await person.wait_message("sent while you were away", timeout=30_000)
        await banner.wait_for(state="detached")
        await queued.locator("[data-test=receipt]").wait_for()
        from_ann = [f for f in seen if f.get("cmd") == 10 and f.get("userid") == ann.id]
        if not from_ann:
            from_ann.append(await recv_until(
                ben_ws, lambda f: f.get("cmd") == 10 and f.get("userid") == ann.id, timeout=10))
        assert [f["content"] for f in from_ann] == ["typed while the server was down"]
    finally:
        await ben_ws.close()

    assert await person.message("sent while you were away").count() == 1
    assert await person.message("typed while the server was down").count() == 1
    texts = [row["content"] for row in await history(web, ann.token, ben.id)]
    assert texts == ["before the restart", "sent while you were away",
                     "typed while the server was down"]
    assert attempts and attempts[-1] == "through"  # it came back through the gate

    # A reload shows the same conversation, each message once.
    await page.reload()
    await person.wait_online()
    await person.open_chat_with("Ben")
    await person.wait_message("sent while you were away")
    shown = await page.locator("[data-test=msg-text]").all_inner_texts()
    assert shown == texts
    assert person.errors == []
