"""The service's pages, on the same Flask app as the JSON API: search, and the attacker's view.

The search page is plain HTML + JavaScript that calls ``POST /api/search`` like any client; the
attacker's view (admin only) renders the query log that the API writes, to show what a service
learns from its users' queries. Admin access: the token of ``server.admin_token`` or
``HASHVEIL_ADMIN_TOKEN``, given once in a login form (the session then holds a keyed digest of
it, not the token) or as ``Authorization: Bearer <token>`` on each request.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, session, url_for

from audit.leakage import CONFIDENT_MIN_ITEMS, CONFIDENT_SHARE, describe, hourly
from retrieval.core.imaging import THUMB_MAX, THUMB_MIN
from retrieval.service.http import (
    admin_enabled,
    current_config,
    current_searcher,
    int_param,
    is_admin,
    log_in_admin,
    require_admin,
)
from webui.assets import register_assets
from webui.imagery import thumbnail_png

pages = Blueprint("pages", __name__)

RESULT_THUMB = 96  # px, thumbnails of search results
LOG_THUMB = 64  # px, thumbnails of logged uploads
SUMMARY_WINDOW = 500  # the leakage summary covers this many of the latest queries
MAX_PAGE = 500


def mount_service_pages(app: Flask) -> None:
    """Add the search page (/) and the attacker's view (/admin) to the API's app."""
    if not app.secret_key:
        app.secret_key = os.urandom(32)  # sessions end when the server restarts
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"  # the admin's session: never sent cross-site
    register_assets(app)
    app.register_blueprint(pages)


@pages.errorhandler(ValueError)
def _bad_param(e: ValueError) -> tuple[str, int]:
    return str(e), 400


@pages.get("/")
def search_page() -> str:
    s, cfg = current_searcher(), current_config()
    return render_template(
        "webui/search.html",
        radius=min(cfg.server.radius, s.hash_bits),
        hash_bits=s.hash_bits,
        max_k=cfg.server.max_k,
        page_size=min(cfg.server.page_size, cfg.server.max_k),
        items=s.index.ntotal,
        thumb=RESULT_THUMB,
        max_upload_mb=cfg.server.max_upload_mb,
    )


# admin


def _login_page(status: int, error: str = "") -> tuple[str, int]:
    return render_template("webui/login.html", error=error, enabled=admin_enabled()), status


@pages.route("/admin/login", methods=["GET", "POST"])
def admin_login() -> Any:
    if not admin_enabled():
        return _login_page(
            403,
            "The attacker's view is disabled: set server.admin_token or HASHVEIL_ADMIN_TOKEN on the server.",
        )
    if request.method == "GET":
        return _login_page(200)
    if not log_in_admin(request.form.get("token", "")):
        return _login_page(403, "Wrong admin token.")
    return redirect(url_for("pages.admin"), code=303)


@pages.post("/admin/logout")
def admin_logout() -> Response:
    session.pop("admin", None)
    return redirect(url_for("pages.search_page"), code=303)


@pages.get("/admin")
def admin() -> Any:
    """The query log as an attacker holding it reads it, with a leakage summary per hour."""
    if not admin_enabled():
        return _login_page(
            403,
            "The attacker's view is disabled: set server.admin_token or HASHVEIL_ADMIN_TOKEN on the server.",
        )
    if not is_admin(allow_session=True):
        return _login_page(401, "Log in with the admin token to see the query log.")
    limit = int_param("limit", 50, 1, MAX_PAGE)
    offset = int_param("offset", 0, 0, 2**31 - 1)
    store = current_searcher().store
    window = store.query_log(limit=SUMMARY_WINDOW)
    rows = (
        window[offset : offset + limit]
        if offset + limit <= SUMMARY_WINDOW
        else store.query_log(limit, offset)
    )
    images = store.images({i for r in (*window, *rows) for i in r.result_ids})
    described = {r.id: describe(r, images) for r in window}
    queries = [described.get(r.id) or describe(r, images) for r in rows]
    return render_template(
        "webui/admin.html",
        queries=queries,
        summary=hourly(list(described.values())),
        window=len(window),
        summary_limit=SUMMARY_WINDOW,
        limit=limit,
        offset=offset,
        has_more=len(rows) == limit,
        thumb=LOG_THUMB,
        result_thumb=48,
        confident_min=CONFIDENT_MIN_ITEMS,
        confident_share=CONFIDENT_SHARE,
        bearer=request.headers.get("Authorization", "").startswith("Bearer "),
    )


@pages.get("/admin/queries/<int:query_id>/upload.png")
def admin_upload_thumbnail(query_id: int) -> Response:
    """A logged upload, decoded and re-encoded as a PNG thumbnail (admin only)."""
    require_admin(allow_session=True)
    size = int_param("size", LOG_THUMB, THUMB_MIN, THUMB_MAX)
    try:
        upload = current_searcher().store.logged_upload(query_id)
    except KeyError as e:
        abort(404, e.args[0])
    try:
        png = thumbnail_png(upload, size)
    except ValueError as e:
        abort(404, f"the upload of query {query_id} cannot be decoded: {e}")
    resp = Response(png, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
