"""Signing in from the login form: the password is checked by the directory (LDAP / Active
Directory, when `[ldap]` is on) or locally, and every outcome is counted (metrics) and
recorded in the audit log with the caller's address.

Throttled attempts are counted but not recorded one by one: a flood of them would otherwise
write a row each."""

from __future__ import annotations

from app.model.tables import User
from app.service import audit, ldap_auth, users
from app.service.context import ServiceContext
from app.util.errors import AppError, Throttled


async def sign_in(ctx: ServiceContext, mobile: str, password: str, client_ip: str
                  ) -> tuple[User, str]:
    """The signed-in user and their new token; the AppError that refused it otherwise."""
    try:
        user, token = await _check(ctx, mobile, password, client_ip)
    except AppError as error:
        ctx.metrics.count_signin_failure(error.reason)
        if not isinstance(error, Throttled):
            await audit.record_quietly(audit.SIGN_IN, actor_name=mobile, address=client_ip,
                                       success=False, detail=error.detail)
        raise
    await audit.record(audit.SIGN_IN, actor=user, address=client_ip)
    return user, token


async def _check(ctx: ServiceContext, mobile: str, password: str, client_ip: str
                 ) -> tuple[User, str]:
    if ctx.settings.ldap.enabled:
        directory = ldap_auth.Directory(ctx.settings.ldap)
        return await ldap_auth.sign_in(ctx, directory, mobile, password, client_ip)
    return await users.login(ctx, mobile=mobile, password=password, client_ip=client_ip)
