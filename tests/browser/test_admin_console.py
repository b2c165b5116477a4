"""The admin console (/admin) in a real chromium against a real server: an administrator finds
it in the chat's menu, reads the dashboard, manages an account (disable, enable, new password,
admin role, a new account), a group (members, new owner, export download, dissolving it after a
confirmation), reads and filters the audit log and downloads it as CSV, and closes sign-up; a
user without the role never sees it."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.model.tables import Community, User
from app.service import admin
from tests.browser.conftest import DESKTOP, Person, ServerBox
from tests.factories import close_all, connect, make_group, recv_until, register, send_texts

pytestmark = pytest.mark.browser


async def open_as(browser: Any, web: ServerBox, mobile: str,
                  locale: str = "en") -> tuple[Any, Person, list[str]]:
    context = await browser.new_context(viewport=DESKTOP, locale=locale, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    person = Person(page, web.base_url, mobile, mobile)
    await person.login()
    return context, person, console_errors


async def test_an_administrator_manages_accounts_groups_audit_and_sign_up(
        web: ServerBox, browser: Any, shots: Path, tmp_path: Path) -> None:
    server = web.server
    assert server is not None
    boss = await register(server, "Boss")
    await admin.grant_admin(admin.COMMAND_LINE, await User.get(id=boss.id))
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    group = await make_group(ann, "ops team", bob)
    closing = await make_group(ann, "to close", bob)
    await send_texts(server, bob, 11, group, ["deploy at five"])
    await close_all(boss, ann, bob)

    context, person, console_errors = await open_as(browser, web, boss.mobile)
    page = person.page
    await person.menu("admin")
    await page.wait_for_url(re.compile(r".*/admin$"))
    await page.locator("[data-test=stat-accounts] strong", has_text="3").wait_for()
    await person.screenshot(shots / "admin-dashboard.png")

    # Accounts: find Ann, disable and enable her, give her a new password and the admin role.
    await page.click("[data-test=admin-tab-users]")
    await page.fill("[data-test=admin-user-search]", ann.mobile)
    await page.press("[data-test=admin-user-search]", "Enter")
    row = page.locator(f"[data-test=admin-user-{ann.mobile}]")
    await page.locator("[data-test=admin-user-total]", has_text="1 found").wait_for()
    await row.locator("[data-test=user-disable]").click()
    await row.locator("[data-test=badge-disabled]").wait_for()
    assert (await User.get(id=ann.id)).disabled is True
    await row.locator("[data-test=user-enable]").click()
    await row.locator("[data-test=badge-disabled]").wait_for(state="detached")
    await row.locator("[data-test=user-password]").click()
    await page.fill("[data-test=admin-user-form] input[name=passwd]", "brand-new-pass")
    await page.click("[data-test=admin-user-form] button[type=submit]")
    await page.wait_for_selector("[data-test=admin-user-form]", state="detached")
    async with server.client() as client:
        login = await client.post("/user/login", data={"mobile": ann.mobile, "passwd": "brand-new-pass"})
        assert login.json()["code"] == 0
    await row.locator("[data-test=user-grant]").click()
    await row.locator("[data-test=badge-admin]").wait_for()
    assert await admin.is_admin(ann.id)
    # A new account, made an administrator from the form.
    await page.click("[data-test=admin-create-user]")
    form = page.locator("[data-test=admin-user-form]")
    await form.locator("input[name=mobile]").fill("13912345678")
    await form.locator("input[name=nickname]").fill("Newcomer")
    await form.locator("input[name=passwd]").fill("welcome-pass-1")
    await form.locator("input[name=admin]").check()
    await form.locator("button[type=submit]").click()
    await form.wait_for(state="detached")
    newcomer = await User.get(mobile="13912345678")
    assert newcomer.nickname == "Newcomer" and await admin.is_admin(newcomer.id)
    await person.screenshot(shots / "admin-users.png")

    # Groups: the members, a new owner, and the export archive.
    await page.click("[data-test=admin-tab-groups]")
    group_row = page.locator(f"[data-test=admin-group-{group}]")
    await group_row.locator("[data-test=group-members]").click()
    members = page.locator("[data-test=group-member-list] li")
    await members.nth(1).wait_for()
    assert await members.count() == 2
    await page.select_option("[data-test=group-new-owner]", str(bob.id))
    await page.click("[data-test=group-transfer]")
    await group_row.locator("[data-test=group-owner]", has_text=str(bob.id)).wait_for()
    async with page.expect_download() as download_info:
        await group_row.locator("[data-test=group-export]").click()
    archive = tmp_path / "group.zip"
    await (await download_info.value).save_as(archive)
    with zipfile.ZipFile(archive) as opened:
        assert opened.read("messages.jsonl").decode().count("deploy at five") == 1
    # Dissolve the other group: asked once more, then its members are told at once.
    bob_phone = await connect(server, bob)
    closing_row = page.locator(f"[data-test=admin-group-{closing}]")
    await closing_row.locator("[data-test=group-dissolve]").click()
    await page.locator("[data-test=group-dissolve-confirm]", has_text="to close").wait_for()
    await page.click("[data-test=dissolve-cancel]")
    assert await Community.filter(id=closing).exists()
    await closing_row.locator("[data-test=group-dissolve]").click()
    await person.screenshot(shots / "admin-dissolve.png")
    await page.click("[data-test=dissolve-yes]")
    await closing_row.wait_for(state="detached")
    told = await recv_until(bob_phone, lambda f: f.get("memo") == "dissolved")
    assert (told["dstid"], told["userid"]) == (closing, boss.id)
    await bob_phone.close()
    assert not await Community.filter(id=closing).exists()

    # Audit: what was just done, filtered by action, and as CSV.
    await page.click("[data-test=admin-tab-audit]")
    rows = page.locator("[data-test=audit-row]")
    await rows.first.wait_for()
    await page.select_option("[data-test=audit-action]", "user.disable")
    await page.click("[data-test=audit-apply]")
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-test=audit-row]')].map(r => r.dataset.action)"
        ".join() === 'user.disable'")
    async with page.expect_download() as csv_info:
        await page.click("[data-test=audit-csv]")
    csv_file = tmp_path / "audit.csv"
    await (await csv_info.value).save_as(csv_file)
    table = list(csv.reader(io.StringIO(csv_file.read_text())))
    assert [row[2] for row in table[1:]] == ["user.disable"]
    await person.screenshot(shots / "admin-audit.png")

    # Sign-up closed from the dashboard, at once.
    await page.click("[data-test=admin-tab-dashboard]")
    await page.click("[data-test=toggle-signup]")
    await page.locator("[data-test=signup-state]", has_text="closed").wait_for()
    assert web.settings.auth.registration_open is False
    await page.click("[data-test=admin-back]")
    await page.wait_for_url(re.compile(r".*/app$"))
    assert person.errors == [] and console_errors == []
    await context.close()


async def test_the_console_speaks_chinese_and_is_not_offered_to_others(web: ServerBox, browser: Any) -> None:
    server = web.server
    assert server is not None
    boss = await register(server, "Boss")
    await admin.grant_admin(admin.COMMAND_LINE, await User.get(id=boss.id))
    carol = await register(server, "Carol")
    await close_all(boss, carol)

    context, person, console_errors = await open_as(browser, web, boss.mobile, locale="zh-CN")
    await person.page.goto(web.base_url + "/admin")
    await person.page.locator("[data-test=admin-tab-users]", has_text="账号").wait_for()
    await person.page.locator("[data-test=admin-console] h1", has_text="管理控制台").wait_for()
    assert person.errors == [] and console_errors == []
    await context.close()

    context, person, console_errors = await open_as(browser, web, carol.mobile)
    page = person.page
    await page.click("[data-test=plus-menu]")
    await page.locator("[data-test=menu-join-group]").wait_for()
    assert await page.locator("[data-test=menu-admin]").count() == 0
    await page.goto(web.base_url + "/admin")
    await page.wait_for_url(re.compile(r".*/app$"))
    await page.wait_for_selector(".sidebar-head")
    assert await page.locator("[data-test=admin-console]").count() == 0
    assert person.errors == [] and console_errors == []
    await context.close()
