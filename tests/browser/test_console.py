"""A clean console: a fresh visitor's first load, sign-up, log-out, sign-in and a reload of the
chat log no error at all (no failed request — the logged-out session probe used to log two
401s — and no script error), under the page's own strict CSP (no 'unsafe-eval')."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, Person, ServerBox

pytestmark = pytest.mark.browser


def watch_console(page: Any) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # A load the page itself abandons (pictures still coming when it navigates away) is
    # net::ERR_ABORTED: not a failure anyone sees.
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}")
            if "ERR_ABORTED" not in (r.failure or "") else None)
    return problems


async def test_no_console_errors_from_first_load_through_sign_in(web: ServerBox,
                                                                 browser: Any) -> None:
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    problems = watch_console(page)
    statuses: list[str] = []
    page.on("response", lambda r: statuses.append(f"{r.status} {r.url}")
            if r.status >= 400 else None)
    person = Person(page, web.base_url, "13900000071", "Clean Console")

    # A fresh visitor: the log-in page, with nothing failing behind it.
    await page.goto(web.base_url + "/")
    await page.wait_for_selector("[data-test=login-submit]")
    await page.wait_for_load_state("networkidle")
    assert not problems, problems
    assert not statuses, statuses

    # The visitor follows the link to sign up, and lands in the chat.
    await page.click(".auth-switch a")
    await page.wait_for_url(re.compile(r".*/register$"))
    await person.register()
    await person.wait_online()

    # Log out, then sign in again.
    await page.click("[data-test=open-profile]")
    await page.click("[data-test=logout]")
    await page.wait_for_selector("[data-test=login-submit]")
    await person.login()
    await person.wait_online()

    # A reload with the session cookie: the probe runs and succeeds.
    await page.reload()
    await person.wait_online()
    await page.wait_for_load_state("networkidle")

    assert not problems, problems
    assert not statuses, statuses
    assert not person.errors, person.errors
    await context.close()


async def test_a_stale_session_cookie_still_lands_on_the_log_in_page(web: ServerBox,
                                                                     browser: Any) -> None:
    """A cookie the server no longer knows: the probe answers 401 and the page shows the
    log-in form (the one case where the probe runs and fails)."""
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    await context.add_cookies([{"name": web.settings.auth.cookie_name, "value": "not-a-token",
                                "url": web.base_url}])
    page = await context.new_page()
    page.set_default_timeout(15_000)
    await page.goto(web.base_url + "/app")
    await page.wait_for_selector("[data-test=login-submit]")
    assert page.url.rstrip("/") == web.base_url
    await context.close()
