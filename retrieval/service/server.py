"""The retrieval service's JSON API: ``create_app(cfg)`` and the ``api`` blueprint under /api.

Bad input is the client's fault and gets a JSON 4xx, never a 500: ValueError and TypeError
raised while handling a request (by the parsing here or by the library) become 400 with the
message. Images are served by database id only. Every search is written to the query log,
uploads exactly as received, because that is what a real service can do with them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, abort, jsonify, request, send_file, url_for
from werkzeug.exceptions import HTTPException

from retrieval.core.codes import parse, to_hex
from retrieval.core.config import MAX_ANCHOR_POOL, Config, PrivacyConfig
from retrieval.core.imaging import (
    THUMB_MAX,
    THUMB_MIN,
    decode_image,
    load_image,
    thumbnail,
    to_png,
    to_tensor,
)
from retrieval.core.model import WEIGHTS_FILE
from retrieval.service.anchors import anchor_pool_body
from retrieval.service.batcher import ImageEncoder
from retrieval.service.http import (
    attach,
    current_config,
    current_encoder,
    current_query_log,
    current_searcher,
    int_param,
    require_admin,
)
from retrieval.service.labels import LabelTable
from retrieval.service.querylog import QueryLog
from retrieval.service.reload import LiveSearcher
from retrieval.service.search import Result, Searcher, open_searcher
from retrieval.websecurity import secure_app, server_host_rule

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_POOL = PrivacyConfig().anchor_pool
MAX_ID = 2**63 - 1  # ids are SQL BIGINTs; a larger id in a URL is a 404, not an overflow
MAX_OFFSET = 2**31 - 1


def create_app(cfg: Config, searcher: Searcher | None = None) -> Flask:
    """Build the Flask app around one searcher (opened from cfg's work_dir when not given)."""
    searcher = open_searcher(cfg) if searcher is None else searcher
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(cfg.server.max_upload_mb * 1024 * 1024)
    searcher.store.upgrade()
    qlog = QueryLog(searcher.store, cfg.server.log_retention_days)
    encoder = ImageEncoder(cfg.server.batch_max, cfg.server.batch_wait_ms, searcher.model)
    attach(app, cfg, LiveSearcher(cfg, searcher), qlog, encoder)  # switches to new builds as they complete
    secure_app(app, server_host_rule(cfg.server.host, cfg.server.allowed_hosts))
    qlog.prune()  # rows past their retention go at start, then at most hourly while serving
    app.register_blueprint(api)
    app.register_error_handler(HTTPException, _http_error)
    return app


def wsgi_body_limit(cfg: Config) -> int:
    """Bytes the WSGI server reads before it refuses a request by itself.

    Bodies over ``server.max_upload_mb`` get this app's JSON 413, JSON bodies as uploads, but only if
    the WSGI server hands them over: waitress answers a body over its own limit in plain text,
    before reading it, and a client still sending sees a connection reset. So its limit sits far
    above the app's: 4x, and at least 64 MB more.
    """
    limit = int(cfg.server.max_upload_mb * 2**20)
    return max(4 * limit, limit + 64 * 2**20)


# errors


def _http_error(e: HTTPException) -> Any:
    """JSON bodies for HTTP errors under /api (413, 404, 405, ...); other paths keep Flask's."""
    if not request.path.startswith(api.url_prefix or "/api"):
        return e
    message = e.description
    if e.code == 413:
        message = (
            f"request body exceeds the server's {current_config().server.max_upload_mb:g} MB upload limit"
        )
    resp = jsonify(error=message)
    resp.status_code = e.code or 500
    valid = getattr(e, "valid_methods", None)
    if valid:
        resp.headers["Allow"] = ", ".join(valid)
    return resp


@api.errorhandler(ValueError)
@api.errorhandler(TypeError)
def _bad_input(e: Exception) -> tuple[Response, int]:
    return jsonify(error=str(e)), 400


# request parsing


def _json_body() -> dict[str, Any]:
    """The JSON object of a JSON request, {} for other requests; 400 if it is not an object."""
    if not request.is_json:
        return {}
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # silent covers malformed JSON, not JSON nested too deep to decode
        body = None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def _answer(
    labels: LabelTable, code: np.ndarray, radius: int, k: int | None, result: Result, offset: int, limit: int
) -> Response:
    """The whole result's size and label votes, and one page of its hits (labels of ``labels``)."""
    ids, dist = result.ids[offset : offset + limit], result.distances[offset : offset + limit]
    image_url = url_for("api.image", image_id=0)[:-1]  # "/api/images/", under any script root
    hits = [
        {"id": i, "distance": d, "labels": names, "image_url": f"{image_url}{i}"}
        for i, d, names in zip(ids.tolist(), dist.tolist(), labels.labels(ids))
    ]
    return jsonify(
        code=to_hex(code),
        radius=radius,
        k=k,
        count=len(result),
        within_radius=result.within_radius,
        label_votes=labels.votes(result.ids),
        offset=offset,
        limit=limit,
        results=hits,
    )


# views


@api.post("/search")
def search() -> Response:
    """Search by an uploaded image (multipart field ``image``) or by a code (JSON ``code``).

    The answer carries the whole result's size and label votes and one page of it (``offset``,
    ``limit``); the query log keeps the whole result. Later pages: send the answer's code.
    """
    s, cfg = current_searcher(), current_config()
    body = _json_body()
    radius = int_param("radius", cfg.server.radius, 0, s.hash_bits, body)
    k = int_param("k", None, 1, cfg.server.max_k, body)
    limit = int_param("limit", min(cfg.server.page_size, cfg.server.max_k), 0, cfg.server.max_k, body)
    offset = int_param("offset", 0, 0, MAX_OFFSET, body)
    upload = request.files.get("image")
    if upload is not None:
        data: bytes | None = upload.read()
        code = current_encoder()(s, s.prepare(to_tensor(decode_image(data))[None]))
        upload_type = "image"
    else:
        text = body.get("code", request.form.get("code"))
        if text is None:
            raise ValueError('send an image as multipart field \'image\', or JSON {"code": "<hex>"}')
        data, upload_type = None, "code"
        code = parse(text, s.hash_bits)[0]
    (result,) = s.results(code[None], radius, k)
    current_query_log().record(
        code=code.tobytes(),
        radius=radius,
        k=k,
        result_ids=result.ids,
        upload=data,
        upload_type=upload_type,
        remote_addr=request.remote_addr,
    )
    return _answer(s.labels, code, radius, k, result, offset, limit)


@api.get(f"/images/<int(max={MAX_ID}):image_id>")
def image(image_id: int) -> Response:
    """A database image by id, or a PNG thumbnail of at most ``size`` pixels a side."""
    size = int_param("size", None, THUMB_MIN, THUMB_MAX)
    try:
        path = current_searcher().image_path(image_id)
    except KeyError:
        abort(404, f"no image with id {image_id}")
    if not path.is_file():
        log.warning("image %d is in the store but its file %s is missing", image_id, path)
        abort(404, f"the file of image {image_id} is missing")
    if size is None:
        return send_file(path, max_age=3600)
    try:
        img = load_image(path)
    except ValueError as e:  # a broken stored file is the server's fault, not the client's
        raise RuntimeError(str(e)) from None
    return Response(to_png(thumbnail(img, size)), mimetype="image/png")


@api.get("/model")
def model_card() -> Response:
    card = current_searcher().card
    return jsonify({**asdict(card), "weights_url": url_for("api.model_weights"), "sha256": card.sha256})


@api.get("/model/weights")
def model_weights() -> Response:
    """The safetensors weights; refuses to serve a file that is not the loaded model's."""
    card = current_searcher().card
    path = current_config().work_dir / "model" / WEIGHTS_FILE
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        log.error("weights file %s has sha256 %s but the served model has %s", path, digest, card.sha256)
        abort(503, "the weights on disk changed since the server loaded its model; restart the server")
    resp = Response(data, mimetype="application/octet-stream")
    resp.headers["X-SHA256"] = digest
    resp.headers["Content-Disposition"] = f"attachment; filename={WEIGHTS_FILE}"
    return resp


@api.get("/anchors/pool")
def anchor_pool() -> Response:
    """Codes (never images) of up to ``per_label`` items of every label, the label counts and the
    default radius: what the privacy client draws its targets from, fetched once and cached.

    The request is the same for every client, so it tells the server nothing about a target.
    """
    per_label = int_param("per_label", DEFAULT_POOL, 1, MAX_ANCHOR_POOL)
    return jsonify(anchor_pool_body(current_searcher().store, per_label, current_config().server.radius))


@api.get("/labels")
def labels() -> Response:
    counts = current_searcher().store.label_counts()
    return jsonify(labels=[{"name": name, "count": n} for name, n in counts.items()])


@api.get("/health")
def health() -> Response:
    s = current_searcher()
    return jsonify(status="ok", items=s.index.ntotal, hash_bits=s.hash_bits)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API, kept beside this module as openapi.json."""
    return Response(_openapi_document(), mimetype="application/json")


@cache
def _openapi_document() -> bytes:
    return resources.files("retrieval.service").joinpath("openapi.json").read_bytes()


@api.get("/stats")
def stats() -> Response:
    s = current_searcher()
    return jsonify(
        items=s.index.ntotal,
        hash_bits=s.hash_bits,
        index_kind=s.index.kind,
        backbone=s.card.backbone,
        dataset=s.card.dataset,
        metrics=s.card.metrics,
    )


# admin: the query log, i.e. what an attacker holding the server's logs has


@api.get("/admin/queries")
def admin_queries() -> Response:
    require_admin()
    limit = int_param("limit", 100, 1, 10_000)
    offset = int_param("offset", 0, 0, 2**31 - 1)
    rows = current_searcher().store.query_log(limit=limit, offset=offset)
    return jsonify(
        {
            "log_retention_days": current_query_log().retention_days,
            "queries": [
                {
                    "id": r.id,
                    "created_at": r.created_at.isoformat(),
                    "code": r.code.hex(),
                    "radius": r.radius,
                    "k": r.k,
                    "result_ids": list(r.result_ids),
                    "upload_type": r.upload_type,
                    "has_upload": r.upload is not None,
                }
                for r in rows
            ],
        }
    )


@api.get(f"/admin/queries/<int(max={MAX_ID}):query_id>/upload")
def admin_query_upload(query_id: int) -> Response:
    require_admin()
    try:
        upload = current_searcher().store.logged_upload(query_id)
    except KeyError as e:
        abort(404, e.args[0])
    return Response(upload, mimetype="application/octet-stream")
