"""The app as a whole: OpenAPI description, errors in the envelope, security headers."""

from __future__ import annotations


async def test_openapi_describes_the_routes(server):
    async with server.client() as client:
        spec = (await client.get("/docs/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/user/register", "/user/login", "/user/logout", "/user/find",
                 "/contact/addfriend", "/contact/loadfriend", "/contact/createcommunity",
                 "/contact/joincommunity", "/contact/loadcommunity", "/attach/upload",
                 "/message/history", "/message/conversations", "/message/search", "/chat",
                 "/message/mute", "/message/mutes",
                 "/user/password", "/contact/directory", "/contact/request", "/contact/requests",
                 "/contact/accept", "/contact/decline", "/contact/cancelrequest",
                 "/contact/removefriend", "/contact/block", "/contact/unblock",
                 "/contact/blocked", "/resource/{name}",
                 "/group/invite", "/group/remove", "/group/leave", "/group/update",
                 "/group/admin", "/group/transfer", "/group/dissolve"):
        assert path in paths, path
    assert "post" in paths["/user/register"] and "get" in paths["/chat"]


async def test_unknown_route_and_wrong_method_answer_in_the_envelope(server):
    async with server.client() as client:
        missing = await client.get("/no/such/route")
        wrong = await client.get("/user/login")
    assert missing.status_code == 404 and missing.json()["code"] == -1
    assert wrong.status_code == 405 and wrong.json()["code"] == -1


async def test_security_headers_on_api_answers(server):
    async with server.client() as client:
        response = await client.post("/user/login", data={"mobile": "x", "passwd": "y"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
