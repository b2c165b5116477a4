"""Administration: who holds the admin role, and what an administrator does to accounts (from
the /admin/ console or the `imchat user` command), each action recorded in the audit log.

An `Acting` names who acts and from where: an admin user and their address for the console,
`Acting(None, "command line")` for the shell.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from tortoise.expressions import Q

from app.model.database import fetch_all
from app.model.tables import AdminRole, AuthToken, Community, DirectoryAccount, Membership, User
from app.service import audit, group_admin, groups, users
from app.service.context import ServiceContext
from app.settings import Settings
from app.util.errors import Forbidden, NotFound, Refused

MAX_PAGE = 200


class Acting(NamedTuple):
    user: User | None
    address: str


COMMAND_LINE = Acting(None, "command line")


async def is_admin(user_id: int) -> bool:
    return await AdminRole.filter(user_id=user_id).exists()


async def require_admin(user: User) -> User:
    """`user` if they hold the admin role; Forbidden otherwise."""
    if not await is_admin(user.id):
        raise Forbidden("administrators only")
    return user


async def own_card(user: User) -> dict[str, Any]:
    """A signed-in user's own card (/user/me): with `admin`, so a client offers the console."""
    return {**users.public_user(user, online=True), "admin": await is_admin(user.id)}


async def _user(user_id: int) -> User:
    user = await User.get_or_none(id=user_id)
    if user is None:
        raise NotFound("no such user")
    return user


async def _record(action: str, acting: Acting, target: User, detail: str = "") -> None:
    await audit.record(action, actor=acting.user, actor_name="command line",
                       target=f"user {target.id} {target.mobile}", address=acting.address,
                       detail=detail)


async def grant_admin(acting: Acting, user: User) -> bool:
    """Give `user` the admin role; False when they had it already."""
    by = acting.user.id if acting.user is not None else None
    _, created = await AdminRole.get_or_create(user_id=user.id, defaults={"granted_by_id": by})
    if created:
        await _record(audit.ADMIN_GRANT, acting, user)
    return created


async def revoke_admin(acting: Acting, user: User) -> bool:
    """Take the role away; False when they did not have it. From the console an admin cannot
    take their own (they would lock themselves out mid-session; another admin or the command
    line can)."""
    if acting.user is not None and acting.user.id == user.id:
        raise Refused("you cannot revoke your own admin role")
    removed = await AdminRole.filter(user_id=user.id).delete()
    if removed:
        await _record(audit.ADMIN_REVOKE, acting, user)
    return bool(removed)


def admin_user(user: User, *, admin: bool, online: bool, directory: bool
                     ) -> dict[str, Any]:
    """A user as the console lists them: the public card plus the account's state."""
    return {**users.public_user(user, online=online), "disabled": bool(user.disabled),
            "admin": admin, "directory": directory}


