"""Middlewares: JSON errors for everything, and the cross-site guards from ComfyUI's CVEs.

Order (outermost first): `error_middleware` turns every refusal into a JSON 4xx and, as a
last resort, an unexpected exception into a logged JSON 500 without a traceback (counted in
`app[UNEXPECTED_ERRORS]` so tests can prove no bad input reaches it); then
`guard_middleware` checks Host, Origin, Sec-Fetch-Site and content types on every request,
websocket upgrades included.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from aiohttp import web
from yarl import URL

from .errors import ApiError, error_body, json_response
from .state import UNEXPECTED_ERRORS

log = logging.getLogger("vidgraph.server")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The CORS-"simple" types a cross-site form or fetch can send without a preflight.
SIMPLE_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                                  "text/plain"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


@dataclass
class GuardPolicy:
    bind_host: str = "127.0.0.1"
    allowed_hosts: set[str] = field(default_factory=set)  # extra Host names (reverse proxies)
    cors_origin: str | None = None                        # the one origin --enable-cors-header opens
    multipart_paths: frozenset[str] = frozenset()          # endpoints that legitimately take forms

    def host_allowed(self, hostname: str) -> bool:
        """Host allow-list against DNS rebinding: a rebinding domain names itself in Host."""
        if hostname in LOOPBACK_NAMES or hostname in self.allowed_hosts or is_loopback(hostname):
            return True
        if hostname == self.bind_host.strip("[]"):
            return True
        if is_wildcard(self.bind_host):
            # Exposed on every interface: any literal address is us; names must be allow-listed.
            try:
                ipaddress.ip_address(hostname)
                return True
            except ValueError:
                return False
        return False


def _host_and_port(authority: str, scheme: str = "http") -> tuple[str, int | None]:
    """(lower-case host name, explicit port or None) of a Host header or an Origin's authority."""
    try:
        url = URL(f"{scheme}://{authority}")
        hostname = (url.raw_host or "").lower()
        port = url.explicit_port
    except (ValueError, TypeError):
        raise ApiError(400, "bad_host", f"Malformed host {authority!r}") from None
    if not hostname:
        raise ApiError(400, "bad_host", f"Malformed host {authority!r}")
    return hostname.strip("[]"), port


def origin_matches_host(origin: str, hostname: str, port: int | None) -> bool:
    """Same host and port. A Host without a port is a proxy's default port: 80 or 443."""
    try:
        url = URL(origin)
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or not url.raw_host:
        return False
    origin_host, origin_port = _host_and_port(url.raw_authority, url.scheme)
    origin_port = origin_port or (443 if url.scheme == "https" else 80)
    return origin_host == hostname and (origin_port == port if port else origin_port in (80, 443))


def looks_like_browser(request: web.Request) -> bool:
    """Browsers send Origin or Fetch Metadata (or at least a Mozilla/ agent); scripts do not.

    Python's urllib labels every POST as a form, so a ComfyUI script written against urllib
    would be refused if the content-type gate applied to non-browser clients; a cross-site
    form post, the thing the gate exists for, always comes from a browser.
    """
    headers = request.headers
    return ("Origin" in headers or any(k.lower().startswith("sec-fetch-") for k in headers)
            or headers.get("User-Agent", "").startswith("Mozilla/"))


def is_page_navigation(request: web.Request) -> bool:
    """A top-level GET of the editor page (a link from elsewhere): no side effects, so allowed."""
    headers = request.headers
    return (request.method == "GET" and request.path in ("/", "/index.html")
            and headers.get("Sec-Fetch-Mode") == "navigate" and headers.get("Sec-Fetch-Dest") == "document")


def check_request(request: web.Request, policy: GuardPolicy) -> bool:
    """Raise ApiError unless the request may proceed; True when CORS headers should be added."""
    host_header = request.headers.get("Host")
    if not host_header:
        raise ApiError(400, "bad_host", "Missing Host header")
    hostname, port = _host_and_port(host_header)
    if not policy.host_allowed(hostname):
        raise ApiError(403, "host_not_allowed",
                       f"Host {hostname!r} is not allowed (add it with --allow-host if it is yours)")
    origin = request.headers.get("Origin")
    cors_match = origin is not None and policy.cors_origin is not None and origin == policy.cors_origin
    if origin is not None and not cors_match:
        if origin.strip().lower() == "null":
            raise ApiError(403, "origin_refused", "Origin 'null' is refused")
        if not origin_matches_host(origin, hostname, port):
            raise ApiError(403, "origin_refused",
                           f"Origin {origin!r} does not match Host {host_header!r}")
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site" and not cors_match \
            and not is_page_navigation(request):
        raise ApiError(403, "cross_site_refused", "Cross-site requests are refused")
    if request.method in UNSAFE_METHODS and request.path not in policy.multipart_paths:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in SIMPLE_CONTENT_TYPES and looks_like_browser(request):
            raise ApiError(415, "unsupported_media_type",
                           f"{request.path} takes application/json, not {content_type}")
    return cors_match


def _cors_headers(origin: str) -> dict:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization, Comfy-User",
            "Access-Control-Allow-Credentials": "true"}


def guard_middleware(policy: GuardPolicy):
    @web.middleware
    async def guard(request: web.Request, handler):
        cors = check_request(request, policy)
        if cors and request.method == "OPTIONS":
            return web.Response(status=204, headers=_cors_headers(policy.cors_origin))
        try:
            response = await handler(request)
        except ApiError as e:  # answered here so the allowed origin can read the error too
            response = e.response()
        if cors and not response.prepared:
            response.headers.update(_cors_headers(policy.cors_origin))
        return response
    return guard


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        response = await handler(request)
    except ApiError as e:
        response = e.response()
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        type_ = {404: "not_found", 405: "method_not_allowed",
                 413: "body_too_large"}.get(e.status, "http_error")
        response = json_response(error_body(type_, e.reason, e.text or ""), status=e.status)
    except Exception:
        request.app[UNEXPECTED_ERRORS] += 1
        log.exception("unexpected error while serving %s %s", request.method, request.path)
        response = json_response(
            error_body("internal_error", "Internal error; see the server log"), status=500)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
