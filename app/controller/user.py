"""/user/*: register, login, logout, find, me — the article's account routes."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import (
    clear_session_cookie,
    client_address,
    request_token,
    require_user,
    services,
    set_session_cookie,
)
from app.service import admin, signin, users
from app.util.binding import id_field, request_fields, text_field
from app.util.responses import ok

user_bp = Blueprint("user", url_prefix="/user")


def _with_token(user_json: dict, token: str) -> dict:
    return {**user_json, "token": token}


@user_bp.post("/register")
@openapi.summary("Register an account (also logs in)")
@openapi.description("Form or JSON: mobile, passwd, nickname, avatar, sex (M/W/U), memo. "
                     "Answers the user with `token` and sets the session cookie. More than "
                     "`auth.registrations_per_hour` sign-ups from one address answer 429.")
async def register(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user, token = await users.register(
        services(request),
        client_ip=client_address(request),
        mobile=text_field(fields, "mobile", required=True, max_length=20),
        password=text_field(fields, "passwd", required=True, max_length=128, label="password"),
        nickname=text_field(fields, "nickname", max_length=40),
        avatar=text_field(fields, "avatar", max_length=255),
        sex=text_field(fields, "sex", max_length=2, default="U").upper(),
        memo=text_field(fields, "memo", max_length=140),
    )
    response = ok(_with_token(users.public_user(user, online=True), token))
    set_session_cookie(request, response, token)
    return response


@user_bp.post("/login")
@openapi.summary("Log in with mobile and passwd")
@openapi.description("Answers the user with a new `token` and sets the session cookie. "
                     "Repeated failures for one mobile or address answer 429.")
async def login(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user, token = await signin.sign_in(
        services(request),
        mobile=text_field(fields, "mobile", required=True, max_length=20),
        password=text_field(fields, "passwd", required=True, max_length=128, label="password"),
        client_ip=client_address(request),
    )
    response = ok(_with_token(users.public_user(user, online=True), token))
    set_session_cookie(request, response, token)
    return response


@user_bp.post("/logout")
@openapi.summary("End this session: the token stops working and its sockets close")
async def logout(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    await users.logout(services(request), user, request_token(request, fields) or "")
    response = ok(None, "logged out")
    clear_session_cookie(request, response)
    return response


@user_bp.post("/update")
@openapi.summary("Change my profile: any of nickname, avatar, sex, memo")
async def update(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    limits = {"nickname": 40, "avatar": 255, "sex": 2, "memo": 140}
    changes = {name: text_field(fields, name, max_length=limit)
               for name, limit in limits.items() if name in fields}
    if "sex" in changes:
        changes["sex"] = changes["sex"].upper()
    user = await users.update_profile(user, changes)
    return ok(users.public_user(user, online=True), "profile updated")


@user_bp.post("/password")
@openapi.summary("Change my password: `oldpasswd` and `newpasswd`; my other sign-ins end")
async def change_password(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    await users.change_password(
        services(request), user,
        old=text_field(fields, "oldpasswd", required=True, max_length=128, label="password"),
        new=text_field(fields, "newpasswd", required=True, max_length=128, label="password"),
        current_token=request_token(request, fields) or "", address=client_address(request))
    return ok(None, "password changed")


@user_bp.post("/find")
@openapi.summary("Look up a user by id")
@openapi.description("Friends (and yourself) are answered in full; anyone else without the "
                     "mobile number and with `online` 0.")
async def find(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    viewer = await require_user(request, fields)
    return ok(await users.find(services(request), viewer, id_field(fields, "id") or 0))


@user_bp.route("/me", methods=["GET", "POST"])
@openapi.summary("The logged-in user (checks the session cookie)")
@openapi.description("The user JSON plus `admin` (true for an administrator: the web client "
                     "then offers the admin console).")
async def me(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    return ok(await admin.own_card(user))