async def list_users(ctx: ServiceContext, query: str = "", offset: int = 0,
                     limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """Accounts by id, matching `query` in the mobile or nickname; and how many match."""
    selected = User.all()
    if query:
        selected = selected.filter(Q(mobile__icontains=query) | Q(nickname__icontains=query))
    total = await selected.count()
    page = await selected.order_by("id").offset(max(0, offset)).limit(max(1, min(limit, MAX_PAGE)))
    ids = [user.id for user in page]
    admins = set(await AdminRole.filter(user_id__in=ids).values_list("user_id", flat=True))
    linked = set(await DirectoryAccount.filter(user_id__in=ids).values_list("user_id", flat=True))
    online = await ctx.hub.online_among(ids)
    return [admin_user(user, admin=user.id in admins, online=user.id in online,
                             directory=user.id in linked) for user in page], total


async def create_user(ctx: ServiceContext, acting: Acting, mobile: str, password: str,
                      nickname: str = "", admin: bool = False) -> User:
    user = await users.create_user(ctx, mobile, password, nickname=nickname)
    await _record(audit.USER_CREATE, acting, user, "with the admin role" if admin else "")
    if admin:
        await grant_admin(acting, user)
    return user


async def set_disabled(ctx: ServiceContext, acting: Acting, user_id: int, disabled: bool) -> User:
    user = await _user(user_id)
    if disabled and acting.user is not None and acting.user.id == user.id:
        raise Refused("you cannot disable your own account")
    await users.set_disabled(ctx, user, disabled)
    await _record(audit.USER_DISABLE if disabled else audit.USER_ENABLE, acting, user)
    return user


async def reset_password(ctx: ServiceContext, acting: Acting, user_id: int, password: str
                         ) -> User:
    user = await _user(user_id)
    await users.reset_password(ctx, user, password)
    await _record(audit.USER_RESET_PASSWORD, acting, user)
    return user


async def sign_out_everywhere(ctx: ServiceContext, acting: Acting, user_id: int) -> int:
    """End every session of the user (their tokens stop working, their sockets close);
    answers how many sign-ins ended."""
    user = await _user(user_id)
    ended = await AuthToken.filter(user_id=user.id).delete()
    ctx.hub.session_ended(user.id, None)
    await _record(audit.USER_SIGN_OUT, acting, user, f"{ended} sessions")
    return ended


async def set_admin(acting: Acting, user_id: int, admin: bool) -> User:
    user = await _user(user_id)
    await (grant_admin(acting, user) if admin else revoke_admin(acting, user))
    return user


async def database_bytes(ctx: ServiceContext) -> int:
    """The size of the database: SQLite's file with its write-ahead log, or MySQL's data and
    indexes of this schema."""
    if ctx.settings.database.engine == "sqlite":
        path = ctx.settings.sqlite_path
        files = (path, path.with_name(path.name + "-wal"))
        return sum(p.stat().st_size for p in files if p.exists())
    rows = await fetch_all("SELECT COALESCE(SUM(data_length + index_length), 0) AS size FROM "
                           "information_schema.tables WHERE table_schema = DATABASE()")
    return int(rows[0]["size"])


async def dashboard(ctx: ServiceContext) -> dict[str, Any]:
    """The console's front page. Connection and message figures are this process's."""
    metrics = ctx.metrics
    now = time.time()
    connections, online = metrics.connections()
    return {
        "connections": connections,
        "users_online": online,
        "messages_last_minute": metrics.stored_recently.last_minute(now),
        "writer_backlog": metrics.writer.backlog if metrics.writer is not None else 0,
        "database_bytes": await database_bytes(ctx),
        "uptime_seconds": int(now - metrics.started),
        "version": __import__("app").__version__,
        "users": await User.all().count(),
        "admins": await AdminRole.all().count(),
    }


async def list_groups(query: str = "", offset: int = 0, limit: int = 50
                      ) -> tuple[list[dict[str, Any]], int]:
    """Groups by id, matching `query` in the name; each with its member count."""
    selected = Community.all()
    if query:
        selected = selected.filter(name__icontains=query)
    total = await selected.count()
    page = await selected.order_by("id").offset(max(0, offset)).limit(max(1, min(limit, MAX_PAGE)))
    rows = []
    for group in page:
        members = await Membership.filter(community_id=group.id).count()
        rows.append({**groups.public_group(group), "members": members})
    return rows, total


async def _group(group_id: int) -> Community:
    group = await Community.get_or_none(id=group_id)
    if group is None:
        raise NotFound("no such group")
    return group


async def group_members(ctx: ServiceContext, group_id: int) -> list[dict[str, Any]]:
    await _group(group_id)
    ids = await Membership.filter(community_id=group_id).order_by("user_id").values_list(
        "user_id", flat=True)
    return await _cards(ctx, list(await User.filter(id__in=list(ids)).order_by("id")))


async def _cards(ctx: ServiceContext, page: list[User]) -> list[dict[str, Any]]:
    """The console's cards of `page`: with their role, directory link and presence."""
    ids = [user.id for user in page]
    admins = set(await AdminRole.filter(user_id__in=ids).values_list("user_id", flat=True))
    linked = set(await DirectoryAccount.filter(user_id__in=ids).values_list("user_id", flat=True))
    online = await ctx.hub.online_among(ids)
    return [admin_user(user, admin=user.id in admins, online=user.id in online,
                       directory=user.id in linked) for user in page]


def _console_admin(acting: Acting) -> User:
    """The administrator a group change from the console is made by (group notices name a
    user: the command line has none to give)."""
    if acting.user is None:
        raise Refused("group changes are made from the admin console")
    return acting.user


async def transfer_group(ctx: ServiceContext, acting: Acting, group_id: int, new_owner_id: int
                         ) -> None:
    """Make a member the group's owner, through the group governance service (the notice, the
    members' sessions and the audit entry are the same as when the owner hands it over)."""
    await _group(group_id)
    await group_admin.transfer_as_site_admin(ctx, _console_admin(acting), group_id,
                                             new_owner_id, address=acting.address)


async def dissolve_group(ctx: ServiceContext, acting: Acting, group_id: int) -> None:
    """Dissolve the group as its owner would: every member is told and removed at once, on
    every server process."""
    await _group(group_id)
    await group_admin.dissolve_as_site_admin(ctx, _console_admin(acting), group_id,
                                             address=acting.address)


def live_settings(settings: Settings) -> dict[str, Any]:
    """What the console shows of the settings a reload applies without a restart."""
    return {"registration_open": settings.auth.registration_open,
            "log_level": settings.log.level, "workers": settings.server.workers,
            "ldap": settings.ldap.enabled, "retention_message_days":
            settings.retention.message_days}


async def set_registration(acting: Acting, settings: Settings, registration_open: bool) -> None:
    """Open or close sign-up in this server process until the next reload or restart (which
    read config.toml again). Several workers would each hold their own value: refused then."""
    if settings.server.workers > 1:
        raise Refused("with several workers, change auth.registration_open in config.toml and "
                      "reload (systemctl reload imchat)")
    settings.auth.registration_open = registration_open
    await audit.record(audit.SETTINGS_CHANGE, actor=acting.user, actor_name="command line",
                       target="auth.registration_open", address=acting.address,
                       detail=str(registration_open).lower())
