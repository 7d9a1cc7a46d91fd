"""What every route of the service app shares, the API's and the pages': the app's parts, request
parameters, and the one admin check.

``create_app`` attaches the config, the searcher, the query log and the upload encoder to the Flask
app; routes reach them through :func:`current_config`, :func:`current_searcher`,
:func:`current_query_log` and :func:`current_encoder`, never by string keys. The searcher is a
:class:`LiveSearcher`: a route that calls :func:`current_searcher` once gets one consistent set
(model, index, store) for its whole request, even while a new build is swapped in.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Flask, abort, current_app, request, session

from retrieval.core.config import Config
from retrieval.core.params import parse_int
from retrieval.service.batcher import ImageEncoder
from retrieval.service.querylog import QueryLog
from retrieval.service.reload import LiveSearcher
from retrieval.service.search import Searcher

_PARTS = "hashveil"


def attach(
    app: Flask, cfg: Config, searcher: LiveSearcher, query_log: QueryLog, encoder: ImageEncoder
) -> None:
    app.extensions[_PARTS] = {"config": cfg, "searcher": searcher, "query_log": query_log, "encoder": encoder}


def current_config() -> Config:
    return current_app.extensions[_PARTS]["config"]


def current_searcher() -> Searcher:
    """The set to answer this request with (call it once per request)."""
    return current_app.extensions[_PARTS]["searcher"].current()


def current_query_log() -> QueryLog:
    return current_app.extensions[_PARTS]["query_log"]


def current_encoder() -> ImageEncoder:
    """The upload hasher: batches concurrent uploads through the searcher's model."""
    return current_app.extensions[_PARTS]["encoder"]


def int_param(
    name: str, default: int | None, lo: int, hi: int, body: dict[str, Any] | None = None
) -> int | None:
    """An int from the JSON body, else a form field, else a query arg; ``default`` when absent.

    Raises ValueError (a 400 on every blueprint of the app) when it is not an int in [lo, hi].
    """
    raw = body[name] if body and name in body else request.form.get(name, request.args.get(name))
    return parse_int(name, raw, default, lo, hi)


# admin: the query log and the attacker's view


def admin_enabled() -> bool:
    return bool(current_config().server.admin_secret())


def _session_mark(token: str) -> str:
    """What the session keeps for a logged-in admin: the token keyed with the app's secret."""
    key = current_app.secret_key
    key = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def is_admin(*, allow_session: bool = False) -> bool:
    """True for a request with the right bearer token (or, where allowed, a logged-in session)."""
    token = current_config().server.admin_secret()
    if not token:
        return False
    given = request.headers.get("Authorization", "")
    if given.startswith("Bearer "):
        return hmac.compare_digest(given[7:].encode(), token.encode())
    mark = session.get("admin") if allow_session and current_app.secret_key else None
    return isinstance(mark, str) and hmac.compare_digest(mark.encode(), _session_mark(token).encode())


def require_admin(*, allow_session: bool = False) -> None:
    """403 when the admin routes are off, 401 without credentials, 403 with a wrong token."""
    if not admin_enabled():
        abort(403, "the admin API is disabled: set server.admin_token or HASHVEIL_ADMIN_TOKEN")
    if is_admin(allow_session=allow_session):
        return
    if request.headers.get("Authorization", "").startswith("Bearer "):
        abort(403, "wrong admin token")
    abort(
        401,
        "admin routes need 'Authorization: Bearer <token>'"
        + (" or a login at /admin/login" if allow_session else ""),
    )


def log_in_admin(given: str) -> bool:
    """Start an admin session when ``given`` is the admin token; False (nothing changed) otherwise."""
    token = current_config().server.admin_secret()
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        return False
    session.clear()
    session["admin"] = _session_mark(token)
    return True
