"""The broker between the hub and delivery: services publish Envelopes, every node's hub gets
them. `memory` hands them straight to this process's hub; a Redis broker (for several workers
or machines) implements the same three methods."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol


@dataclasses.dataclass(slots=True, frozen=True)
class Envelope:
    """One thing to deliver: a JSON payload for some users' or one group's connections."""

    payload: bytes
    user_ids: tuple[int, ...] = ()
    group_id: int = 0
    # The message id, so a connection still catching up can order live messages after it.
    message_id: int = 0
    # Extension frames (acks, receipts, typing, presence) reach only v2 connections.
    v2_only: bool = False
    # The connection that sent it gets an acknowledgement instead of its own message back.
    skip_session: int = 0
    # Hub bookkeeping rather than a frame: "joined", "friends", "ended".
    control: str = ""


Deliver = Callable[[Envelope], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    def publish(self, envelope: Envelope) -> None: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """One process: publishing is delivering, synchronously and in order."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)

    async def stop(self) -> None:
        self._deliver = None


def make_broker(kind: str, url: str) -> Broker:
    if kind == "memory":
        return MemoryBroker()
    raise ValueError(f"broker.kind {kind!r} is not available in this build")
