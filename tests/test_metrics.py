"""GET /metrics: Prometheus's text format with the figures the issue names, counted from real
traffic on a real server, and refused to addresses outside `server.metrics_allow`."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.controller.metrics import address_allowed
from app.settings import SettingsError
from tests.factories import befriend, close_all, connect, recv_until, register
from tests.harness import make_settings


async def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with server.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


async def test_metrics_count_connections_messages_requests_and_refused_sign_ins(server):
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    await befriend(ann, bob)
    wrong = await ann.client.post("/user/login", data={"mobile": ann.mobile, "passwd": "nope-nope"})
    assert wrong.json()["code"] == -1
    sender, receiver = await connect(server, ann), await connect(server, bob)
    try:
        before = await scrape(server)
        assert before[("imchat_connections", ())] == 2
        assert before[("imchat_users_online", ())] == 2
        assert before[("imchat_messages_stored_total", ())] == 0
        for number in range(3):
            await sender.send(json.dumps({"cmd": 10, "dstid": bob.id, "media": 1,
                                          "content": f"hi {number}", "cid": f"m{number}"}))
            await recv_until(sender, lambda f: f.get("cmd") == 100)
            await recv_until(receiver, lambda f: f.get("cmd") == 10)
        after = await scrape(server)
    finally:
        await sender.close()
        await receiver.close()
        await close_all(ann, bob)
    assert after[("imchat_messages_stored_total", ())] == 3
    assert after[("imchat_messages_delivered_total", ())] == 3
    assert after[("imchat_delivery_latency_seconds_count", ())] == 3
    assert after[("imchat_delivery_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert after[("imchat_writer_batch_size_sum", ())] == 3
    assert after[("imchat_writer_batches_total", ())] == after[
        ("imchat_writer_batch_size_count", ())] >= 1
    assert after[("imchat_writer_backlog", ())] == 0
    assert after[("imchat_signin_failures_total", (("reason", "refused"),))] == 1
    requests = {labels: value for (name, labels), value in after.items()
                if name == "imchat_http_requests_total"}
    assert requests[(("method", "POST"), ("route", "user/register"), ("status", "200"))] == 2
    assert requests[(("method", "POST"), ("route", "user/login"), ("status", "200"))] == 1
    assert requests[(("method", "GET"), ("route", "metrics"), ("status", "200"))] == 1
    assert after[("imchat_build_info", (("version", __import__("app").__version__),))] == 1
    assert after[("process_resident_memory_bytes", ())] > 0


async def test_unknown_paths_are_one_series_not_one_per_path(server):
    async with server.client() as client:
        for path in ("/nope-1", "/nope-2", "/admin/nope"):
            assert (await client.get(path)).status_code == 404
    figures = await scrape(server)
    assert figures[("imchat_http_requests_total", (("method", "GET"), ("route", "(unmatched)"),
                                                    ("status", "404")))] == 3


@pytest.mark.parametrize("settings_overrides", [{"server": {"metrics_allow": ["10.0.0.0/8"]}}])
async def test_metrics_are_refused_to_other_addresses(server):
    async with server.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["msg"] == "metrics are not served to this address (server.metrics_allow)"


def test_allowed_addresses_and_networks():
    assert address_allowed("127.0.0.1", ["127.0.0.1"])
    assert address_allowed("::ffff:127.0.0.1", ["127.0.0.1"])
    assert address_allowed("10.1.2.3", ["192.168.0.1", "10.0.0.0/8"])
    assert not address_allowed("10.1.2.3", ["127.0.0.1"])
    assert not address_allowed("unknown", ["127.0.0.1"])
    assert address_allowed("::1", ["::1"])


def test_a_bad_metrics_address_is_refused_naming_the_key(tmp_path):
    with pytest.raises(SettingsError) as refused:
        make_settings(tmp_path, "sqlite", server={"metrics_allow": ["localhost"]})
    assert str(refused.value) == ("IMCHAT_SERVER_METRICS_ALLOW: 'localhost' is not an address "
                                  "or a network such as 10.0.0.0/8")
