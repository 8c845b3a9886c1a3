"""Typed keys for app and request state, in one place so modules need not import each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from control_api.context import Services

REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_IP = web.RequestKey("client_ip", str)
SERVICES: web.AppKey[Services] = web.AppKey("services")
