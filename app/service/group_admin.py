"""Governing a group: its owner and admins invite and remove members, rename it and change its
icon, notice (memo) and privacy; the owner makes and unmakes admins, hands the group over and
dissolves it; any member leaves (the owner only as the last member, which dissolves the group:
otherwise the owner hands over first). Who may do what is app/service/access.py's.

Each change and its notice (app/service/group_notices.py) are one transaction; after the commit
the hub is told, in the order that gives every member's sessions the notice: a new member is
indexed before the notice is published, a leaving one after it.

Every change passes through app/service/group_notices.py's `after_change` once stored, which
also records ownership and membership changes in the audit log; `address` is the client's.

A site administrator (app/service/admin.py, which checks that role) may hand a group over or
dissolve it from the admin console without any role in the group: `transfer_as_site_admin`,
`dissolve_as_site_admin`, with the same notices and the same effect on members' sessions.
"""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from app.model.tables import ROLE_ADMIN, ROLE_MEMBER, ROLE_OWNER, Community, Membership, User
from app.service import access
from app.service.context import ServiceContext
from app.service.group_notices import Notice, Origin, Stored, after_change, store_notice
from app.service.groups import changing, check_icon, check_room
from app.util.errors import BadRequest, Conflict, Forbidden, NotFound, Refused

NOT_IN_GROUP = "this user is not a member of the group"


async def _membership(connection: BaseDBAsyncClient, group_id: int, user_id: int
                      ) -> Membership | None:
    return await Membership.filter(community_id=group_id, user_id=user_id).using_db(
        connection).first()


async def _target(connection: BaseDBAsyncClient, group_id: int, user_id: int
                  ) -> tuple[User, Membership]:
    membership = await _membership(connection, group_id, user_id)
    user = await User.get_or_none(id=user_id)
    if membership is None or user is None:
        raise Refused(NOT_IN_GROUP)
    return user, membership


async def invite(ctx: ServiceContext, actor: User, group_id: int, invitee_id: int, *,
                 address: str = "") -> User:
    """Add a user to the group (owner or admin); the only way into a private group."""
    invitee = await User.get_or_none(id=invitee_id)
    if invitee is None or invitee.disabled:
        raise NotFound("no such user")
    try:
        async with changing(group_id) as (connection, group):
            await access.check_manage(actor.id, group_id)
            await access.check_invite(actor.id, invitee.id)  # not someone who blocked them
            if await _membership(connection, group_id, invitee.id) is not None:
                raise Conflict("this user is already a member of the group")
            await check_room(connection, ctx, group_id)
            membership = await Membership.create(community_id=group_id, user_id=invitee.id,
                                                 role=ROLE_MEMBER, using_db=connection)
            stored = await store_notice(connection, group_id, Notice("added", actor, invitee),
                                        membership.created_ms)
    except IntegrityError:
        raise Conflict("this user is already a member of the group") from None
    await after_change(ctx, [stored], group=group, origin=Origin(address), joined=invitee.id)
    return invitee


async def remove_member(ctx: ServiceContext, actor: User, group_id: int, target_id: int, *,
                        address: str = "") -> None:
    if target_id == actor.id:
        raise BadRequest("to leave a group, use leave")
    async with changing(group_id) as (connection, group):
        actor_role = await access.check_manage(actor.id, group_id)
        target, membership = await _target(connection, group_id, target_id)
        access.check_remove(actor_role, membership.role)
        await membership.delete(using_db=connection)
        stored = await store_notice(connection, group_id, Notice("removed", actor, target))
    await after_change(ctx, [stored], group=group, origin=Origin(address), left=target.id)


async def leave(ctx: ServiceContext, user: User, group_id: int, *, address: str = "") -> None:
    """Leave the group. The owner hands it over first, unless they are its last member: then
    leaving dissolves it."""
    async with changing(group_id) as (connection, group):
        role = await access.member_role(user.id, group_id)
        if role is None:
            raise Forbidden(access.NOT_A_MEMBER)
        if role == ROLE_OWNER:
            if await Membership.filter(community_id=group_id).using_db(connection).count() > 1:
                raise Refused("hand the group over to another member before you leave it, "
                              "or dissolve it")
            stored = await _dissolve(connection, group, user)
            dissolved = True
        else:
            await Membership.filter(community_id=group_id, user_id=user.id).using_db(
                connection).delete()
            stored = await store_notice(connection, group_id, Notice("left", user))
            dissolved = False
    await after_change(ctx, [stored], group=group, origin=Origin(address),
                       left=0 if dissolved else user.id, dissolved=dissolved)


async def _dissolve(connection: BaseDBAsyncClient, group: Community, actor: User) -> Stored:
    """Store the last notice and delete the group with its memberships (its messages stay in
    the table, readable by nobody: reading a group needs a membership)."""
    stored = await store_notice(connection, group.id, Notice("dissolved", actor))
    await Membership.filter(community_id=group.id).using_db(connection).delete()
    await Community.filter(id=group.id).using_db(connection).delete()
    return stored


