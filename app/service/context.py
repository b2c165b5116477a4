"""ServiceContext: what services need from the running app (settings, password hashing, the
hub, throttles), kept on `app.ctx.services` so nothing lives in module-level state."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.model.sign_ins import SessionLookup, session_lookup
from app.service.metrics import Metrics
from app.service.upload_limits import UploadLimits
from app.settings import Settings
from app.util.ratelimit import SlidingWindowLimiter
from app.util.security import PasswordHashing

if TYPE_CHECKING:
    from app.chat.hub import Hub

MAX_REMEMBERED_ACCOUNTS = 100_000
MAX_ADDRESSES_PER_ACCOUNT = 16


@dataclasses.dataclass
class ServiceContext:
    settings: Settings
    passwords: PasswordHashing
    login_limiter: SlidingWindowLimiter
    # Attempts on one account from every address together: slower than the per-address limits.
    account_login_limiter: SlidingWindowLimiter
    registration_limiter: SlidingWindowLimiter
    hub: Hub
    upload_limits: UploadLimits
    # This process's figures for /metrics and the admin console (app/service/metrics.py).
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    # Chat handshakes' sign-ins, looked up many at once in a reconnect storm.
    session_lookup: SessionLookup = dataclasses.field(default_factory=session_lookup)
    # Addresses each account (by mobile) signed in from: spared by the per-account limit, so a
    # guesser elsewhere cannot lock the owner out of their usual desk.
    known_addresses: dict[str, set[str]] = dataclasses.field(default_factory=dict)

    def remember_address(self, mobile: str, address: str) -> None:
        if len(self.known_addresses) >= MAX_REMEMBERED_ACCOUNTS:
            self.known_addresses.clear()
        addresses = self.known_addresses.setdefault(mobile, set())
        if len(addresses) >= MAX_ADDRESSES_PER_ACCOUNT:
            addresses.pop()
        addresses.add(address)

    @classmethod
    def build(cls, settings: Settings, hub: Hub, metrics: Metrics | None = None
              ) -> ServiceContext:
        return cls(
            metrics=metrics or Metrics(),
            settings=settings,
            passwords=PasswordHashing(settings.auth),
            login_limiter=SlidingWindowLimiter(settings.auth.login_attempts_per_minute, 60.0),
            account_login_limiter=SlidingWindowLimiter(
                settings.auth.account_login_attempts_per_hour, 3600.0),
            registration_limiter=SlidingWindowLimiter(settings.auth.registrations_per_hour,
                                                      3600.0),
            hub=hub,
            upload_limits=UploadLimits(settings.storage),
        )
