"""ChatRuntime: what all chat sessions of this process share (the hub, the message writer, the
chat settings, the per-user rate buckets and socket counts), kept on `app.ctx.chat`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.model import message_store
from app.settings import ChatSettings
from app.util.batching import BatchedLoader
from app.util.errors import Throttled
from app.util.ratelimit import TokenBuckets
from app.websocket import WriteCoalescer, WsConnection

if TYPE_CHECKING:
    from app.chat.hub import Hub
    from app.model.message_writer import MessageWriter
    from app.service.context import ServiceContext


class ChatRuntime:
    """The hub, the writer and the chat settings, with the rules they share across sessions."""

    __slots__ = ("hub", "writer", "settings", "coalescer", "paused", "tasks", "buckets",
                 "history_buckets", "open_sockets", "services", "missed")

    def __init__(self, hub: Hub, writer: MessageWriter, settings: ChatSettings,
                 coalescer: WriteCoalescer | None = None) -> None:
        self.hub = hub
        self.writer = writer
        self.settings = settings
        # Around a synchronous run of sends (a catch-up page): one write per connection.
        self.coalescer = coalescer or WriteCoalescer()
        # Connections whose reading is paused while the writer catches up.
        self.paused: set[WsConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        # One token bucket per user, shared by all of the user's connections: opening more
        # sockets does not raise anyone's rate.
        rate = settings.messages_per_second
        self.buckets = TokenBuckets(rate, 2.0 * rate, start=rate)
        per_minute = settings.history_pages_per_minute
        self.history_buckets = TokenBuckets(per_minute / 60.0, max(1.0, per_minute / 6.0))
        # Open chat sockets per user in this process (counted from on_open to on_close).
        self.open_sockets: dict[int, int] = {}
        # The services (set once the app has built them): socket commands that change more
        # than messages (app/chat/group_commands.py) call the same service functions as HTTP.
        self.services: ServiceContext | None = None
        # Whether a (user, since) has anything to catch up, asked by the sockets connecting
        # meanwhile in one query: after a restart most have nothing, and learn it cheaply.
        self.missed: BatchedLoader[tuple[int, int], bool] = BatchedLoader(
            message_store.pairs_with_missed, False)

    def take_token(self, user_id: int, cost: float = 1.0) -> None:
        if not self.buckets.take(user_id, cost):
            raise Throttled("you are sending too fast; the request was refused")

    async def pay(self, user_id: int, cost: float, conn: WsConnection) -> bool:
        """Take `cost` from the user's bucket, waiting as long as it takes to fill: work the
        server does on its own account (a catch-up page) is paced, not refused. False (and
        nothing taken) once `conn` is closed: sockets opened and dropped in a loop must not
        leave waiters behind."""
        buckets = self.buckets
        cost = min(cost, buckets.burst)  # a bucket never holds more than its burst
        while not conn.closed:
            if buckets.take(user_id, cost):
                return True
            # Several catch-ups may wait on one bucket: each takes its turn when it wakes.
            await asyncio.sleep(buckets.wait_time(user_id, cost))
        return False

    def take_history_page(self, user_id: int) -> None:
        if not self.history_buckets.take(user_id):
            raise Throttled("you are loading history too fast; try again in a moment")

    def check_socket_room(self, user_id: int) -> None:
        """Refuse (429) one more chat socket beyond chat.max_connections_per_user."""
        if self.open_sockets.get(user_id, 0) >= self.settings.max_connections_per_user:
            raise Throttled("too many chat connections are open for this account; "
                            "close another tab or device first")

    def socket_opened(self, user_id: int) -> None:
        self.open_sockets[user_id] = self.open_sockets.get(user_id, 0) + 1

    def socket_closed(self, user_id: int, conn: WsConnection) -> None:
        left = self.open_sockets.get(user_id, 1) - 1
        if left > 0:
            self.open_sockets[user_id] = left
        else:
            self.open_sockets.pop(user_id, None)
        self.paused.discard(conn)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def pause_while_behind(self, conn: WsConnection) -> None:
        """The database is behind: stop reading from this client until the writer catches up."""
        writer = self.writer
        if writer.backlog >= writer.high_water and not conn.closed:
            conn.pause_reading()
            self.paused.add(conn)

    def writer_progressed(self) -> None:
        if self.paused and self.writer.backlog < self.writer.high_water // 2:
            paused, self.paused = self.paused, set()
            for conn in paused:
                conn.resume_reading()
