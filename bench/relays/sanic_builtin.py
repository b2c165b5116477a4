"""Sanic baseline relay: the same routing as lean.py on Sanic's built-in `app.websocket` layer.

It shows what imchat would cost if its chat traffic ran on Sanic's own WebSocket
implementation (a task per `data_received`, a lock per send, `await ws.send` per recipient).
Same frames and rules as the lean relay: cmd 10 -> user `dstid`, cmd 11 -> every member of group
`dstid` except the sending connection; `/chat?id=&token=` trusted without a database.
Run: `python bench/relays/sanic_builtin.py --port 9002 --group 1:1:1000`.
"""

from __future__ import annotations

import logging
from typing import Any

import ujson
from common import GroupRule, groups_of, parse_args, raise_nofile_limit, setup_logging
from sanic import Request, Sanic
from sanic.server.websockets.impl import WebsocketImplProtocol

CMD_SINGLE = 10
CMD_GROUP = 11

users: dict[int, set[WebsocketImplProtocol]] = {}
groups: dict[int, set[WebsocketImplProtocol]] = {}
rules: list[GroupRule] = []

# A bare relay: no sanic-ext (it is installed for imchat and would auto-attach), Sanic's own
# log handlers off (their INFO lines per worker start are noise in the benchmark output).
app = Sanic("bench_sanic_relay", configure_logging=False)
app.config.AUTO_EXTEND = False
app.config.WEBSOCKET_MAX_SIZE = 64 * 1024


async def send_all(targets: list[WebsocketImplProtocol], data: str | bytes) -> None:
    for conn in targets:
        try:
            await conn.send(data)
        except Exception:  # a peer that went away must not stop the fan-out
            logging.getLogger(__name__).debug("send failed", exc_info=True)


async def dispatch(sender: WebsocketImplProtocol, data: str | bytes) -> None:
    try:
        msg: Any = ujson.loads(data)
        cmd = msg.get("cmd")
        dstid = int(msg.get("dstid", 0))
    except (ValueError, TypeError, AttributeError):
        return
    if cmd == CMD_SINGLE:
        targets = users.get(dstid)
        if targets:
            await send_all(list(targets), data)
    elif cmd == CMD_GROUP:
        members = groups.get(dstid)
        if members:
            await send_all([conn for conn in members if conn is not sender], data)


@app.websocket("/chat")
async def chat(request: Request, ws: WebsocketImplProtocol) -> None:
    try:
        uid = int(request.args.get("id", ""))
    except ValueError:
        await ws.close(1008, "bad id")
        return
    gids = groups_of(uid, rules)
    users.setdefault(uid, set()).add(ws)
    for gid in gids:
        groups.setdefault(gid, set()).add(ws)
    try:
        while True:
            data = await ws.recv()
            if data is None:
                break
            await dispatch(ws, data)
    finally:
        conns = users.get(uid)
        if conns is not None:
            conns.discard(ws)
            if not conns:
                del users[uid]
        for gid in gids:
            groups[gid].discard(ws)


def main() -> None:
    args = parse_args("Sanic built-in websocket relay (benchmark baseline)")
    raise_nofile_limit()
    rules.extend(args.group)
    app.run(
        host=args.host,
        port=args.port,
        single_process=True,  # one server process, as for the other servers
        access_log=False,
        motd=False,
        backlog=args.backlog,
    )


if __name__ == "__main__":
    setup_logging()
    main()
