"""The tables: users, login tokens, friendships, groups (the article's "community"), memberships,
chat messages (and what replies and changes refer to), read marks, mutes, attachments, friend
requests and blocks.

Times are integer milliseconds since the epoch: portable between SQLite and MySQL, cheap to
compare and to send on the wire.
"""

from __future__ import annotations

import time

from tortoise import fields
from tortoise.models import Model


def now_ms() -> int:
    return int(time.time() * 1000)


class User(Model):
    id = fields.BigIntField(primary_key=True)
    mobile = fields.CharField(max_length=20, unique=True)
    passwd_hash = fields.CharField(max_length=255)
    nickname = fields.CharField(max_length=40, default="")
    avatar = fields.CharField(max_length=255, default="")
    sex = fields.CharField(max_length=2, default="U")
    memo = fields.CharField(max_length=140, default="")
    disabled = fields.BooleanField(default=False)
    # Highest message id pushed to this user's article-protocol (legacy) connections.
    legacy_delivered_id = fields.BigIntField(default=0)
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_user"
        # Avatars are downloads anyone signed in may make (app/service/file_access.py).
        indexes = (("avatar",),)


class AuthToken(Model):
    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="tokens", on_delete=fields.CASCADE
    )
    # sha256 of the token: a leaked table does not leak usable credentials.
    token_hash = fields.CharField(max_length=64, unique=True)
    created_ms = fields.BigIntField(default=now_ms)
    expires_ms = fields.BigIntField()

    class Meta:
        table = "im_token"


class Friendship(Model):
    """One row per direction: (owner, friend) and (friend, owner) are both stored."""

    id = fields.BigIntField(primary_key=True)
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="friendships", on_delete=fields.CASCADE
    )
    friend: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="befriended_by", on_delete=fields.CASCADE
    )
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_friendship"
        unique_together = (("owner", "friend"),)


class Community(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=40, unique=True)
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="owned_communities", on_delete=fields.CASCADE
    )
    icon = fields.CharField(max_length=255, default="")
    memo = fields.CharField(max_length=140, default="")
    cate = fields.IntField(default=1)
    created_ms = fields.BigIntField(default=now_ms)
    # Private: joined only by invitation (the name cannot be used to join); 0.1.0's are public.
    is_private = fields.BooleanField(default=False)

    class Meta:
        table = "im_community"
        # Group icons are downloads anyone signed in may make (app/service/file_access.py).
        indexes = (("icon",),)


ROLE_MEMBER, ROLE_ADMIN, ROLE_OWNER = 0, 1, 2


class Membership(Model):
    id = fields.BigIntField(primary_key=True)
    community: fields.ForeignKeyRelation[Community] = fields.ForeignKeyField(
        "models.Community", related_name="memberships", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="memberships", on_delete=fields.CASCADE
    )
    created_ms = fields.BigIntField(default=now_ms)
    # ROLE_MEMBER, ROLE_ADMIN or ROLE_OWNER (the owner's row; im_community.owner_id agrees).
    role = fields.SmallIntField(default=0)

    class Meta:
        table = "im_membership"
        unique_together = (("community", "user"),)


class Message(Model):
    """A stored chat message; `id` is the server id, growing in commit order."""

    id = fields.BigIntField(primary_key=True)
    cmd = fields.SmallIntField()  # 10 one-to-one, 11 group
    sender_id = fields.BigIntField()
    dst_user_id = fields.BigIntField(null=True)
    community_id = fields.BigIntField(null=True)
    # The client's own id for the message, or one the server made ("~..."): unique per sender,
    # so a resend is recognised. cid leads the index because the writer looks rows up by it.
    cid = fields.CharField(max_length=64)
    media = fields.SmallIntField(default=1)
    content = fields.TextField()
    pic = fields.CharField(max_length=255, default="")
    url = fields.CharField(max_length=255, default="")
    memo = fields.CharField(max_length=255, default="")
    amount = fields.IntField(default=0)
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_message"
        unique_together = (("cid", "sender_id"),)
        # url: who may download a stored file is decided by the messages that link to it
        # (app/service/file_access.py).
        indexes = (("dst_user_id", "id"), ("community_id", "id"), ("sender_id", "id"), ("url",))


class MessageRelation(Model):
    """What a message refers to, for the few that do: the message a reply answers or a change
    entry (edit, recall, reaction) changes, and whom it mentions. Plain messages have no row
    here, so the writer's hot path stays one INSERT."""

    id = fields.BigIntField(primary_key=True)
    message_id = fields.BigIntField(unique=True)
    ref_id = fields.BigIntField(null=True, db_index=True)
    # ",5,9," or ",all,": a user's mentions are found with one LIKE.
    mentions = fields.CharField(max_length=255, default="")

    class Meta:
        table = "im_message_relation"


