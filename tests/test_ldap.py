"""Directory sign-in against a real OpenLDAP slapd (tests/ldap_server.py) started for each test:
accounts made at the first sign-in and kept in step, refusals (wrong password, disabled, not in
the group, ambiguous, unreachable), local accounts beside the directory, the periodic check,
and StartTLS / ldaps with certificate checks. On SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from app.model.tables import AuditEntry, DirectoryAccount, User
from app.service import admin, ldap_auth
from app.service.ldap_auth import Directory
from app.settings import LdapSettings
from app.util.errors import Unavailable
from tests.harness import make_settings
from tests.ldap_server import PASSWORDS, SUFFIX, make_certificate, running_slapd

WRONG = {"code": -1, "msg": "wrong mobile or password", "reason": "refused"}


@pytest.fixture
def slapd(tmp_path):
    with running_slapd(tmp_path / "slapd") as server:
        yield server


@pytest.fixture
def settings_overrides(slapd):
    return {"ldap": slapd.settings()}


async def login(server, mobile: str, password: str) -> tuple[int, dict]:
    async with server.client() as client:
        response = await client.post("/user/login", data={"mobile": mobile, "passwd": password})
        return response.status_code, response.json()


async def test_the_first_sign_in_makes_the_account_and_later_ones_keep_it_in_step(server, slapd):
    status, body = await login(server, "ann", PASSWORDS["ann"])
    assert (status, body["code"]) == (200, 0), body
    assert (body["data"]["mobile"], body["data"]["nickname"]) == ("ann", "Ann Lee")
    ann = await User.get(mobile="ann")
    link = await DirectoryAccount.get(user_id=ann.id)
    assert link.dn == f"uid=ann,ou=people,{SUFFIX}"
    async with server.client() as client:
        me = await client.get("/user/me", headers={"Authorization": f"Bearer {body['data']['token']}"})
        assert me.json()["data"]["id"] == ann.id
    slapd.modify(f"dn: uid=ann,ou=people,{SUFFIX}\nchangetype: modify\nreplace: cn\ncn: Ann Chen\n")
    status, again = await login(server, "ANN", PASSWORDS["ann"])
    assert again["data"]["id"] == ann.id and again["data"]["nickname"] == "Ann Chen"
    assert await User.filter(mobile="ann").count() == 1
    entries = [(e.actor_id, e.success) for e in await AuditEntry.filter(action="sign_in")]
    assert entries == [(ann.id, True), (ann.id, True)]
    rows, _ = await admin.list_users(server.app.ctx.services, "ann")
    assert rows[0]["directory"] is True


@pytest.mark.parametrize("mobile, password, expected", [
    ("ann", "wrong-pass", (200, WRONG)),
    ("nobody", "whatever-1", (200, WRONG)),
    ("*", "whatever-1", (200, WRONG)),
    ("dave", PASSWORDS["dave"], (403, {"code": -1, "msg": "this account is disabled",
                                       "reason": "forbidden"})),
    ("eve", PASSWORDS["eve"], (403, {"code": -1, "reason": "forbidden",
                                     "msg": "this account may not sign in to chat; ask an "
                                            "administrator"})),
])
async def test_refused_sign_ins_make_no_account(server, mobile, password, expected):
    assert await login(server, mobile, password) == expected
    assert await User.all().count() == 0
    entry = await AuditEntry.get(action="sign_in")
    assert (entry.actor, entry.success, entry.detail) == (mobile, False, expected[1]["msg"])


async def test_a_login_that_finds_two_entries_is_refused(tmp_path, slapd, db_backend,
                                                         mysql_database):
    from tests.harness import start_server

    settings = make_settings(tmp_path, db_backend, mysql_database, ldap=slapd.settings(
        user_base=SUFFIX, required_group="", disabled_filter=""))
    server = await start_server(settings)
    try:
        assert await login(server, "dup", "dup-pass-1") == (200, WRONG)
        assert (await login(server, "bob", PASSWORDS["bob"]))[1]["code"] == 0
    finally:
        await server.stop()


async def test_disabled_in_the_directory_later_disables_the_account_here(server, slapd):
    status, body = await login(server, "ann", PASSWORDS["ann"])
    token = body["data"]["token"]
    slapd.modify(f"dn: uid=ann,ou=people,{SUFFIX}\nchangetype: modify\nadd: employeeType\n"
                 "employeeType: disabled\n")
    assert await login(server, "ann", PASSWORDS["ann"]) == (
        403, {"code": -1, "msg": "this account is disabled", "reason": "forbidden"})
    assert (await User.get(mobile="ann")).disabled is True
    async with server.client() as client:
        me = await client.get("/user/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401


async def test_the_periodic_check_disables_accounts_gone_or_out_of_the_group(server, slapd):
    for name in ("ann", "bob"):
        assert (await login(server, name, PASSWORDS[name]))[1]["code"] == 0
    slapd.modify(f"dn: uid=bob,ou=people,{SUFFIX}\nchangetype: delete\n")
    slapd.modify(f"dn: cn=chat,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\n"
                 f"member: uid=ann,ou=people,{SUFFIX}\n")
    ctx = server.app.ctx.services
    assert await ldap_auth.sync_once(ctx, Directory(ctx.settings.ldap)) == 2
    assert set(await User.filter(disabled=True).values_list("mobile", flat=True)) == {"ann", "bob"}
    details = {e.target.split()[-1]: e.detail
               for e in await AuditEntry.filter(action="directory.sync")}
    assert details == {"bob": "gone from the directory",
                       "ann": "this account may not sign in to chat; ask an administrator"}
    assert await ldap_auth.sync_once(ctx, Directory(ctx.settings.ldap)) == 0


async def test_local_accounts_sign_in_beside_the_directory_while_allowed(server):
    ctx = server.app.ctx.services
    await admin.create_user(ctx, admin.COMMAND_LINE, "root-admin", "local-pass-1")
    await admin.create_user(ctx, admin.COMMAND_LINE, "bob", "local-pass-2")
    assert (await login(server, "root-admin", "local-pass-1"))[1]["code"] == 0
    # A local "bob" stays local: the directory's bob cannot take it over with his password.
    assert await login(server, "bob", PASSWORDS["bob"]) == (200, WRONG)
    assert (await login(server, "bob", "local-pass-2"))[1]["code"] == 0
    assert await DirectoryAccount.all().count() == 0
    ctx.settings.ldap.allow_local_accounts = False
    assert await login(server, "root-admin", "local-pass-1") == (200, WRONG)


async def test_an_unreachable_directory_answers_503(server, slapd):
    server.app.ctx.services.settings.ldap.url = "ldap://127.0.0.1:1"
    status, body = await login(server, "ann", PASSWORDS["ann"])
    assert (status, body["msg"]) == (503, "the directory server cannot be reached; try again "
                                          "later")


def _directory(slapd, **changes: object) -> Directory:
    fields = {**slapd.settings(), **changes}
    del fields["enabled"]
    return Directory(dataclasses.replace(LdapSettings(enabled=True), **fields))


async def test_start_tls_and_ldaps_check_the_server_certificate(slapd, tmp_path):
    for directory in (_directory(slapd, start_tls=True, ca_file=str(slapd.ca_file)),
                      _directory(slapd, url=slapd.tls_url, ca_file=str(slapd.ca_file))):
        entry = await asyncio.to_thread(directory.find, "ann")
        assert entry is not None and entry.nickname == "Ann Lee"
        assert await asyncio.to_thread(directory.password_ok, entry.dn, PASSWORDS["ann"])
        assert not await asyncio.to_thread(directory.password_ok, entry.dn, "")
    stranger, _ = make_certificate(tmp_path, "stranger")
    for directory in (_directory(slapd, start_tls=True, ca_file=str(stranger)),
                      _directory(slapd, url=slapd.tls_url, ca_file=str(stranger))):
        with pytest.raises(Unavailable):
            await ldap_auth.ask(directory.find, "ann")


def test_ldap_settings_are_checked(tmp_path):
    from app.settings import SettingsError

    with pytest.raises(SettingsError) as refused:
        make_settings(tmp_path, "sqlite", ldap={"enabled": "true", "url": "http://x",
                                                "user_base": "dc=x"})
    assert str(refused.value) == ("IMCHAT_LDAP_URL: must be an ldap:// or ldaps:// URL when "
                                  "ldap.enabled is true")
    with pytest.raises(SettingsError) as clear:
        make_settings(tmp_path, "sqlite", server={"mode": "production"},
                      auth={"argon2_memory_kib": 19456},
                      ldap={"enabled": "true", "url": "ldap://dc", "user_base": "dc=x",
                            "start_tls": "false"})
    assert str(clear.value) == ("IMCHAT_LDAP_START_TLS: an ldap:// URL without StartTLS sends "
                                "passwords in clear; refused in production (use start_tls = "
                                "true or an ldaps:// URL)")
