"""Browser-test fixtures: a real imchat server (SQLite, in this event loop, with the web
client's pages) and Debian's chromium driven by Playwright's async API.

Without /usr/bin/chromium (or without the Playwright package) the browser tests are skipped
with a clear reason; under CI=true that is a failure instead. Owns nothing but these fixtures
and the `Person` helper that drives one user's page.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import app.server as server_module
from app.controller.pages import pages_bp
from app.paths import ASSET_DIR
from tests.harness import RunningServer, make_settings, start_server, unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SKIP_REASON = "browser tests skipped: chromium not installed"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
REPO = Path(__file__).resolve().parents[2]
# Screenshots land in docs/screenshots/ when IMCHAT_SCREENSHOTS=1 (to refresh the committed
# ones), otherwise in the test's temporary directory.
SCREENSHOTS_TO_DOCS = os.environ.get("IMCHAT_SCREENSHOTS") == "1"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        unavailable(SKIP_REASON)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        unavailable("browser tests skipped: the playwright package is not installed")
    for built in ("vendor/vue.runtime.global.prod.js", "build/templates.js"):
        if not (ASSET_DIR / built).exists():
            pytest.fail(f"asset/{built} is missing: run `make assets` "
                        "(scripts/build_assets.sh) first")
    return CHROMIUM


@pytest.fixture
def with_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Serve the pages even before app/server.py lists pages_bp among its blueprints."""
    if pages_bp not in server_module.BLUEPRINTS:
        monkeypatch.setattr(server_module, "BLUEPRINTS", [*server_module.BLUEPRINTS, pages_bp])
    yield


@pytest.fixture
def web_settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path, "sqlite")


class ServerBox:
    """The running server, which a test may stop and start again on the same port and
    database (a restart)."""

    def __init__(self, server: RunningServer) -> None:
        self.server: RunningServer | None = server
        self.settings = server.settings
        self.port = server.port
        self.base_url = server.base_url

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def start(self) -> RunningServer:
        assert self.server is None, "stop the server first"
        self.server = await start_server(self.settings, port=self.port)
        return self.server


@pytest.fixture
async def web(web_settings: Any, with_pages: None) -> AsyncIterator[ServerBox]:
    box = ServerBox(await start_server(web_settings))
    try:
        yield box
    finally:
        await box.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def browser(chromium_path: str, request: pytest.FixtureRequest,
                  tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            if request.node.stash.get(_FAILED, False):
                await _keep_evidence(launched, tmp_path)
            await launched.close()


async def _keep_evidence(browser: Any, folder: Path) -> None:
    """After a failure, a screenshot of every open page, for whoever reads the log."""
    number = 0
    for context in browser.contexts:
        for page in context.pages:
            number += 1
            path = folder / f"failure-page{number}.png"
            try:
                await page.screenshot(path=str(path))
            except Exception as error:  # a crashed page: say so and go on
                path = Path(f"(no screenshot: {error})")
            sys.stderr.write(f"browser test failed; page {number} at {page.url}: {path}\n")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = REPO / "docs" / "screenshots" if SCREENSHOTS_TO_DOCS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Person:
    """One user in one browser context: drives the page the way a person would."""

    def __init__(self, page: Any, base_url: str, mobile: str, nickname: str) -> None:
        self.page = page
        self.base_url = base_url
        self.mobile = mobile
        self.nickname = nickname
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", lambda dialog: self.errors.append(f"dialog: {dialog.message}"))

    async def register(self, password: str = "secret-pass-1", avatar_file: Path | None = None,
                       builtin_avatar: int | None = None) -> None:
        page = self.page
        await page.goto(self.base_url + "/register")
        await page.wait_for_selector("[data-test=register-submit]")
        if avatar_file is not None:
            await page.set_input_files("[data-test=avatar-file]", str(avatar_file))
            await page.wait_for_selector("[data-test=avatar-preview]")
        elif builtin_avatar is not None:
            await page.locator(".builtin").nth(builtin_avatar).click()
        await page.fill("input[name=nickname]", self.nickname)
        await page.fill("input[name=mobile]", self.mobile)
        await page.fill("input[name=passwd]", password)
        await page.click("[data-test=register-submit]")
        await page.wait_for_url(re.compile(r".*/app$"))
        await page.wait_for_selector(".sidebar-head")

    async def login(self, password: str = "secret-pass-1") -> None:
        page = self.page
        await page.goto(self.base_url + "/")
        await page.wait_for_selector("[data-test=login-submit]")
        await page.fill("input[name=mobile]", self.mobile)
        await page.fill("input[name=passwd]", password)
        await page.click("[data-test=login-submit]")
        await page.wait_for_url(re.compile(r".*/app$"))
        await page.wait_for_selector(".sidebar-head")

    async def wait_online(self) -> None:
        await self.page.wait_for_selector(".me-text small.conn-online")

    async def menu(self, item: str) -> None:
        await self.page.click("[data-test=plus-menu]")
        await self.page.click(f"[data-test=menu-{item}]")

    async def add_friend(self, mobile: str) -> None:
        await self.menu("add-friend")
        await self.page.fill("[data-test=add-friend-form] input[name=dstname]", mobile)
        await self.page.click("[data-test=add-friend-form] button[type=submit]")
        await self.page.wait_for_selector("[data-test=add-friend-form]", state="detached")

    async def create_group(self, name: str, memo: str = "") -> None:
        await self.menu("create-group")
        await self.page.fill("[data-test=create-group-form] input[name=name]", name)
        if memo:
            await self.page.fill("[data-test=create-group-form] input[name=memo]", memo)
        await self.page.click("[data-test=create-group-form] button[type=submit]")
        await self.page.wait_for_selector("[data-test=create-group-form]", state="detached")
        await self.wait_title(name)

    async def join_group(self, name: str) -> None:
        await self.menu("join-group")
        await self.page.fill("[data-test=join-group-form] input[name=dstname]", name)
        await self.page.click("[data-test=join-group-form] button[type=submit]")
        await self.page.wait_for_selector("[data-test=join-group-form]", state="detached")
        await self.wait_title(name)

    async def wait_title(self, title: str) -> None:
        await self.page.locator("[data-test=conv-title]", has_text=title).wait_for()

    async def open_chat_with(self, title: str) -> None:
        """Open a conversation from the Chats tab by its title."""
        await self.page.click("[data-test=tab-chats]")
        await self.page.locator("[data-test=conversation-list] .list-item",
                                has_text=title).first.click()
        await self.wait_title(title)

    async def type_message(self, text: str) -> None:
        await self.page.locator("[data-test=composer]").press_sequentially(text, delay=5)

    async def send_text(self, text: str) -> None:
        await self.page.fill("[data-test=composer]", text)
        await self.page.click("[data-test=send]")

    def message(self, text: str) -> Any:
        return self.page.locator("[data-test=msg-text]", has_text=text)

    async def wait_message(self, text: str, timeout: float = 10_000) -> Any:
        locator = self.message(text)
        await locator.first.wait_for(timeout=timeout)
        return locator

    async def screenshot(self, path: Path) -> None:
        await self.page.screenshot(path=str(path), animations="disabled")
