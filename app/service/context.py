"""ServiceContext: what services need from the running app (settings, password hashing, the
hub, throttles), kept on `app.ctx.services` so nothing lives in module-level state."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.service.uploads import UploadLimits
from app.settings import Settings
from app.util.ratelimit import SlidingWindowLimiter
from app.util.security import PasswordHashing

if TYPE_CHECKING:
    from app.service.hub import Hub


@dataclasses.dataclass
class ServiceContext:
    settings: Settings
    passwords: PasswordHashing
    login_limiter: SlidingWindowLimiter
    registration_limiter: SlidingWindowLimiter
    hub: Hub
    upload_limits: UploadLimits

    @classmethod
    def build(cls, settings: Settings, hub: Hub) -> ServiceContext:
        return cls(
            settings=settings,
            passwords=PasswordHashing(settings.auth),
            login_limiter=SlidingWindowLimiter(settings.auth.login_attempts_per_minute, 60.0),
            registration_limiter=SlidingWindowLimiter(settings.auth.registrations_per_hour,
                                                      3600.0),
            hub=hub,
            upload_limits=UploadLimits(settings.storage),
        )
