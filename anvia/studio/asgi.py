"""Studio's ASGI application: Django's handler, routed to Studio's own urlconf.

It skips the project's middleware on purpose: Studio must work whatever the project stacks there
(a login-required middleware would lock the developer out). What Studio needs from middleware
it does itself: the Host check here, CSRF on the views that write, and headers that keep other
sites from framing or sniffing it.
"""

from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.urls import set_urlconf

from anvia.studio.views import StudioSite

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class StudioHandler(ASGIHandler):
    """Serves one ``StudioSite``. HTTP only: Studio's live updates are server-sent events."""

    def __init__(self, site: StudioSite):
        self.site = site
        super().__init__()

    def load_middleware(self, is_async: bool = True) -> None:
        # BaseHandler's hooks, filled with Studio's one layer instead of settings.MIDDLEWARE.
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async
        site = self.site

        async def studio_request(request: HttpRequest) -> HttpResponse:
            request.urlconf = site
            set_urlconf(site)
            # Raises DisallowedHost (a 400) for a Host outside ALLOWED_HOSTS: no DNS rebinding.
            request.get_host()
            return await get_response(request)

        handle = convert_exception_to_response(studio_request)

        async def with_headers(request: HttpRequest) -> HttpResponse:
            response = await handle(request)
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
            return response

        self._middleware_chain = with_headers
