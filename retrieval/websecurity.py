"""What both browser-facing apps share: a Host allowlist and the headers that keep other sites out.

The service (``retrieval.service.server.create_app``) and the user's local privacy client
(``webui.client.create_client_app``) both call :func:`secure_app`. It imports neither app, so the
client, which must never import the service, can use it too.

- **Host allowlist** (DNS rebinding; Jupyter Server's ``local_hostnames`` check): a page on
  ``evil.example`` whose name is rebound to 127.0.0.1 reaches a local server with ``Host:
  evil.example``; requests whose Host is not allowed get a 400 before any route runs. A Host that
  is an IP address cannot be rebound (the page would have to come from that very address).
- **Headers** on every answer, pages and JSON alike (OWASP's clickjacking and MIME-sniffing
  advice): a Content-Security-Policy that allows the app's own scripts, styles and images (plus
  ``blob:`` images, the upload previews) and no framing, ``X-Frame-Options: DENY`` for older
  browsers, ``nosniff``, and a same-origin referrer policy.
- **Session cookies** are HttpOnly (Flask's default), and Secure whenever the request came over
  HTTPS (directly, or through a trusted proxy's ``X-Forwarded-Proto``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from flask import Flask, Response, abort, request
from flask.sessions import SecureCookieSessionInterface

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

CSP = "; ".join(
    (
        "default-src 'self'",  # scripts, styles, fetches, fonts: this app's own files only
        "img-src 'self' blob:",  # blob: = the preview of a file chosen for upload
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",  # no other site may frame these pages (clickjacking)
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # "same-origin", not "no-referrer": the latter makes browsers send "Origin: null" on this
    # app's own POSTs, which the client's cross-site check refuses
    "Referrer-Policy": "same-origin",
}

_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>\d{1,5}))?")


def split_host(host: str) -> tuple[str, int | None] | None:
    """``'Example.org:8080'`` -> ``('example.org', 8080)``; ``'[::1]'`` -> ``('[::1]', None)``.

    None for a value that is not a host name or address with an optional port.
    """
    m = _HOST.fullmatch(host.strip().lower().rstrip("."))
    if m is None:
        return None
    return m["name"], int(m["port"]) if m["port"] else None


def is_loopback(host: str) -> bool:
    """True for a listening address that only this machine reaches: localhost, 127.x, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class HostRule:
    """Which Host headers an app answers to.

    ``names``: ``name`` (any port) or ``name:port``; ``"*"`` allows every Host. ``any_ip``: also
    every IP address. ``own_port``: the Host's port must be the one the request arrived on (the
    privacy client, which listens on one loopback port). ``hint``: what the refusal tells the user.
    """

    names: tuple[str, ...]
    any_ip: bool = False
    own_port: bool = False
    hint: str = ""

    def allows(self, host: str, server_port: int | None, default_port: int) -> bool:
        parsed = split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        port = default_port if port is None else port
        if self.own_port and port != server_port:
            return False
        if "*" in self.names or (self.any_ip and _is_ip(name)):
            return True
        for entry in self.names:
            allowed = split_host(entry)
            if allowed is not None and allowed[0] == name and allowed[1] in (None, port):
                return True
        return False


def server_host_rule(bind_host: str, allowed_hosts: tuple[str, ...]) -> HostRule:
    """The service's rule: the loopback names (no other site's page can carry them) and
    ``server.allowed_hosts``; with none configured and a server listening beyond loopback, also
    any IP address (which cannot be rebound either)."""
    hint = "add the name to server.allowed_hosts in the server's config.toml"
    names = LOOPBACK_NAMES + tuple(h for h in allowed_hosts if h not in LOOPBACK_NAMES)
    return HostRule(names, any_ip=not allowed_hosts and not is_loopback(bind_host), hint=hint)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag on whenever the request is HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def secure_app(app: Flask, hosts: HostRule) -> None:
    """Refuse requests for other Hosts, and put the security headers on every answer of ``app``."""
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = _SessionInterface()

    @app.before_request
    def _check_host() -> None:
        host = request.headers.get("Host")
        if host is None:  # HTTP/1.0 without a Host header: not a browser, so no rebinding
            return
        port = request.environ.get("SERVER_PORT", "")
        server_port = int(port) if port.isdigit() else None
        if not hosts.allows(host, server_port, 443 if request.scheme == "https" else 80):
            abort(400, f"this server does not answer to the host name {host[:100]!r}: {hosts.hint}")

    @app.after_request
    def _headers(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers.setdefault(name, value)
        return resp