async def dissolve(ctx: ServiceContext, actor: User, group_id: int, *, address: str = ""
                   ) -> None:
    """Dissolve the group (its owner only): every member is told and removed."""
    await _dissolve_group(ctx, actor, group_id, Origin(address))


async def dissolve_as_site_admin(ctx: ServiceContext, admin: User, group_id: int, *,
                                 address: str = "") -> None:
    """Dissolve the group from the admin console (the caller checked the admin role), with
    the same notice and effect as its owner's dissolving."""
    await _dissolve_group(ctx, admin, group_id, Origin(address, console=True))


async def _dissolve_group(ctx: ServiceContext, actor: User, group_id: int, origin: Origin
                          ) -> None:
    async with changing(group_id) as (connection, group):
        if not origin.console:
            await access.check_owner(actor.id, group_id)
        stored = await _dissolve(connection, group, actor)
    await after_change(ctx, [stored], group=group, origin=origin, dissolved=True)


async def update_group(ctx: ServiceContext, actor: User, group_id: int, *,
                       name: str | None = None, icon: str | None = None,
                       memo: str | None = None, private: bool | None = None,
                       address: str = "") -> Community:
    """Rename, change the icon, the notice (memo) or the privacy (owner or admin): one notice
    for each field that changes."""
    if icon is not None:
        await check_icon(actor.id, icon)
    if name is not None and not name:
        raise BadRequest("name is required")
    try:
        async with changing(group_id) as (connection, group):
            await access.check_manage(actor.id, group_id)
            notices = _changes(group, actor, name, icon, memo, private)
            if name is not None and name != group.name and await Community.filter(
                    name=name).using_db(connection).exists():
                raise Conflict("a group with this name already exists")
            if notices:
                await group.save(using_db=connection)
            stored = [await store_notice(connection, group_id, n) for n in notices]
    except IntegrityError:
        raise Conflict("a group with this name already exists") from None
    await after_change(ctx, stored, group=group, origin=Origin(address))
    return group


def _changes(group: Community, actor: User, name: str | None, icon: str | None,
             memo: str | None, private: bool | None) -> list[Notice]:
    """Apply the changed fields to `group`; the notices that report them."""
    notices = []
    if name is not None and name != group.name:
        group.name = name
        notices.append(Notice("renamed", actor, value=name))
    if icon is not None and icon != group.icon:
        group.icon = icon
        notices.append(Notice("icon", actor, icon=icon))
    if memo is not None and memo != group.memo:
        group.memo = memo
        notices.append(Notice("notice", actor, value=memo))
    if private is not None and private != group.is_private:
        group.is_private = private
        notices.append(Notice("private" if private else "public", actor))
    return notices


async def set_admin(ctx: ServiceContext, actor: User, group_id: int, target_id: int,
                    admin: bool, *, address: str = "") -> None:
    """Make a member an admin, or an admin a member again (the owner only)."""
    async with changing(group_id) as (connection, group):
        await access.check_owner(actor.id, group_id)
        target, membership = await _target(connection, group_id, target_id)
        if membership.role == ROLE_OWNER:
            raise Refused("the owner's role does not change this way: hand the group over")
        wanted = ROLE_ADMIN if admin else ROLE_MEMBER
        if membership.role == wanted:
            return
        membership.role = wanted
        await membership.save(using_db=connection, update_fields=["role"])
        stored = await store_notice(connection, group_id,
                                    Notice("admin" if admin else "unadmin", actor, target))
    await after_change(ctx, [stored], group=group, origin=Origin(address))


async def transfer(ctx: ServiceContext, actor: User, group_id: int, target_id: int, *,
                   address: str = "") -> None:
    """Hand the group over to another member (the owner only); the former owner stays as a
    plain member."""
    if target_id == actor.id:
        raise BadRequest("you already own this group")
    await _transfer(ctx, actor, group_id, target_id, Origin(address))


async def transfer_as_site_admin(ctx: ServiceContext, admin: User, group_id: int,
                                 target_id: int, *, address: str = "") -> None:
    """Make a member the owner from the admin console (the caller checked the admin role);
    the former owner stays as a plain member, as when the owner hands the group over."""
    await _transfer(ctx, admin, group_id, target_id, Origin(address, console=True))


async def _transfer(ctx: ServiceContext, actor: User, group_id: int, target_id: int,
                    origin: Origin) -> None:
    async with changing(group_id) as (connection, group):
        if not origin.console:
            await access.check_owner(actor.id, group_id)
        target, membership = await _target(connection, group_id, target_id)
        if membership.role == ROLE_OWNER:
            raise Refused("this member already owns the group")
        former = group.owner_id  # type: ignore[attr-defined]
        await Membership.filter(community_id=group_id, role=ROLE_OWNER).using_db(
            connection).update(role=ROLE_MEMBER)
        membership.role = ROLE_OWNER
        await membership.save(using_db=connection, update_fields=["role"])
        group.owner_id = target.id  # type: ignore[attr-defined]
        await group.save(using_db=connection, update_fields=["owner_id"])
        stored = await store_notice(connection, group_id, Notice("owner", actor, target))
    await after_change(ctx, [stored], group=group, origin=origin,
                       detail=f"former owner {former}")
