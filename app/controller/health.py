"""GET /health: whether this process can do its work, and if not, what is failing (the
database, the writing of messages, the broker). 200 when all is well, 503 otherwise, for a
load balancer or a monitoring check; no credentials needed and nothing private said."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.model.database import fetch_all
from app.util.responses import fail, ok

health_bp = Blueprint("health")

PROBE_SECONDS = 2.0


@health_bp.get("/health")
@openapi.summary("Health of this server process")
@openapi.description("Answers 200 `{code:0, data:{database, messages, broker}}` when the database "
                     "answers, messages are being stored and the broker works; otherwise 503 "
                     "with the envelope, `msg` naming what is failing.")
async def health(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await fetch_all("SELECT 1 AS up")
        database = ""
    except TimeoutError:
        database = f"no answer within {PROBE_SECONDS:g} s"
    except Exception as error:
        database = str(error) or type(error).__name__
    state = {"database": database, "messages": ctx.writer.health(),
             "broker": ctx.hub.broker.health()}
    failing = {part: problem for part, problem in state.items() if problem}
    data = {part: problem or "ok" for part, problem in state.items()}
    if failing:
        return fail("; ".join(f"{part}: {problem}" for part, problem in failing.items()),
                    status=503, reason="unavailable", data=data)
    return ok(data)
