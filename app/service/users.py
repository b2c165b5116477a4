"""Accounts and sessions: register, log in and out, look up, authenticate a token."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from tortoise.exceptions import IntegrityError

from app.model import sign_ins
from app.model.tables import AuthToken, Friendship, User, now_ms
from app.service import audit, file_access
from app.service.context import ServiceContext
from app.util.errors import BadRequest, Conflict, Forbidden, NotFound, Refused, Throttled, Unauthorized
from app.util.ratelimit import SlidingWindowLimiter
from app.util.security import check_local_link, new_token, token_digest

if TYPE_CHECKING:
    pass

log = logging.getLogger("imchat.users")

MOBILE_PATTERN = re.compile(r"^[0-9A-Za-z_.+-]{3,20}$")
SEXES = {"M", "W", "U"}
MIN_PASSWORD = 6
MAX_PASSWORD = 128


def public_user(user: User, *, online: bool = False) -> dict[str, Any]:
    """The article's user JSON, without secrets."""
    return {
        "id": user.id,
        "mobile": user.mobile,
        "avatar": user.avatar,
        "sex": user.sex,
        "nickname": user.nickname,
        "online": 1 if online else 0,
        "memo": user.memo,
        "createat": user.created_ms,
    }


def canonical_mobile(mobile: str) -> str:
    """Mobiles (account names) compare case-insensitively on every engine, as MySQL does."""
    return mobile.lower()


def check_mobile(mobile: str) -> str:
    if not MOBILE_PATTERN.match(mobile):
        raise BadRequest("mobile must be 3-20 letters, digits or _.+-")
    return canonical_mobile(mobile)


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


async def check_avatar(user_id: int | None, avatar: str) -> str:
    """A local link to a file the user may download (None: an account being made)."""
    check_local_link(avatar, "avatar")
    await file_access.check_links(user_id, "avatar", avatar)
    return avatar


async def issue_token(ctx: ServiceContext, user: User) -> str:
    token = new_token()
    ttl_ms = ctx.settings.auth.token_ttl_hours * 3600 * 1000
    await AuthToken.create(user=user, token_hash=token_digest(token), expires_ms=now_ms() + ttl_ms)
    return token


async def create_user(
    ctx: ServiceContext,
    mobile: str,
    password: str,
    nickname: str = "",
    avatar: str = "",
    sex: str = "U",
    memo: str = "",
) -> User:
    """Create an account (used by registration and by the admin CLI)."""
    mobile = check_mobile(mobile)
    check_password(password)
    if sex not in SEXES:
        raise BadRequest("sex must be M, W or U")
    await check_avatar(None, avatar)
    if await User.filter(mobile=mobile).exists():
        raise Conflict("this mobile is already registered")
    passwd_hash = await ctx.passwords.hash(password)
    try:
        return await User.create(
            mobile=mobile,
            passwd_hash=passwd_hash,
            nickname=nickname or mobile,
            avatar=avatar,
            sex=sex,
            memo=memo,
        )
    except IntegrityError:  # registered concurrently between the check and the insert
        raise Conflict("this mobile is already registered") from None


async def register(ctx: ServiceContext, client_ip: str, **fields: Any) -> tuple[User, str]:
    if not ctx.settings.auth.registration_open:
        raise Forbidden("registration is closed; ask an administrator for an account")
    limiter, key = ctx.registration_limiter, f"ip:{client_ip}"
    if limiter.blocked(key):
        raise Throttled("too many new accounts from this address; try again later")
    # Counted before the work, like logins: concurrent sign-ups all pass `blocked` first.
    limiter.hit(key)
    user = await create_user(ctx, **fields)
    log.info("registered user %s", user.id)
    return user, await issue_token(ctx, user)


async def login(ctx: ServiceContext, mobile: str, password: str, client_ip: str) -> tuple[User, str]:
    """Check a password under three throttles that together bound guessing without letting a
    guesser lock the owner out: attempts per address, per (account, address), and per account
    from all addresses (slower); the last spares addresses the account signed in from before."""
    limiter, account_limiter = ctx.login_limiter, ctx.account_login_limiter
    address_key = f"ip:{client_ip}"
    if not MOBILE_PATTERN.match(mobile):
        # No account can have this name (accented or padded spellings among them): no lookup,
        # and the same answer as a wrong password, but it counts against the address.
        _count_attempt(limiter, (address_key,))
        raise Refused("wrong mobile or password")
    mobile = canonical_mobile(mobile)
    pair_key, account_key = f"m:{mobile}|{address_key}", f"m:{mobile}"
    trusted = client_ip in ctx.known_addresses.get(mobile, ())
    _count_attempt(limiter, (address_key, pair_key))
    if not trusted:
        _count_attempt(account_limiter, (account_key,))
    user = await User.get_or_none(mobile=mobile)
    valid = await ctx.passwords.verify(user.passwd_hash if user else None, password)
    if user is None or not valid:
        raise Refused("wrong mobile or password")
    if user.disabled:
        raise Forbidden("this account is disabled")
    limiter.reset(pair_key)
    limiter.release(address_key)
    if not trusted:
        account_limiter.release(account_key)
    ctx.remember_address(mobile, client_ip)
    if ctx.passwords.needs_rehash(user.passwd_hash):
        user.passwd_hash = await ctx.passwords.hash(password)
        await user.save(update_fields=["passwd_hash"])
    return user, await issue_token(ctx, user)


