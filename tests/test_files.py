"""Files of any kind: stored byte for byte once per content, under a server-made name, with the
uploaded name (made safe) offered on download; served only to signed-in users, as downloads
under a type no browser runs, `nosniff` and a sandboxing policy; sent as file messages (media
6) that the article's client gets as a text line with the name and link."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from app.chat.wire import MEDIA_FILE, MEDIA_TEXT
from app.model.tables import Attachment
from app.service.file_types import safe_name
from tests.factories import befriend, close_all, connect, recv_until, register

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
ACTIVE_CONTENT = {
    "page.html": b"<!DOCTYPE html><script>alert(document.cookie)</script>",
    "image.svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    "feed.xml": b'<?xml version="1.0"?><x:script xmlns:x="http://www.w3.org/1999/xhtml">'
                b"alert(1)</x:script>",
    "app.js": b"fetch('/user/logout', {method: 'POST'})",
}


async def upload(user, data: bytes, name: str, **form: str):
    response = await user.client.post("/attach/upload", files={"file": (name, data)}, data=form)
    return response.json()


async def test_a_pdf_is_kept_byte_for_byte_and_downloaded_under_its_name(server):
    a = await register(server)
    body = await upload(a, PDF, "季度报告 Q3.pdf")
    assert body["code"] == 0, body
    assert (body["kind"], body["mime"], body["size"], body["name"]) == (
        "file", "application/pdf", len(PDF), "季度报告 Q3.pdf")
    assert body["data"].startswith("/resource/") and body["data"].endswith(".bin")
    assert body["thumb"] == ""
    fetched = await a.client.get(body["data"])
    assert fetched.status_code == 200 and fetched.content == PDF
    assert fetched.headers["content-type"] == "application/pdf"
    assert fetched.headers["content-disposition"] == (
        "attachment; filename=\"____ Q3.pdf\"; filename*=UTF-8''" + quote("季度报告 Q3.pdf"))
    assert fetched.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    # The web client's preview of a PDF, and the name a message gave it.
    preview = await a.client.get(body["data"], params={"preview": "1", "name": "x.pdf"})
    assert preview.headers["content-disposition"].startswith('inline; filename="x.pdf"')
    assert "sandbox" not in preview.headers["content-security-policy"]
    await close_all(a)


@pytest.mark.parametrize("name", sorted(ACTIVE_CONTENT))
async def test_what_a_browser_would_run_is_only_ever_a_download(server, name):
    a = await register(server)
    data = ACTIVE_CONTENT[name]
    body = await upload(a, data, name, filetype="text/html")
    assert body["code"] == 0 and body["kind"] == "file" and body["name"] == name, body
    assert body["mime"] == "application/octet-stream"
    for params in ({}, {"preview": "1"}, {"name": "evil.html"}):
        served = await a.client.get(body["data"], params=params)
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-type"] == "application/octet-stream"
        assert served.headers["content-disposition"].startswith("attachment; ")
        assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert served.headers["x-content-type-options"] == "nosniff"
    await close_all(a)


async def test_file_names_are_made_safe(server):
    a = await register(server)
    cases = {"../../etc/passwd": "passwd", "C:\\Users\\x\\报告.docx": "报告.docx",
             "invoice\u202egpj.exe": "invoice_gpj.exe", "...": "file", ".hidden": "hidden",
             "x" * 300 + ".xlsx": "x" * 115 + ".xlsx"}
    for number, (name, safe) in enumerate(cases.items()):
        body = await upload(a, b"plain text %d" % number, name)
        assert body["code"] == 0 and body["name"] == safe, (name, body)
        served = await a.client.get(body["data"])
        assert "\r" not in served.headers["content-disposition"]
        assert served.headers["content-disposition"].endswith(quote(safe, safe=""))
    await close_all(a)


@pytest.mark.parametrize("name, safe", [
    ("a\r\nSet-Cookie: x=1.txt", "a__Set-Cookie_ x=1.txt"), ("tab\there\x00.txt", "tab_here_.txt"),
    ("  spaced   out  .pdf ", "spaced out .pdf"), ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
    ("\u2066x\u2069.exe", "_x_.exe"), ("", "file")])
def test_the_name_rules_without_a_server(name, safe):
    assert safe_name(name) == safe


async def test_a_file_already_stored_answers_at_once_without_counting_again(server):
    a = await register(server)
    b = await register(server)
    data = b"PK\x03\x04" + bytes(range(256)) * 40
    first = await upload(a, data, "plan.xlsx")
    second = await upload(b, data, "copy of plan.xlsx")
    assert first["code"] == 0 and second["code"] == 0
    assert first["data"] == second["data"] and second["name"] == "copy of plan.xlsx"
    assert second["mime"] == "application/zip" and second["size"] == len(data)
    assert await Attachment.all().count() == 1
    record = await Attachment.get()
    assert (record.original_name, record.kind, record.uploader_id) == ("plan.xlsx", "file", a.id)
    assert [p.name for p in server.settings.upload_path.iterdir()] == [
        first["data"].removeprefix("/resource/")]
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"storage": {"max_upload_mb": 1}}])
async def test_a_file_over_the_limit_is_413(server):
    a = await register(server)
    response = await a.client.post("/attach/upload", files={
        "file": ("big.zip", b"PK\x03\x04" + b"\x00" * (1024 * 1024))})
    assert response.status_code == 413 and response.json()["code"] == -1
    assert await Attachment.all().count() == 0
    await close_all(a)


async def test_downloads_need_a_signed_in_user(server):
    a = await register(server)
    body = await upload(a, PDF, "secret.pdf")
    async with server.client() as anonymous:
        refused = await anonymous.get(body["data"])
        assert refused.status_code == 401 and refused.json()["code"] == -1
        assert PDF not in refused.content
        assert refused.headers["content-security-policy"] == "default-src 'none'; sandbox"
        by_token = await anonymous.get(body["data"], headers={
            "Authorization": f"Bearer {a.token}"})
        assert by_token.status_code == 200 and by_token.content == PDF
    await a.post("/user/logout")
    after_logout = await a.client.get(body["data"])
    assert after_logout.status_code == 401
    missing = await (await register(server)).client.get("/resource/" + "0" * 32 + ".bin")
    assert missing.status_code == 404
    await close_all(a)


async def _chat_pair(server):
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    return alice, bob


async def test_a_file_message_reaches_v2_as_a_file_and_v1_as_a_text_line(server):
    alice, bob = await _chat_pair(server)
    body = await upload(alice, PDF, "报告.pdf")
    bob_v2 = await connect(server, bob)
    bob_v1 = await connect(server, bob, v2=False)
    alice_ws = await connect(server, alice)
    await alice_ws.send(json.dumps({
        "cmd": 10, "dstid": bob.id, "media": MEDIA_FILE, "content": body["name"],
        "url": body["data"], "amount": body["size"], "memo": body["mime"], "cid": "file-1"}))
    ack = await recv_until(alice_ws, lambda f: f.get("cmd") == 100)
    as_file = await recv_until(bob_v2, lambda f: f.get("cmd") == 10)
    assert (as_file["id"], as_file["media"], as_file["content"], as_file["url"],
            as_file["amount"], as_file["memo"]) == (ack["id"], MEDIA_FILE, "报告.pdf",
                                                    body["data"], len(PDF), "application/pdf")
    as_text = await recv_until(bob_v1, lambda f: f.get("cmd") == 10)
    assert (as_text["id"], as_text["media"], as_text["url"]) == (ack["id"], MEDIA_TEXT, "")
    assert as_text["content"] == f"[file] 报告.pdf ({len(PDF)} B) {body['data']}"
    await bob_v1.close()
    # An article client that connects later is pushed the same text line from storage.
    late_v1 = await connect(server, bob, v2=False)
    await bob_v2.close()
    await alice_ws.close()
    await late_v1.close()
    history = await bob.post("/message/history", cmd=10, dstid=alice.id)
    assert [(m["media"], m["content"]) for m in history["rows"]] == [(MEDIA_FILE, "报告.pdf")]
    await close_all(alice, bob)


async def test_v1_catch_up_gets_the_text_line(server):
    alice, bob = await _chat_pair(server)
    body = await upload(alice, b"hello", "notes.txt")
    alice_ws = await connect(server, alice)
    await alice_ws.send(json.dumps({
        "cmd": 10, "dstid": bob.id, "media": MEDIA_FILE, "content": body["name"],
        "url": body["data"], "amount": 5, "cid": "file-2"}))
    await recv_until(alice_ws, lambda f: f.get("cmd") == 100)
    bob_v1 = await connect(server, bob, v2=False)
    pushed = await recv_until(bob_v1, lambda f: f.get("cmd") == 10)
    assert (pushed["media"], pushed["content"]) == (MEDIA_TEXT,
                                                    f"[file] notes.txt (5 B) {body['data']}")
    await bob_v1.close()
    await alice_ws.close()
    await close_all(alice, bob)
