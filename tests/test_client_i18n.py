"""The web client's words (asset/js/i18n.js): both languages have the same keys, every key is
used by the client, and every key the client asks for exists (a missing one would show the key
itself on the page)."""

from __future__ import annotations

import re
from pathlib import Path

from app.chat import wire

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "asset" / "js"
I18N = CLIENT / "i18n.js"
# Keys the client builds from a prefix (register.html: t('sex' + option); store/view.js:
# t('notice_' + event) for each group event of the wire vocabulary).
BUILT = {"sexM", "sexW", "sexU"} | {f"notice_{event}" for event in wire.GROUP_EVENTS}


# Words of parts loaded separately (i18n-admin.js), added to i18n.js's tables by IM.i18n.add.
PARTS = sorted(CLIENT.glob("i18n-*.js"))


# Words of parts loaded separately (i18n-admin.js), added to i18n.js's tables by IM.i18n.add.
PARTS = sorted(CLIENT.glob("i18n-*.js"))


def _tables() -> dict[str, set[str]]:
    key = re.compile(r"^      (\w+):", re.M)
    tables: dict[str, set[str]] = {"en": set(), "zh-CN": set()}
    for path in (I18N, *PARTS):
        text = path.read_text(encoding="utf-8")
        end = "  var LANGS" if path == I18N else "  });"
        english = text[text.index("    en: {"):text.index("    'zh-CN': {")]
        chinese = text[text.index("    'zh-CN': {"):text.index(end)]
        for lang, part in (("en", english), ("zh-CN", chinese)):
            found = set(key.findall(part))
            assert not found & tables[lang], f"{path.name} repeats {found & tables[lang]}"
            tables[lang] |= found
    return tables


def _client_source() -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(CLIENT.rglob("*"))
                   if p.suffix in (".js", ".html") and p != I18N and p not in PARTS)


def test_both_languages_have_the_same_keys() -> None:
    tables = _tables()
    assert tables["en"] and tables["en"] == tables["zh-CN"]


def test_every_key_is_used_and_every_used_key_exists() -> None:
    keys = _tables()["en"]
    source = _client_source()
    # t('key' ...) and keys handed to a helper that translates them (dialogs.js: groupReady).
    asked = set(re.findall(r"\bt\(\s*'(\w+)'", source))
    asked |= set(re.findall(r"groupReady\([^)]*'(\w+)'\)", source))
    assert asked <= keys, f"keys the client asks for but i18n.js lacks: {sorted(asked - keys)}"
    unused = keys - asked - BUILT
    assert not unused, f"keys no client file uses: {sorted(unused)}"
