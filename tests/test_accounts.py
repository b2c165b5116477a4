"""Accounts over real HTTP: register, login, find, logout, tokens, cookies, throttling."""

from __future__ import annotations

import pytest

from tests.factories import PASSWORD, close_all, register


async def test_register_logs_in_and_sets_httponly_cookie(server):
    client = server.client()
    response = await client.post("/user/register", data={
        "mobile": "13900000001", "passwd": "abcdef1", "nickname": "Ann", "avatar": "",
        "sex": "W"})
    body = response.json()
    assert response.status_code == 200 and body["code"] == 0
    assert body["data"]["mobile"] == "13900000001" and body["data"]["nickname"] == "Ann"
    assert len(body["data"]["token"]) >= 22 and "passwd" not in body["data"]
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    me = (await client.post("/user/me")).json()  # the cookie alone authenticates
    assert me["code"] == 0 and me["data"]["id"] == body["data"]["id"]
    await client.aclose()


async def test_register_accepts_json_bodies(server):
    async with server.client() as client:
        body = (await client.post("/user/register", json={
            "mobile": "13900000002", "passwd": "abcdef1", "nickname": "Bo"})).json()
    assert body["code"] == 0 and body["data"]["nickname"] == "Bo"


@pytest.mark.parametrize("form, reason", [
    ({"passwd": "abcdef1"}, "mobile is required"),
    ({"mobile": "1&2", "passwd": "abcdef1"}, "mobile must be"),
    ({"mobile": "13900000003"}, "password is required"),
    ({"mobile": "13900000003", "passwd": "123"}, "password must be"),
    ({"mobile": "13900000003", "passwd": "abcdef1", "sex": "X"}, "sex must be"),
    ({"mobile": "13900000003", "passwd": "abcdef1", "avatar": "javascript:alert(1)"}, "avatar"),
    ({"mobile": "13900000003", "passwd": "abcdef1", "nickname": "n" * 41}, "nickname is longer"),
])
async def test_register_refuses_bad_fields_with_400(server, form, reason):
    async with server.client() as client:
        response = await client.post("/user/register", data=form)
    assert response.status_code == 400
    assert response.json()["code"] == -1 and reason in response.json()["msg"]


async def test_register_twice_is_refused_and_keeps_first_account(server):
    first = await register(server, mobile="13900000004")
    async with server.client() as client:
        body = (await client.post("/user/register", data={
            "mobile": "13900000004", "passwd": "other-pass", "nickname": "x"})).json()
        assert body == {"code": -1, "msg": "this mobile is already registered", "reason": "conflict"}
        login = (await client.post("/user/login", data={
            "mobile": "13900000004", "passwd": PASSWORD})).json()
    assert login["code"] == 0 and login["data"]["id"] == first.id
    await close_all(first)


async def test_login_wrong_password_and_unknown_user_read_the_same(server):
    user = await register(server)
    async with server.client() as client:
        wrong = (await client.post("/user/login", data={"mobile": user.mobile,
                                                        "passwd": "wrong-pass"})).json()
        unknown = (await client.post("/user/login", data={"mobile": "10000000000",
                                                          "passwd": "wrong-pass"})).json()
    assert wrong == unknown == {"code": -1, "msg": "wrong mobile or password", "reason": "refused"}
    await close_all(user)


async def test_login_is_throttled_after_repeated_failures(server):
    user = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    async with server.client() as client:
        for _ in range(limit):
            body = (await client.post("/user/login", data={"mobile": user.mobile,
                                                           "passwd": "wrong-pass"})).json()
            assert body["msg"] == "wrong mobile or password"
        throttled = await client.post("/user/login", data={"mobile": user.mobile,
                                                           "passwd": PASSWORD})
    assert throttled.status_code == 429 and throttled.json()["code"] == -1
    await close_all(user)


