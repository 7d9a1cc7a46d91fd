"""The user's privacy client: a small local app that protects images here and sends only those.

``create_client_app(server_url, cfg)`` is run on the user's own machine (``hashveil client``).
It downloads the server's model once (sha256-checked, ``privacy.remote.RemoteService.model``), protects
an image in a background job, shows original / protected / amplified perturbation and the
convergence curve, and on request sends the protected image, and nothing else, to the server.
The original and a carrier mode's private image stay in this process: the only call that
reaches the server's search is :func:`send`, and it sends ``job.pngs["protected"]`` (with decoys,
``job.uploads``: the K protected carriers, the real query's among them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import requests
import torch
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from privacy.decoys import MAX_DECOYS, decoy_photos, fetch_thumbnails, send_in_order
from privacy.encode import FORMATS, Encoding
from privacy.presets import MODES, STRENGTHS, check_mode
from privacy.remote import RemoteService
from retrieval.core.config import Config
from retrieval.core.imaging import THUMB_MAX, THUMB_MIN, decode_image, to_tensor
from retrieval.core.params import parse_int
from retrieval.websecurity import LOOPBACK_NAMES, HostRule, secure_app
from webui.assets import register_assets
from webui.client_state import CONFIGURED, ClientState
from webui.exposure import measured_ladder
from webui.jobs import Busy, Job
from webui.launch import install_token

client_pages = Blueprint("client", __name__)

IMAGE_KINDS = ("original", "protected", "perturbation", "private")
RESULT_THUMB = 96
DECOY_THUMBS = 24  # with decoys: results shown, whose thumbnails are fetched for all K answers at once


def create_client_app(server_url: str, cfg: Config) -> Flask:
    """The local privacy client for the search server at ``server_url`` (http, or https checked
    against ``cfg.client.ca_bundle``); it answers only loopback names on its own port, and only
    requests with this launch's token (:func:`webui.launch.launch_url` is the URL to print)."""
    app = Flask(__name__, static_folder=None, template_folder=None)  # webui_assets serves both
    app.config["MAX_CONTENT_LENGTH"] = int(2 * cfg.server.max_upload_mb * 2**20) + 65536  # image + private
    hint = "open the URL that `hashveil client` printed (http://127.0.0.1:PORT/?token=...)"
    secure_app(app, HostRule(LOOPBACK_NAMES, own_port=True, hint=hint))
    install_token(app)
    server = RemoteService(server_url, verify=cfg.client.verify())
    app.extensions["hashveil_client"] = ClientState(server, cfg)
    register_assets(app)
    app.register_blueprint(client_pages)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _state() -> ClientState:
    return current_app.extensions["hashveil_client"]


def _http_error(e: HTTPException) -> Any:
    """JSON errors for everything but the page, so the page's script can show the message."""
    if request.path == "/":
        return e
    message = e.description
    if e.code == 413:
        message = f"the images exceed this client's upload limit of {current_app.config['MAX_CONTENT_LENGTH'] // 2**20} MB"
    return jsonify(error=message), e.code or 500


@client_pages.errorhandler(ValueError)
@client_pages.errorhandler(TypeError)
def _bad_input(e: Exception) -> tuple[Response, int]:
    return jsonify(error=str(e)), 400


@client_pages.errorhandler(requests.RequestException)
def _unreachable(e: requests.RequestException) -> tuple[Response, int]:
    return jsonify(error=f"cannot reach the search server at {_state().server.url}: {e}"), 502


@client_pages.before_request
def _same_origin_posts() -> None:
    """Refuse POSTs from other sites' pages: this app runs on the user's machine."""
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin and urlparse(origin).netloc != request.host:
        abort(403, "cross-site requests are refused")


@client_pages.get("/")
def page() -> Any:
    st = _state()
    try:
        counts, error = st.label_counts(), ""
    except (ValueError, requests.RequestException) as e:
        counts, error = {}, f"Cannot reach the search server at {st.server.url}: {e}"
    p = st.cfg.privacy
    strengths = {CONFIGURED: {"eps": p.eps, "steps": p.steps, "robust": p.robust}, **STRENGTHS}
    return render_template(
        "webui/client.html",
        server_url=st.server.url,
        labels=counts,
        modes=MODES,
        strengths=strengths,
        configured=CONFIGURED,
        formats=FORMATS,
        radius=st.cfg.server.radius,
        n_anchor=st.cfg.privacy.n_anchor,
        decoy_dir=st.cfg.privacy.decoy_dir,
        ladder=measured_ladder(),
        error=error,
    )


def _upload(name: str, what: str) -> tuple[torch.Tensor, int]:
    """A multipart image field decoded to (3, H, W) in [0, 1], and its size in bytes; ValueError
    says which field is bad."""
    f = request.files.get(name)
    if f is None or not f.filename:
        raise ValueError(f"choose {what}")
    data = f.read()
    try:
        return to_tensor(decode_image(data)), len(data)
    except ValueError as e:
        raise ValueError(f"{what} ({f.filename}): {e}") from None


