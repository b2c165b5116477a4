"""The pages without a browser: the HTML shell for /, /register and /app with its headers, every
file it names being served, and the sticker packs in the article's `info.json` format."""

from __future__ import annotations

import json
import re
from typing import Any

from app.paths import ASSET_DIR
from tests.browser.conftest import ServerBox


async def test_each_page_is_the_shell_with_a_strict_policy(web: ServerBox) -> None:
    assert web.server is not None
    async with web.server.client() as client:
        for path, page in (("/", "login"), ("/register", "register"), ("/app", "app")):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert f'data-page="{page}"' in response.text
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            # Templates are compiled at build time: no eval, no inline script.
            script_src = next(p for p in policy.split("; ") if p.startswith("script-src"))
            assert script_src == "script-src 'self'", policy
            assert 'data-session="0"' in response.text
            assert "__ASSET_VERSION__" not in response.text
            assert "v-html" not in response.text
        shell = (await client.get("/")).text
        # Everything the shell loads is on this server, and is there.
        urls = re.findall(r'(?<![:\w-])src="([^"]+)"', shell)
        urls += re.findall(r'<link [^>]*href="([^"]+)"', shell)
        assert urls and all(url.startswith("/asset/") for url in urls), urls
        for url in urls:
            assert (await client.get(url)).status_code == 200, url


async def test_the_shell_says_whether_a_session_cookie_came(web: ServerBox) -> None:
    """The client probes /user/me only when the browser holds a session cookie (it cannot read
    the HttpOnly cookie itself); presence alone, never whether it is valid."""
    assert web.server is not None
    name = web.settings.auth.cookie_name
    async with web.server.client() as client:
        for path in ("/", "/register", "/app"):
            with_cookie = await client.get(path, headers={"cookie": f"{name}=whatever"})
            assert 'data-session="1"' in with_cookie.text, path
            other = await client.get(path, headers={"cookie": "unrelated=1"})
            assert 'data-session="0"' in other.text, path


def test_sticker_packs_follow_the_article_format() -> None:
    base = ASSET_DIR / "plugins" / "doutu"
    index = json.loads((base / "index.json").read_text("utf-8"))
    assert index["pkgids"]
    for pack_id in index["pkgids"]:
        info = json.loads((base / pack_id / "info.json").read_text("utf-8"))
        assert info["id"] == pack_id
        assert (base / pack_id / info["icon"]).is_file()
        assert len(info["assets"]) >= 8
        for name in info["assets"]:
            assert (base / pack_id / name).is_file(), name


async def test_api_browser_loads_nothing_from_outside(web: ServerBox) -> None:
    """/docs is Swagger UI from this server's own assets, under a policy with no inline or
    remote script: a LAN without internet sees it, and no CDN script runs with a session."""
    assert web.server is not None
    async with web.server.client() as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        script_src = next(p for p in policy.split("; ") if p.startswith("script-src"))
        assert script_src == "script-src 'self'", policy
        assert "<script>" not in page.text and "http" not in page.text.replace('"/', "")
        urls = re.findall(r'src="([^"]+)"', page.text) + re.findall(r'href="([^"]+)"', page.text)
        assert urls and all(url.startswith("/asset/") for url in urls), urls
        for url in urls:
            assert (await client.get(url)).status_code == 200, url
        assert (await client.get("/docs/openapi.json")).json()["info"]["title"] == "imchat"
        # sanic-ext's own OAuth2 helper page fetched Swagger UI from a CDN at request time.
        assert (await client.get("/docs/oauth2-redirect.html")).status_code == 404


async def test_api_browser_renders_in_chromium(web: ServerBox, browser: Any) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((web.base_url, "data:")) else None)
    await page.goto(f"{web.base_url}/docs")
    await page.get_by_text("/user/login", exact=True).first.wait_for(timeout=15000)
    assert not problems, problems
    assert not outside, outside
    await context.close()
