"""Who may download a stored file (/resource/<name>), and so link to it from a message, an
avatar or a group icon.

Files are stored once per content, so one file may be linked from many conversations. A
signed-in user may download it when any of these holds:
- it is someone's avatar or a public group's icon (those show in contact lists, search and
  invitations, to anyone signed in); a private group's icon only to its members (nothing
  shows a private group to anyone else);
- they uploaded it, first (`Attachment.uploader_id`) or again (`Upload`: the same content
  answered at once), so they can preview and send it;
- they may read a message that links to it (`url`), by the history rule of
  app/service/access.py: their one-to-one conversations, their groups from when they joined
  (a member who left or was removed reads nothing of the group, and gets none of its files).
A thumbnail goes with its picture: it may be downloaded wherever the picture may. Anything
else is "no such file" (404), the answer for a name that does not exist: a URL learnt
elsewhere tells nothing.

A link is accepted in a message, an avatar or an icon only if its sender may download the
file: otherwise posting a URL learnt elsewhere into a group of one's own would grant access.
Every lookup is by an index (message url, avatar, icon, attachment name).
"""

from __future__ import annotations

from app.chat.wire import CMD_GROUP
from app.model.tables import Attachment, Community, Membership, Message, Upload, User
from app.service import access
from app.service.uploads import PICTURE_FORMATS, THUMB_SUFFIX
from app.util.errors import NoSuchFile, NotFound

RESOURCE_PREFIX = "/resource/"
NOT_SHAREABLE = "{label} links a file you have not uploaded or received"
# Messages linking to one file read per query while none of them is readable.
BATCH = 500


def family(name: str) -> list[str]:
    """The stored names whose links give access to `name`: itself and, for a thumbnail, its
    picture (stored under one of the picture formats' extensions)."""
    if not name.endswith(THUMB_SUFFIX):
        return [name]
    stem = name[:-len(THUMB_SUFFIX)]
    return [name, *(f"{stem}.{extension}" for extension, _mime in PICTURE_FORMATS.values())]


async def _is_public(links: list[str]) -> bool:
    return (await User.filter(avatar__in=links).exists()
            or await Community.filter(icon__in=links, is_private=False).exists())


async def _is_own_groups_icon(user_id: int, links: list[str]) -> bool:
    """Whether one of `links` is the icon of a (private) group the user belongs to."""
    return await Membership.filter(user_id=user_id, community__icon__in=links).exists()


async def _is_uploader(user_id: int, names: list[str]) -> bool:
    rows = await Attachment.filter(stored_name__in=names).values_list("id", "uploader_id")
    if any(uploader == user_id for _id, uploader in rows):
        return True
    return bool(rows) and await Upload.filter(attachment_id__in=[i for i, _u in rows],
                                              user_id=user_id).exists()


async def _in_readable_message(user_id: int, links: list[str]) -> bool:
    """Whether a message the user may read links to one of `links` (newest first)."""
    query = Message.filter(url__in=links).order_by("-id")
    before: int | None = None
    while True:
        page = query if before is None else query.filter(id__lt=before)
        rows = await page.limit(BATCH).values("id", "cmd", "sender_id", "dst_user_id",
                                               "community_id", "created_ms")
        if not rows:
            return False
        readable = await access.readable_in(user_id, {
            row["community_id"] for row in rows if row["cmd"] == CMD_GROUP})
        if any(readable.allows(row) for row in rows):
            return True
        if len(rows) < BATCH:
            return False
        before = rows[-1]["id"]


async def may_download(user_id: int | None, name: str) -> bool:
    """Whether the user (None: someone not signed up yet) may download stored file `name`."""
    names = family(name)
    links = [RESOURCE_PREFIX + each for each in names]
    if user_id is not None and (await _is_uploader(user_id, names)
                                or await _in_readable_message(user_id, links)):
        return True
    if await _is_public(links):
        return True
    return user_id is not None and await _is_own_groups_icon(user_id, links)


async def check_download(user_id: int, name: str) -> None:
    if not await may_download(user_id, name):
        raise NoSuchFile()


async def check_links(user_id: int | None, label: str, *links: str) -> None:
    """Each /resource/ link among `links` (already checked to be local) must name a file the
    user may download; /asset/ files (built-in stickers, avatars) are anyone's."""
    for link in links:
        if link.startswith(RESOURCE_PREFIX) and not await may_download(
                user_id, link[len(RESOURCE_PREFIX):]):
            raise NotFound(NOT_SHAREABLE.format(label=label))


def links_uploads(url: str, pic: str) -> bool:
    """Whether a message's `url` or `pic` is a stored upload's (a check with the database is
    needed). Called for every chat message: two plain tests, no generator."""
    return (bool(url) and url.startswith(RESOURCE_PREFIX)) or (
        bool(pic) and pic.startswith(RESOURCE_PREFIX))
