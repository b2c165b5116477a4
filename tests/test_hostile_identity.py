"""A hostile client against sign-in and identity: account-name spellings, guessing and lockout,
what one user may learn of another, and where credentials may travel. Real server, real HTTP
clients from several loopback addresses; SQLite and MariaDB where the database decides."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from app.model.tables import AuthToken, User
from tests.factories import (
    PASSWORD,
    befriend,
    close_all,
    connect,
    make_group,
    recv_json,
    recv_until,
    register,
)
from tests.harness import RunningServer
from tests.hostile import (
    assert_clean_error,
    client_from,
    close_code,
    post_raw_json,
    refused_status,
    sqlite_only,
)


async def login_from(server: RunningServer, address: str, mobile: str,
                     password: str) -> httpx.Response:
    async with client_from(server, address) as client:
        return await client.post("/user/login", data={"mobile": mobile, "passwd": password})


def spellings(mobile: str) -> list[str]:
    """Ways to write an account name that a lenient comparison (MySQL's accent- and
    case-insensitive collations, Unicode case folding) takes for the same name."""
    accented = mobile.replace("a", "à").replace("e", "è").replace("i", "í").replace("o", "ö")
    return [accented, accented.upper(), mobile.replace("i", "ı"), f"{mobile[:-1]}\u00a0",
            mobile.replace("s", "ſ"), "Ａ" + mobile[1:]]


async def test_accented_spellings_of_a_mobile_never_sign_in(server):
    """On MariaDB `àlìcè` compared equal to `alice`: the right password under such a
    spelling signed in as the victim, and each spelling had its own throttle."""
    mobile = "alicesio" + uuid.uuid4().hex[:6]
    victim = await register(server, mobile=mobile)
    for n, variant in enumerate(spellings(mobile)):
        answer = await login_from(server, f"127.0.1.{n + 1}", variant, PASSWORD)
        assert answer.status_code == 200, (variant, answer.text)
        assert answer.json() == {"code": -1, "msg": "wrong mobile or password",
                                 "reason": "refused"}, (variant, answer.text)
    # Adding a friend by such a spelling does not find the account either.
    other = await register(server)
    added = await other.post("/contact/addfriend", dstname=spellings(mobile)[0])
    assert added["code"] == -1, added
    assert (await login_from(server, "127.0.1.99", mobile, PASSWORD)).json()["code"] == 0
    await close_all(victim, other)


async def test_a_guesser_cannot_lock_the_owner_out(server):
    """Ten wrong guesses a minute for an account kept its owner at 429, right password or not."""
    victim = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    for i in range(limit):
        wrong = await login_from(server, "127.0.2.1", victim.mobile, f"wrong-{i}")
        assert wrong.json()["code"] == -1
    assert (await login_from(server, "127.0.2.1", victim.mobile, "wrong-x")).status_code == 429
    owner = await login_from(server, "127.0.2.2", victim.mobile, PASSWORD)
    assert owner.status_code == 200 and owner.json()["code"] == 0, owner.text
    await close_all(victim)


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"auth": {"account_login_attempts_per_hour": 12}}])
async def test_distributed_guessing_is_bounded_per_account_but_spares_known_addresses(server):
    mobile = "hx" + uuid.uuid4().hex[:10]
    victim = await register(server, mobile=mobile)
    # The owner's usual desk.
    assert (await login_from(server, "127.0.3.1", mobile, PASSWORD)).json()["code"] == 0
    budget = server.settings.auth.account_login_attempts_per_hour
    for i in range(budget):
        wrong = await login_from(server, f"127.0.3.{10 + i}", mobile, f"wrong-{i}")
        assert wrong.json()["code"] == -1, wrong.text
    # Now every further guess from a new address is refused, whatever it tries.
    for n, variant in enumerate([mobile, mobile.upper(), f" {mobile} ", *spellings(mobile)]):
        attempt = await login_from(server, f"127.0.3.{100 + n}", variant, PASSWORD)
        assert attempt.json()["code"] == -1, (variant, attempt.text)
    blocked = await login_from(server, "127.0.3.200", mobile, PASSWORD)
    assert blocked.status_code == 429, blocked.text
    # The owner at a known address still gets in.
    owner = await login_from(server, "127.0.3.1", mobile, PASSWORD)
    assert owner.status_code == 200 and owner.json()["code"] == 0, owner.text
    await close_all(victim)


async def test_strangers_learn_neither_mobile_nor_presence(server):
    """`/user/find` walked ids 1..n and answered every mobile number, and `online` for users who
    are not friends; `/contact/members` did the same inside a group."""
    alice = await register(server)
    friend = await register(server)
    member = await register(server)
    stranger = await register(server)
    await befriend(alice, friend)
    group_id = await make_group(alice, "g" + uuid.uuid4().hex[:8], member)
    sockets = [await connect(server, user) for user in (friend, member, stranger)]

    async def find(user_id: int) -> dict:
        body = await alice.post("/user/find", id=user_id)
        assert body["code"] == 0, body
        return body["data"]

    assert (await find(alice.id))["mobile"] == alice.mobile
    seen_friend = await find(friend.id)
    assert seen_friend["mobile"] == friend.mobile and seen_friend["online"] == 1
    for other in (member, stranger):
        seen = await find(other.id)
        assert seen["mobile"] == "" and seen["online"] == 0, seen
        assert seen["id"] == other.id and seen["nickname"] == other.data["nickname"]
    members = (await alice.post("/contact/members", id=group_id))["rows"]
    by_id = {row["id"]: row for row in members}
    assert by_id[member.id]["mobile"] == "" and by_id[member.id]["online"] == 0
    assert by_id[alice.id]["mobile"] == alice.mobile
    for ws in sockets:
        await ws.close()
    await close_all(alice, friend, member, stranger)


@sqlite_only
async def test_passwords_are_refused_in_the_address(server):
    """`/user/login?passwd=…` was accepted, and the password written to the access log."""
    user = await register(server)
    async with server.client() as client:
        for path in (f"/user/login?mobile={user.mobile}&passwd={PASSWORD}",
                     f"/user/register?mobile=x{user.mobile}&password={PASSWORD}"):
            answer = await client.post(path, data={"mobile": user.mobile})
            assert answer.status_code == 400, answer.text
            assert "body" in answer.json()["msg"]
        # The body is the place for it.
        assert (await client.post("/user/login", data={"mobile": user.mobile,
                                                       "passwd": PASSWORD})).json()["code"] == 0
    await close_all(user)


@sqlite_only
async def test_logout_clears_the_cookie_in_a_way_plain_http_browsers_accept(server):
    """The clearing header carried `Secure` over http://, which browsers ignore: the revoked
    cookie stayed."""
    user = await register(server)
    answer = await user.client.post("/user/logout")
    assert answer.json()["code"] == 0, answer.text
    cleared = [h for h in answer.headers.get_list("set-cookie") if h.startswith("imchat_token=")]
    assert len(cleared) == 1, cleared
    attributes = [part.strip().lower() for part in cleared[0].split(";")]
    assert "secure" not in attributes, cleared
    assert "max-age=0" in attributes and "path=/" in attributes, cleared
    await close_all(user)


# == sessions: logout, disabled accounts, credential sources ==================================

async def test_logout_revokes_the_token_on_every_channel_and_closes_its_sockets(server):
    a = await register(server)
    async with server.client() as device:
        other_device = await device.post("/user/login", data={"mobile": a.mobile, "passwd": PASSWORD})
    other_token = other_device.json()["data"]["token"]
    ws = await connect(server, a)
    ws_other = await ws_connect(f"{server.ws_url}/chat?token={other_token}&v=2")
    await recv_json(ws_other)  # presence snapshot
    out = await a.client.post("/user/logout")
    assert out.json()["code"] == 0
    assert "imchat_token" in out.headers.get("set-cookie", "")
    # The socket opened with the revoked token is closed with the session-ended code...
    assert await close_code(ws) == 4001
    # ...and the token is dead on every channel, HTTP and WebSocket.
    async with server.client() as fresh:
        for kwargs in ({"headers": {"Authorization": f"Bearer {a.token}"}},
                       {"params": {"token": a.token}},
                       {"data": {"token": a.token}},
                       {"headers": {"Cookie": f"imchat_token={a.token}"}}):
            assert_clean_error(await fresh.post("/user/me", **kwargs), 401)
    assert await refused_status(f"{server.ws_url}/chat?id={a.id}&token={a.token}") == 401
    assert await refused_status(f"{server.ws_url}/chat",
                                additional_headers={"Cookie": f"imchat_token={a.token}"}) == 401
    # The other device's session is untouched.
    await ws_other.send(json.dumps({"cmd": 0}))
    assert await recv_until(ws_other, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    await ws_other.close()
    await close_all(a)


async def test_disabled_account_is_cut_off_everywhere_at_once(server):
    from app.service import users

    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await users.set_disabled(server.app.ctx.services, await User.get(id=a.id), True)
    assert await close_code(wa) == 4001
    assert_clean_error(await a.client.post("/user/me"), 401)
    assert await refused_status(f"{server.ws_url}/chat?token={a.token}") == 401
    async with server.client() as client:
        login = await client.post("/user/login", data={"mobile": a.mobile, "passwd": PASSWORD})
    assert_clean_error(login, 403)
    assert await AuthToken.filter(user_id=a.id).count() == 0
    # The disabled user's friend is unaffected.
    await wb.send(json.dumps({"cmd": 0}))
    assert await recv_until(wb, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    await wb.close()
    await close_all(a, b)


async def test_credential_sources_never_mix_users(server):
    """Cookie of A plus bearer/query token of B: one credential wins whole, never a blend, and
    a bad explicit credential never falls back to the cookie."""
    a = await register(server)
    b = await register(server)
    bearer_b = {"Authorization": f"Bearer {b.token}"}
    me = (await a.client.post("/user/me", headers=bearer_b)).json()
    assert me["data"]["id"] == b.id
    assert_clean_error(await a.client.post("/user/me", headers=bearer_b, data={"userid": a.id}), 403)
    assert_clean_error(await a.client.post("/user/me", params={"token": b.token},
                                           data={"userid": a.id}), 403)
    assert_clean_error(await a.client.post("/user/me",
                                           headers={"Authorization": "Bearer forged"}), 401)
    assert_clean_error(await a.client.post("/user/me", params={"token": "forged"}), 401)
    assert_clean_error(await a.client.post("/user/me", headers={"Authorization": "Bearer " + "x" * 5000}),
                       401)
    # The socket: the cookie names A, the URL names B's id with A's cookie.
    assert await refused_status(f"{server.ws_url}/chat?id={b.id}",
                                additional_headers={"Cookie": f"imchat_token={a.token}"}) == 403
    await close_all(a, b)


async def test_userid_in_query_that_differs_from_body_is_refused(server):
    a = await register(server)
    b = await register(server)
    response = await a.client.post("/contact/loadfriend", params={"userid": b.id},
                                   data={"userid": a.id})
    assert_clean_error(response, 403)
    await close_all(a, b)


async def test_userid_mismatch_in_json_form_or_query_alone_is_refused(server):
    a = await register(server)
    b = await register(server)
    for response in (
        await a.client.post("/contact/loadfriend", data={"userid": b.id}),
        await a.client.post("/contact/loadfriend", params={"userid": b.id}),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": b.id})),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": str(b.id)})),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": a.id, "token": b.token})),
    ):
        assert_clean_error(response, 403)
    for junk in ("abc", "0", "-1", "1e3", str(2**64), "[]"):
        assert_clean_error(await a.client.post("/contact/loadfriend", data={"userid": junk}), 400)
    await close_all(a, b)

# == login throttling =========================================================================

async def test_concurrent_login_burst_cannot_exceed_the_attempt_limit(server):
    victim = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    async with server.client() as attacker:
        answers = await asyncio.gather(*(
            attacker.post("/user/login", data={"mobile": victim.mobile, "passwd": f"guess-{i:04d}"})
            for i in range(4 * limit)))
    for answer in answers:
        assert answer.status_code in (200, 429) and answer.json()["code"] == -1
    evaluated = sum(1 for answer in answers if answer.status_code == 200)
    assert evaluated <= limit, f"{evaluated} password guesses evaluated, limit {limit}"
    await close_all(victim)


@pytest.mark.parametrize("settings_overrides", [{"auth": {"registrations_per_hour": 5}}])
async def test_a_flood_of_sign_ups_from_one_address_is_refused_and_others_still_register(server):
    async def sign_up(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.post("/user/register", data={"mobile": f"1590000{n:04d}",
                                                         "passwd": "secret-password"})

    async with client_from(server, "127.0.0.2") as flooder:
        answers = await asyncio.gather(*(sign_up(flooder, n) for n in range(20)))
    created = [a for a in answers if a.status_code == 200 and a.json()["code"] == 0]
    refused = [a for a in answers if a.status_code == 429]
    assert len(created) == 5 and len(refused) == 15
    assert all(a.json()["code"] == -1 and "too many new accounts" in a.json()["msg"]
               for a in refused)
    assert await User.filter(mobile__startswith="1590000").count() == 5
    async with client_from(server, "127.0.0.3") as neighbour:  # another address is not held up
        assert (await sign_up(neighbour, 99)).json()["code"] == 0



async def test_forwarded_for_headers_do_not_reset_the_ip_throttle(server):
    victim = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    async with server.client() as attacker:
        for i in range(limit + 3):
            spoof = {"X-Forwarded-For": f"10.9.{i}.{i}", "X-Real-IP": f"10.8.{i}.{i}",
                     "Forwarded": f"for=10.7.{i}.{i}"}
            response = await attacker.post("/user/login", headers=spoof, data={
                "mobile": f"nobody{i:04d}", "passwd": "wrong-pass"})
        assert_clean_error(response, 429)
    await close_all(victim)


async def test_login_refusals_do_not_reveal_which_accounts_exist(server):
    """Wrong password, unknown mobile, a mobile no account could have, and a disabled account
    with a wrong password all read the same; only the right password reveals 'disabled'."""
    from app.service import users

    alive = await register(server)
    disabled = await register(server)
    await users.set_disabled(server.app.ctx.services, await User.get(id=disabled.id), True)
    answers = []
    async with server.client() as client:
        for mobile in (alive.mobile, "19999999999", "no such/one!", disabled.mobile):
            response = await client.post("/user/login", data={"mobile": mobile,
                                                              "passwd": "wrong-pass"})
            answers.append((response.status_code, response.json()))
    assert len(set(json.dumps(a, sort_keys=True) for a in answers)) == 1, answers
    assert answers[0] == (200, {"code": -1, "msg": "wrong mobile or password", "reason": "refused"})
    await close_all(alive, disabled)