class Mute(Model):
    """A conversation a user muted: stored here so every device of the user agrees."""

    id = fields.BigIntField(primary_key=True)
    user_id = fields.BigIntField()
    cmd = fields.SmallIntField()
    peer_id = fields.BigIntField()
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_mute"
        unique_together = (("user_id", "cmd", "peer_id"),)


class ReadMark(Model):
    """How far a user has read one conversation (a peer user or a group)."""

    id = fields.BigIntField(primary_key=True)
    user_id = fields.BigIntField()
    cmd = fields.SmallIntField()
    peer_id = fields.BigIntField()
    last_read_id = fields.BigIntField(default=0)
    updated_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_readmark"
        unique_together = (("user_id", "cmd", "peer_id"),)


class Attachment(Model):
    id = fields.BigIntField(primary_key=True)
    sha256 = fields.CharField(max_length=64, unique=True)
    stored_name = fields.CharField(max_length=100)
    mime = fields.CharField(max_length=100)
    size = fields.BigIntField()
    width = fields.IntField(default=0)
    height = fields.IntField(default=0)
    uploader_id = fields.BigIntField()
    created_ms = fields.BigIntField(default=now_ms)
    # The name it was uploaded under (made safe), given to downloads; "" before schema 4.
    original_name = fields.CharField(max_length=255, default="")
    # "picture", "voice" or "file": how it was typed by its content.
    kind = fields.CharField(max_length=16, default="file")

    class Meta:
        table = "im_attachment"
        # The daily upload quota sums a user's uploads of the last day; downloads look their
        # file up by name.
        indexes = (("uploader_id", "created_ms"), ("stored_name",))


class Upload(Model):
    """A user who uploaded a file already stored (the article's "秒传" answers them the same
    file): they may download and send it, like its first uploader (`Attachment.uploader_id`)."""

    id = fields.BigIntField(primary_key=True)
    attachment_id = fields.BigIntField()
    user_id = fields.BigIntField()
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_upload"
        unique_together = (("attachment_id", "user_id"),)


class FriendRequest(Model):
    """A pending friend request (contacts.require_approval): accepted or declined, it goes."""

    id = fields.BigIntField(primary_key=True)
    sender: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="friend_requests_sent", on_delete=fields.CASCADE
    )
    recipient: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="friend_requests_received", on_delete=fields.CASCADE
    )
    memo = fields.CharField(max_length=140, default="")
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_friend_request"
        unique_together = (("sender", "recipient"),)


class Block(Model):
    """`owner` blocked `blocked`: no messages, invitations or presence from them to the owner."""

    id = fields.BigIntField(primary_key=True)
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="blocks", on_delete=fields.CASCADE
    )
    blocked: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="blocked_by", on_delete=fields.CASCADE
    )
    created_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_block"
        unique_together = (("owner", "blocked"),)


class AdminRole(Model):
    """Users with the admin role (the /admin/ console).

    A row per admin rather than a column on im_user: granting needs no change to the users
    table, and the row says who granted it and when."""

    id = fields.BigIntField(primary_key=True)
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="admin_role", on_delete=fields.CASCADE
    )
    granted_by_id = fields.BigIntField(null=True)  # None: granted from the command line
    granted_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_admin"


class AuditEntry(Model):
    """The audit log: who did what, from where (app/service/audit.py).

    Sign-ins, admin actions, password changes, group ownership and membership changes, recalls
    of others' messages, background clean-ups."""

    id = fields.BigIntField(primary_key=True)
    created_ms = fields.BigIntField(default=now_ms)
    action = fields.CharField(max_length=40)
    # The acting user (None: the system or the command line) and their mobile at the time, so
    # the entry still reads right after the account is renamed or deleted.
    actor_id = fields.BigIntField(null=True)
    actor = fields.CharField(max_length=40, default="")
    target = fields.CharField(max_length=100, default="")
    address = fields.CharField(max_length=64, default="")
    success = fields.BooleanField(default=True)
    detail = fields.CharField(max_length=500, default="")

    class Meta:
        table = "im_audit"
        indexes = (("action", "id"), ("actor_id", "id"), ("created_ms",))


class DirectoryAccount(Model):
    """Users whose sign-in the LDAP / Active Directory server checks.

    The entry each came from, and when it was last found there (app/service/ldap_auth.py)."""

    id = fields.BigIntField(primary_key=True)
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="directory_account", on_delete=fields.CASCADE
    )
    dn = fields.CharField(max_length=255)
    synced_ms = fields.BigIntField(default=now_ms)

    class Meta:
        table = "im_directory_account"
