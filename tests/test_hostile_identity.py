"""A hostile client against sign-in and identity: account-name spellings, guessing and lockout,
what one user may learn of another, and where credentials may travel. Real server, real HTTP
clients from several loopback addresses; SQLite and MariaDB where the database decides."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.factories import PASSWORD, befriend, close_all, connect, make_group, register
from tests.harness import RunningServer

sqlite_only = pytest.mark.parametrize("db_backend", ["sqlite"])


def client_from(server: RunningServer, address: str) -> httpx.AsyncClient:
    return server.client(transport=httpx.AsyncHTTPTransport(local_address=address))


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