@client_pages.post("/protect")
def protect() -> tuple[Response, int]:
    """Start protecting the uploaded image; 202 with the job's status URL, 409 while one runs."""
    st = _state()
    mode = request.form.get("mode", "semantic")
    check_mode(mode)
    strength = request.form.get("strength", CONFIGURED)
    if strength != CONFIGURED and strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {[CONFIGURED, *STRENGTHS]}; got {strength!r}")
    target_label = request.form.get("target_label", "") if mode == "semantic" else ""
    if target_label and target_label not in st.label_counts():
        raise ValueError(f"unknown target label {target_label!r}; known: {sorted(st.label_counts())}")
    encoding = Encoding(
        request.form.get("format", "png"), parse_int("quality", request.form.get("quality"), 90, 1, 100)
    )
    decoys = parse_int("decoys", request.form.get("decoys"), 0, 0, MAX_DECOYS)
    if decoys:  # the image is the private one: every upload is a carrier cut from the decoy photos
        mode, target_label = "carrier", ""
        decoy_photos(st.cfg.privacy.decoy_dir)  # a missing or empty folder is a 400 now, not a failed job
    original, size = _upload("image", "the image to search for" if decoys else "the image to protect")
    private = _upload("private", "the private image")[0] if mode == "carrier" and not decoys else None
    job = Job(
        mode=mode,
        strength=strength,
        target_label=target_label or None,
        original=original,
        private=private,
        encoding=encoding,
        original_bytes=size,
        decoys=decoys,
    )
    try:
        st.runner.submit(job)
    except Busy as e:
        abort(409, str(e))
    return jsonify(job=job.id, status_url=url_for("client.status", job_id=job.id)), 202


def _job(job_id: str) -> Job:
    try:
        return _state().runner.get(job_id)
    except KeyError:
        abort(404, f"no protection job {job_id!r} (this client keeps its latest few)")


@client_pages.get("/jobs/<job_id>")
def status(job_id: str) -> Response:
    job = _job(job_id)
    body: dict[str, Any] = {
        "id": job.id,
        "state": job.state,
        "phase": job.phase,
        "mode": job.mode,
        "strength": job.strength,
        "requested_target": job.target_label,
        "elapsed_s": round(job.elapsed_s, 2),
        "error": job.error,
        "search": job.search,
        "trace": list(job.trace),
    }
    if job.state == "done":
        body["result"] = job.facts
        body["images"] = {kind: url_for("client.image", job_id=job.id, kind=kind) for kind in job.pngs}
        body["send_url"] = url_for("client.send", job_id=job.id)
    return jsonify(body)


@client_pages.get("/jobs/<job_id>/<kind>.png")
def image(job_id: str, kind: str) -> Response:
    """The job's images, to this browser only (this app listens on the user's machine)."""
    job = _job(job_id)
    if kind not in IMAGE_KINDS or kind not in job.pngs:
        abort(404, f"job {job_id} has no {kind!r} image")
    resp = Response(job.pngs[kind], mimetype=job.encoding.mimetype if kind == "protected" else "image/png")
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@client_pages.post("/jobs/<job_id>/send")
def send(job_id: str) -> Response:
    """Send the protected image, and only it (with decoys: the K carriers in their drawn order,
    with random gaps), to the server's search; return what came back for the real query."""
    st, job = _state(), _job(job_id)
    if job.state != "done":
        abort(409, f"job {job_id} is {job.state}: only a finished protection can be sent")
    radius = parse_int("radius", request.form.get("radius"), None, 0, 1024)
    k = parse_int("k", request.form.get("k"), None, 1, 10**6)
    enc = job.encoding
    search = lambda data: st.server.search(  # noqa: E731
        data, filename=f"protected{enc.suffix}", mimetype=enc.mimetype, radius=radius, k=k
    )
    thumb_url = lambda i: url_for("client.thumb", image_id=i, size=RESULT_THUMB)  # noqa: E731
    if not job.uploads:
        return jsonify(
            job.record_search(search(job.pngs["protected"]), len(job.pngs["protected"]), thumb_url, 10**6)
        )
    answers = send_in_order(job.uploads, search, st.cfg.privacy.decoy_delay_s, st.rng)
    st.thumbs = fetch_thumbnails(answers, DECOY_THUMBS, lambda i: st.server.image(i, RESULT_THUMB), st.rng)
    return jsonify(job.record_search(answers[job.real], len(job.uploads[job.real]), thumb_url, DECOY_THUMBS))


@client_pages.get("/thumbs/<int:image_id>")
def thumb(image_id: int) -> Response:
    """A result's thumbnail, fetched from the server by id (so the page needs no other origin)."""
    size = parse_int("size", request.args.get("size"), RESULT_THUMB, THUMB_MIN, THUMB_MAX)
    try:  # after decoys, every answer's thumbnails are here: asking now would tell which answer is viewed
        data = _state().thumbs.get(image_id) if size == RESULT_THUMB else None
        data = data or _state().server.image(image_id, size)
    except ValueError as e:  # the server's 4xx/5xx, with its message
        abort(404, str(e))
    resp = Response(data, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp
