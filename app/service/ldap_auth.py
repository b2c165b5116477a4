"""Directory sign-in (`[ldap]`): the login form's password checked by an LDAP server (OpenLDAP,
Active Directory) with ldap3, the account made here at the first sign-in and kept in step.

How a sign-in goes: the directory is searched (as `bind_dn`) for the one entry `user_filter`
finds for what was typed; the password is checked by binding as that entry (an empty password
is refused first: LDAP treats it as an anonymous bind, which "succeeds"); the entry must not
match `disabled_filter` and must be a member of `required_group` when one is set. The imchat
account is then made (account name = the entry's `login_attribute`, nickname from
`nickname_attribute`, no usable local password) or its nickname updated, and linked to the
entry (table im_directory_account). Accounts with no directory link (`imchat user add`) sign
in with their local password while `allow_local_accounts` is on.

`DirectorySync` checks every linked account every `sync_interval_minutes`: one gone from the
directory, disabled there or out of the group is disabled here (its sessions end).

ldap3 blocks: every directory call runs in a thread, with `timeout_seconds` on connecting and
on each operation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from app.model.tables import DirectoryAccount, User, now_ms
from app.service import audit, users
from app.service.context import ServiceContext
from app.settings import LdapSettings
from app.util.errors import Forbidden, Refused, Throttled, Unavailable
from app.util.periodic import PeriodicJob

log = logging.getLogger("imchat.ldap")

WRONG = "wrong mobile or password"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DirectoryEntry:
    dn: str
    login: str
    nickname: str
    # Refused here: disabled in the directory, or not in the required group.
    refusal: str = ""


class Directory:
    """Blocking ldap3 calls (run them with asyncio.to_thread)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        tls = None
        if settings.url.startswith("ldaps://") or settings.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file or None,
                            version=ssl.PROTOCOL_TLS_CLIENT)
        self.server = ldap3.Server(settings.url, use_ssl=settings.url.startswith("ldaps://"),
                                   tls=tls, connect_timeout=settings.timeout_seconds,
                                   get_info=ldap3.NONE)

    def _connection(self, user: str | None, password: str | None) -> ldap3.Connection:
        connection = ldap3.Connection(self.server, user=user, password=password,
                                      # ldap3 packs it into a socket option as whole seconds
                                      receive_timeout=math.ceil(self.settings.timeout_seconds),
                                      raise_exceptions=False, read_only=True)
        connection.open()
        if self.settings.start_tls and not self.settings.url.startswith("ldaps://"):
            connection.start_tls()  # before any password crosses the network
        return connection

    def _searcher(self) -> ldap3.Connection:
        s = self.settings
        connection = self._connection(s.bind_dn or None, s.bind_password or None)
        if not connection.bind():
            connection.unbind()
            raise LDAPException(f"the search account was refused: {connection.result}")
        return connection

    def find(self, login: str) -> DirectoryEntry | None:
        """The one entry for `login`, or None (none, or several: ambiguous is refused)."""
        s = self.settings
        connection = self._searcher()
        try:
            query = s.user_filter.replace("{login}", escape_filter_chars(login))
            connection.search(s.user_base, query, attributes=[s.login_attribute,
                                                              s.nickname_attribute])
            found = [e for e in connection.response or () if e.get("type") == "searchResEntry"]
            if len(found) != 1:
                return None
            return self._entry(connection, found[0])
        finally:
            connection.unbind()

    def _entry(self, connection: ldap3.Connection, found: dict) -> DirectoryEntry | None:
        s, dn = self.settings, found["dn"]
        attributes = found.get("attributes", {})
        login = _first(attributes.get(s.login_attribute))
        if not login:
            return None
        refusal = ""
        if s.disabled_filter and connection.search(dn, s.disabled_filter,
                                                   search_scope=ldap3.BASE, attributes=[]):
            refusal = "this account is disabled"
        elif s.required_group and not connection.search(
                s.required_group, f"({s.member_attribute}={escape_filter_chars(dn)})",
                search_scope=ldap3.BASE, attributes=[]):
            refusal = "this account may not sign in to chat; ask an administrator"
        nickname = _first(attributes.get(s.nickname_attribute)) or login
        return DirectoryEntry(dn, login, nickname, refusal)

    def password_ok(self, dn: str, password: str) -> bool:
        if not password:
            return False
        connection = self._connection(dn, password)
        try:
            return bool(connection.bind())
        finally:
            connection.unbind()


def _first(value: object) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").strip()


async def ask(call: Callable[..., T], *args: Any) -> T:
    """Run a blocking Directory call in a thread; an unreachable or failing directory is
    Unavailable (503), logged once here."""
    try:
        return await asyncio.to_thread(call, *args)
    except LDAPException as error:
        log.warning("the directory did not answer: %s", error)
        raise Unavailable("the directory server cannot be reached; try again later") from None


def _throttle(ctx: ServiceContext, mobile: str, client_ip: str) -> tuple[str, str]:
    """The login throttle's address and (account, address) keys, shared with local sign-ins."""
    address_key = f"ip:{client_ip}"
    pair_key = f"m:{mobile}|{address_key}"
    limiter = ctx.login_limiter
    if limiter.blocked(address_key) or limiter.blocked(pair_key):
        raise Throttled("too many login attempts, wait a minute and try again")
    limiter.hit(address_key)
    limiter.hit(pair_key)
    return address_key, pair_key


async def sign_in(ctx: ServiceContext, directory: Directory, mobile: str, password: str,
                  client_ip: str) -> tuple[User, str]:
    """Sign in with the directory (or locally, for an account that has no directory link)."""
    name = users.canonical_mobile(mobile)
    local = await User.get_or_none(mobile=name) if users.MOBILE_PATTERN.match(mobile) else None
    if local is not None and not await DirectoryAccount.filter(user_id=local.id).exists():
        if not ctx.settings.ldap.allow_local_accounts:
            raise Refused(WRONG)
        return await users.login(ctx, mobile=mobile, password=password, client_ip=client_ip)
    address_key, pair_key = _throttle(ctx, name, client_ip)
    entry = await ask(directory.find, mobile)
    if entry is None or not await ask(directory.password_ok, entry.dn, password):
        raise Refused(WRONG)
    user = await _linked_user(ctx, entry)
    if entry.refusal:
        raise Forbidden(entry.refusal)
    if user.disabled:
        raise Forbidden("this account is disabled")
    ctx.login_limiter.reset(pair_key)
    ctx.login_limiter.release(address_key)
    return user, await users.issue_token(ctx, user)


async def _linked_user(ctx: ServiceContext, entry: DirectoryEntry) -> User:
    """The imchat account of a directory entry: made at its first sign-in (nothing is made for
    a refused entry), otherwise brought in step (nickname; disabled when refused there)."""
    name = users.canonical_mobile(entry.login)
    link = await DirectoryAccount.get_or_none(dn=entry.dn).prefetch_related("user")
    user = link.user if link is not None else await User.get_or_none(mobile=name)
    if user is not None and link is None and ctx.settings.ldap.allow_local_accounts:
        # A local account of that name (made with `imchat user add`, or registered) is not
        # handed to the directory entry unless the directory is declared the only source.
        raise Forbidden("an account with this name exists here already; ask an administrator")
    if user is None:
        if entry.refusal:
            raise Forbidden(entry.refusal)
        if not users.MOBILE_PATTERN.match(entry.login):
            raise Forbidden("this directory account's name cannot be used here (3-20 letters, "
                            "digits or _.+-); ask an administrator")
        user = await User.create(mobile=name, passwd_hash="!directory",
                                 nickname=entry.nickname[:40])
        log.info("directory account %s made user %s", entry.dn, user.id)
    elif user.nickname != entry.nickname[:40]:
        user.nickname = entry.nickname[:40]
        await user.save(update_fields=["nickname"])
    await DirectoryAccount.update_or_create(user_id=user.id,
                                            defaults={"dn": entry.dn, "synced_ms": now_ms()})
    if entry.refusal and not user.disabled:
        await users.set_disabled(ctx, user, True)
    return user


async def sync_once(ctx: ServiceContext, directory: Directory) -> int:
    """Check every linked account against the directory; answers how many were disabled."""
    disabled = 0
    for link in await DirectoryAccount.all().prefetch_related("user"):
        user = link.user
        entry = await ask(directory.find, user.mobile)
        if entry is not None and not entry.refusal:
            link.synced_ms = now_ms()
            await link.save(update_fields=["synced_ms"])
            continue
        if not user.disabled:
            await users.set_disabled(ctx, user, True)
            disabled += 1
            await audit.record(audit.DIRECTORY_SYNC, actor_name="directory",
                               target=f"user {user.id} {user.mobile}",
                               detail=entry.refusal if entry else "gone from the directory")
    log.info("directory check: %d accounts disabled", disabled)
    return disabled


class DirectorySync:
    """The background check of one server process (when [ldap] is on and the interval > 0)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._job: PeriodicJob | None = None

    def start(self) -> None:
        ldap = self.ctx.settings.ldap
        if ldap.enabled and ldap.sync_interval_minutes > 0:
            self.directory = Directory(ldap)
            self._job = PeriodicJob(
                "ldap-sync", lambda: sync_once(self.ctx, self.directory),
                ldap.sync_interval_minutes * 60, at_start=False,
                failure="the directory check failed; it runs again later")
            self._job.start()

    async def stop(self) -> None:
        if self._job is not None:
            await self._job.stop()
