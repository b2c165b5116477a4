"""Fast set-up of imchat's database for the benchmark: users, tokens, friends, one group.

Registering 15,000 users over HTTP would cost 15,000 argon2 hashes (about 50 ms each here, more
than ten minutes), so this script writes the same rows directly with the app's own models and
services, in a separate process (the benchmark itself never imports the app):

- users: `app.model.tables.User` rows in bulk, all sharing one argon2 hash made by the app's own
  `PasswordHashing` (so `POST /user/login` works for them with password BENCH_PASSWORD);
- tokens: `app.service.users.issue_token` (the same call login and register make);
- friends: `app.service.contacts.add_friend` for each pair (2k, 2k+1);
- group: `app.service.groups.create_group` by user 0 and `join_group` for the other members.

`--check` only tells whether the app has its chat endpoint yet (exit 0) or not (exit 1, with the
reason on stdout). Output of a real run: JSON {"users": [{"id", "token", "mobile"}], "group_id"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

BENCH_PASSWORD = "bench-password"
GROUP_NAME = "bench-fanout"
log = logging.getLogger("bench.imchat_prepare")


def check_chat_route() -> int:
    """Exit status 0 when the app built from a throwaway config serves a `/chat` websocket."""
    from app.server import create_app
    from app.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(f'[database]\npath = "{tmp}/x.db"\n[storage]\nupload_dir = "{tmp}/resource"\n')
        app = create_app(load_settings(config), name="bench_check")
        paths = {route.path.strip("/") for route in app.router.routes}
    if "chat" not in paths:
        sys.stdout.write("imchat has no /chat route yet (app/controller has no chat endpoint)\n")
        return 1
    return 0


async def prepare(config: Path, users: int, pairs: int, group_members: int) -> dict[str, Any]:
    from tortoise.transactions import in_transaction

    from app.chat.broker import make_broker
    from app.chat.hub import Hub
    from app.model.database import close_database, open_database
    from app.model.tables import Message, User
    from app.service.contacts import add_friend
    from app.service.context import ServiceContext
    from app.service.groups import create_group, join_group
    from app.service.users import issue_token
    from app.settings import load_settings

    settings = load_settings(config)
    await open_database(settings)
    # The services announce friendships and joins to the hub, as in the running app; this hub
    # has no sessions, so those announcements reach nobody.
    hub = Hub(make_broker(settings.broker.kind, settings.broker.url))
    await hub.start()
    try:
        ctx = ServiceContext.build(settings, hub)
        started = time.monotonic()
        passwd_hash = await ctx.passwords.hash(BENCH_PASSWORD)
        mobiles = [f"bench{i:06d}" for i in range(users)]
        await User.bulk_create(
            [User(mobile=m, passwd_hash=passwd_hash, nickname=m) for m in mobiles],
            batch_size=1000,
        )
        by_mobile = {u.mobile: u for u in await User.filter(mobile__in=mobiles)}
        ordered = [by_mobile[m] for m in mobiles]
        log.info("%d users in %.1fs", users, time.monotonic() - started)

        tokens: list[str] = []
        async with in_transaction():
            for user in ordered:
                tokens.append(await issue_token(ctx, user))
        log.info("tokens in %.1fs", time.monotonic() - started)

        for k in range(pairs):
            await add_friend(ctx, ordered[2 * k], ordered[2 * k + 1].mobile)
        log.info("%d friend pairs in %.1fs", pairs, time.monotonic() - started)

        group_id = 0
        if group_members > 0:
            group = await create_group(ctx, ordered[0], GROUP_NAME, memo="benchmark fan-out")
            group_id = group.id
            async with in_transaction():
                for user in ordered[1:group_members]:
                    await join_group(ctx, user, GROUP_NAME)
        log.info("group of %d in %.1fs", group_members, time.monotonic() - started)
        # Joining writes a stored notice per member ("X joined"): mark them delivered, so the
        # scenarios start from an empty backlog (an article client is pushed what it missed).
        newest = await Message.all().order_by("-id").first()
        await User.all().update(legacy_delivered_id=newest.id if newest else 0)
        return {
            "users": [
                {"id": u.id, "mobile": u.mobile, "token": t} for u, t in zip(ordered, tokens, strict=True)
            ],
            "group_id": group_id,
            "password": BENCH_PASSWORD,
        }
    finally:
        await hub.stop()
        await close_database()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=0)
    parser.add_argument("--group-members", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.check:
        return check_chat_route()
    if args.config is None or args.out is None:
        parser.error("--config and --out are required")
    if 2 * args.pairs > args.users or args.group_members > args.users:
        parser.error("pairs and group members must fit in --users")
    data = asyncio.run(prepare(args.config, args.users, args.pairs, args.group_members))
    args.out.write_text(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