def _count_attempt(limiter: SlidingWindowLimiter, keys: tuple[str, ...]) -> None:
    """Refuse when any key is at its limit, else count the attempt before checking it: a burst
    of concurrent guesses all pass this test before any of them has failed."""
    if any(limiter.blocked(key) for key in keys):
        raise Throttled("too many login attempts, wait a minute and try again")
    for key in keys:
        limiter.hit(key)


class AuthenticatedSession(NamedTuple):
    user: User
    token_hash: str
    expires_ms: int


async def authenticate_token(token: str | None, lookup: sign_ins.SessionLookup | None = None
                             ) -> AuthenticatedSession:
    """The live session a bearer token names; Unauthorized if missing, unknown, expired or the
    account is disabled. With `lookup`, concurrent calls share their queries."""
    if not token or len(token) > 200:
        raise Unauthorized()
    digest = token_digest(token)
    row = await (sign_ins.session_of(digest) if lookup is None else lookup.load(digest))
    if row is None:
        raise Unauthorized("your session is not valid, please log in")
    if row["expires_ms"] <= now_ms():
        await AuthToken.filter(id=row["token_id"]).delete()
        raise Unauthorized("your session has expired, please log in again")
    if row["disabled"]:
        raise Unauthorized("this account is disabled")
    user_fields = {key: row[key] for key in User._meta.db_fields}
    return AuthenticatedSession(User._init_from_db(**user_fields), digest, row["expires_ms"])


async def authenticate(token: str | None) -> User:
    """The user a bearer token names."""
    return (await authenticate_token(token)).user


async def logout(ctx: ServiceContext, user: User, token: str) -> None:
    await AuthToken.filter(token_hash=token_digest(token), user_id=user.id).delete()
    ctx.hub.session_ended(user.id, token_digest(token))


async def update_profile(user: User, changes: dict[str, str]) -> User:
    """Change any of nickname, avatar, sex, memo (already length-checked by the caller)."""
    if "sex" in changes and changes["sex"] not in SEXES:
        raise BadRequest("sex must be M, W or U")
    if "avatar" in changes:
        await check_avatar(user.id, changes["avatar"])
    if "nickname" in changes and not changes["nickname"]:
        raise BadRequest("nickname cannot be empty")
    for name, value in changes.items():
        setattr(user, name, value)
    if changes:
        await user.save(update_fields=list(changes))
    return user


def card_for(viewer: User, user: User, friend_ids: set[int], online: set[int]
             ) -> dict[str, Any]:
    """What `viewer` may see of `user`: everything for themselves and their friends (`online`:
    which of those are online); for anyone else the public part, without the mobile number or
    whether they are online."""
    if user.id == viewer.id:
        return public_user(user, online=True)
    if user.id in friend_ids:
        return public_user(user, online=user.id in online)
    return {**public_user(user), "mobile": ""}


async def friend_ids_of(user_id: int) -> set[int]:
    return set(await Friendship.filter(owner_id=user_id).values_list("friend_id", flat=True))


async def find(ctx: ServiceContext, viewer: User, user_id: int) -> dict[str, Any]:
    """Look a user up by id, as `viewer` may see them."""
    user = await User.get_or_none(id=user_id)
    if user is None:
        raise NotFound("no such user")
    friends = ({user.id} if await Friendship.filter(owner_id=viewer.id, friend_id=user.id).exists()
               else set())
    online = await ctx.hub.online_among(list(friends))
    return card_for(viewer, user, friends, online)


async def set_disabled(ctx: ServiceContext, user: User, disabled: bool) -> None:
    user.disabled = disabled
    await user.save(update_fields=["disabled"])
    if disabled:
        await AuthToken.filter(user_id=user.id).delete()
        ctx.hub.session_ended(user.id, None)


async def reset_password(ctx: ServiceContext, user: User, password: str) -> None:
    check_password(password)
    user.passwd_hash = await ctx.passwords.hash(password)
    await user.save(update_fields=["passwd_hash"])
    await AuthToken.filter(user_id=user.id).delete()
    ctx.hub.session_ended(user.id, None)


async def change_password(ctx: ServiceContext, user: User, old: str, new: str,
                          current_token: str, address: str = "") -> None:
    """The owner's own change: the old password must be right (guesses are throttled like
    logins); every other sign-in of the account ends, this one stays. Changes and wrong
    current passwords are recorded in the audit log."""
    key = f"passwd:{user.id}"
    _count_attempt(ctx.login_limiter, (key,))
    target = f"user {user.id} {user.mobile}"
    if not await ctx.passwords.verify(user.passwd_hash, old):
        await audit.record_quietly(audit.PASSWORD_CHANGE, actor=user, target=target,
                                   address=address, success=False,
                                   detail="the current password is wrong")
        raise Refused("the current password is wrong")
    ctx.login_limiter.reset(key)
    check_password(new)
    user.passwd_hash = await ctx.passwords.hash(new)
    await user.save(update_fields=["passwd_hash"])
    keep = token_digest(current_token)
    others = await AuthToken.filter(user_id=user.id).exclude(token_hash=keep).values_list(
        "token_hash", flat=True)
    await AuthToken.filter(user_id=user.id).exclude(token_hash=keep).delete()
    for token_hash in others:
        ctx.hub.session_ended(user.id, token_hash)
    log.info("user %s changed their password; %d other sign-ins ended", user.id, len(others))
    await audit.record_quietly(audit.PASSWORD_CHANGE, actor=user, target=target,
                               address=address, detail=f"{len(others)} other sessions ended")