async def test_token_stored_hashed_and_logout_revokes_it(server):
    from app.model.tables import AuthToken

    user = await register(server)
    stored = [row.token_hash for row in await AuthToken.filter(user_id=user.id)]
    assert user.token not in stored and len(stored[0]) == 64
    async with server.client() as bearer:
        headers = {"Authorization": f"Bearer {user.token}"}
        assert (await bearer.post("/user/me", headers=headers)).json()["code"] == 0
        out = await bearer.post("/user/logout", headers=headers)
        assert out.json()["code"] == 0
        again = await bearer.post("/user/me", headers=headers)
    assert again.status_code == 401 and again.json()["code"] == -1
    await close_all(user)


async def test_expired_token_is_refused(server):
    from app.model.tables import AuthToken

    user = await register(server)
    await AuthToken.filter(user_id=user.id).update(expires_ms=1)
    response = await user.client.post("/user/me")
    assert response.status_code == 401 and "expired" in response.json()["msg"]
    await close_all(user)


async def test_calls_without_credentials_get_401(server):
    async with server.client() as client:
        for path in ("/user/find", "/contact/loadfriend", "/contact/addfriend",
                     "/contact/loadcommunity", "/contact/createcommunity",
                     "/contact/joincommunity", "/attach/upload", "/user/logout"):
            response = await client.post(path, data={"id": 1})
            assert response.status_code == 401, path
            assert response.json()["code"] == -1


async def test_userid_naming_someone_else_is_refused(server):
    a = await register(server)
    b = await register(server)
    response = await a.client.post("/contact/loadfriend", data={"userid": b.id})
    assert response.status_code == 403 and response.json()["code"] == -1
    ok = await a.client.post("/contact/loadfriend", data={"userid": a.id})
    assert ok.json()["code"] == 0
    await close_all(a, b)


async def test_find_user(server):
    a = await register(server, nickname="Alice")
    b = await register(server)
    body = await b.post("/user/find", id=a.id)
    assert body["code"] == 0 and body["data"]["nickname"] == "Alice"
    assert "passwd" not in body["data"] and "token" not in body["data"]
    missing = await b.post("/user/find", id=999999)
    assert missing["code"] == -1
    bad = await b.client.post("/user/find", data={"id": "abc"})
    assert bad.status_code == 400
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"auth": {"registration_open": False}}])
async def test_closed_registration(server):
    async with server.client() as client:
        response = await client.post("/user/register", data={"mobile": "13911111111",
                                                             "passwd": "abcdef1"})
    assert response.status_code == 403 and "closed" in response.json()["msg"]


async def test_malformed_json_body_is_400(server):
    async with server.client() as client:
        response = await client.post("/user/login", content=b"{not json",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == -1


async def test_update_profile(server):
    user = await register(server, nickname="Before")
    body = await user.post("/user/update", nickname="After", avatar="/asset/img/avatar/a1.png",
                           sex="w", memo="hello")
    assert body["code"] == 0 and body["data"]["nickname"] == "After"
    assert body["data"]["sex"] == "W" and body["data"]["avatar"] == "/asset/img/avatar/a1.png"
    me = (await user.client.post("/user/me")).json()["data"]
    assert me["memo"] == "hello" and me["nickname"] == "After"
    for bad in ({"avatar": "https://evil.example/a.png"}, {"avatar": "/resource/../x"},
                {"sex": "Q"}, {"nickname": "n" * 41}):
        response = await user.client.post("/user/update", data=bad)
        assert response.status_code == 400, bad
    assert (await user.client.post("/user/me")).json()["data"]["nickname"] == "After"
    await close_all(user)


async def test_article_client_posts_for_sticker_pack_info(server):
    async with server.client() as client:
        response = await client.post("/asset/plugins/doutu/imface/info.json")
        assert response.status_code == 200 and "assets" in response.json()
        # The client folds "../" itself (so the server sees /app/settings.py, not routed); the
        # others reach the sticker route, which serves only info.json files inside the packs.
        for path, status in (("/asset/plugins/../../app/settings.py", 404),
                             ("/asset/plugins/doutu/imface/1.png", 200),
                             ("/asset/plugins/%2e%2e/%2e%2e/config.toml", 200)):
            refused = await client.post(path)
            assert refused.status_code == status and refused.json()["code"] == -1, path
            assert b"Settings" not in refused.content and b"[server]" not in refused.content
