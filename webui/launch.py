"""The privacy client's per-launch token: Jupyter Server's answer to other users of the same machine.

Anyone on this computer (and any program) can reach 127.0.0.1; only the user who started
``hashveil client`` saw the URL it printed, which carries a fresh random token. A request with
``?token=`` sets an HttpOnly, SameSite=Strict cookie (a GET is then redirected to the same URL
without the token, so the token leaves the address bar and the history); every other request
needs that cookie and gets a 403 without it: a page for a browser, JSON for a script.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
)

_KEY = "hashveil_client_token"


def install_token(app: Flask) -> None:
    """Give ``app`` a new random token and refuse every request that does not carry it."""
    app.extensions[_KEY] = secrets.token_urlsafe(32)
    app.before_request(_require_token)


def launch_url(app: Flask, port: int, host: str = "127.0.0.1") -> str:
    """The URL to print (and to open) at launch: the app's address with this launch's token."""
    return f"http://{host}:{port}/?token={app.extensions[_KEY]}"


def _cookie_name() -> str:
    """One cookie per port: cookies ignore ports, and two clients may run side by side."""
    return f"hashveil-client-{request.environ.get('SERVER_PORT', '')}"


def _matches(given: str | None) -> bool:
    token = current_app.extensions[_KEY]
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _set_cookie(resp: Response) -> Response:
    resp.set_cookie(
        _cookie_name(),
        current_app.extensions[_KEY],
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _require_token() -> Response | tuple[Response | str, int] | None:
    given = request.args.get("token")
    if given is None:
        if _matches(request.cookies.get(_cookie_name())):
            return None
        return _refuse("This browser has not shown this client's token yet.")
    if not _matches(given):
        return _refuse("The token in this link is not this launch's: the client was restarted since.")
    if request.method not in ("GET", "HEAD"):
        after_this_request(_set_cookie)
        return None
    args = request.args.copy()
    args.poplist("token")
    query = urlencode(list(args.items(multi=True)))
    return _set_cookie(redirect(request.path + (f"?{query}" if query else ""), code=303))


def _refuse(reason: str) -> tuple[Response | str, int]:
    """403: a page that says where the right URL is, or the same words as JSON for scripts."""
    advice = (
        "open the URL that `hashveil client` printed when it started "
        "(http://127.0.0.1:PORT/?token=...); the token is new at every launch"
    )
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return render_template("webui/token_required.html", reason=reason), 403
    return jsonify(error=f"{reason} To use this client, {advice}."), 403
