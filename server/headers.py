"""Security headers on every answer, and the page's content security policy.

The page (``/`` and ``/static``) runs only the scripts and styles it ships as files, talks
only to this server and cannot be framed: a script injected through a gallery field would
not run, and another site cannot overlay it. ``/docs`` and ``/redoc`` (FastAPI's OpenAPI
pages) load their own scripts from a CDN, so they get no CSP; they are read-only.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Images may be blob: URLs: with reads protected the page fetches crops with the key and
#: shows them from memory (an <img src> cannot send a header).
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
_NO_POLICY_PREFIXES = ("/docs", "/redoc")


class SecurityHeaders:
    """ASGI middleware adding ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
    ``Referrer-Policy: no-referrer``, the page's ``Content-Security-Policy``, and, when the
    server speaks HTTPS, ``Strict-Transport-Security``."""

    def __init__(self, app: ASGIApp, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with_policy = not scope.get("path", "").startswith(_NO_POLICY_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if with_policy:
                    headers.setdefault("Content-Security-Policy", PAGE_POLICY)
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, send_with_headers)
