"""GET /metrics: this process's figures in Prometheus's text format, for the addresses in
`server.metrics_allow` only (403 for anyone else: the figures say how busy the server is and
who is being refused)."""

from __future__ import annotations

import ipaddress

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.service.metrics import CONTENT_TYPE
from app.util.errors import Forbidden

metrics_bp = Blueprint("metrics")


def address_allowed(address: str, allowed: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return any(ip in ipaddress.ip_network(network, strict=False) for network in allowed)


@metrics_bp.get("/metrics")
@openapi.summary("Prometheus metrics of this server process")
@openapi.description("Text exposition format: connections, users online, messages stored and "
                     "delivered, delivery latency, writer batch sizes and backlog, HTTP "
                     "requests by route and status, sign-in failures, process CPU and memory. "
                     "Only for addresses in `server.metrics_allow`; 403 otherwise.")
async def metrics(request: Request) -> HTTPResponse:
    settings = request.app.ctx.settings
    if not address_allowed(request.client_ip or "", settings.server.metrics_allow):
        raise Forbidden("metrics are not served to this address (server.metrics_allow)")
    return HTTPResponse(request.app.ctx.metrics.render(), content_type=CONTENT_TYPE)
