"""The pages without a browser: the HTML shell for /, /register and /app with its headers, every
file it names being served, and the sticker packs in the article's `info.json` format."""

from __future__ import annotations

import json
import re

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
            assert "__ASSET_VERSION__" not in response.text
            assert "v-html" not in response.text
        shell = (await client.get("/")).text
        # Everything the shell loads is on this server, and is there.
        urls = re.findall(r'(?<![:\w-])src="([^"]+)"', shell)
        urls += re.findall(r'<link [^>]*href="([^"]+)"', shell)
        assert urls and all(url.startswith("/asset/") for url in urls), urls
        for url in urls:
            assert (await client.get(url)).status_code == 200, url


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
