"""The user's privacy client: a small local app that protects images here and sends only those.

``create_client_app(server_url, cfg)`` is run on the user's own machine (``hashveil client``).
It downloads the server's model once (sha256-checked, ``privacy.remote.RemoteService.model``), protects
an image in a background job, shows original / protected / amplified perturbation and the
convergence curve, and on request sends the protected image, and nothing else, to the server.
The original and a carrier mode's private image stay in this process: the only call that
reaches the server's search is :func:`send`, and it sends ``job.pngs["protected"]``.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import torch
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from privacy.client import Protector
from privacy.encode import FORMATS, Encoding, encode_verified
from privacy.pool import AnchorPool
from privacy.presets import MODES, STRENGTHS, apply_strength, check_mode
from privacy.remote import RemoteService
from privacy.targets import rng_from
from retrieval.core.codes import to_hex
from retrieval.core.config import Config
from retrieval.core.imaging import THUMB_MAX, THUMB_MIN, decode_image, to_png, to_tensor
from retrieval.core.model import HashNet
from retrieval.core.params import parse_int
from retrieval.core.votes import majority_of
from retrieval.websecurity import LOOPBACK_NAMES, HostRule, secure_app
from webui.assets import register_assets
from webui.exposure import measured_ladder, server_views
from webui.imagery import perturbation_png
from webui.jobs import Busy, Job, JobRunner
from webui.launch import install_token

client_pages = Blueprint("client", __name__)

CONFIGURED = "config"  # the strength that keeps cfg.privacy as it is
IMAGE_KINDS = ("original", "protected", "perturbation", "private")
RESULT_THUMB = 96


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


class ClientState:
    """The server connection, the downloaded model and anchor pool, and the job runner of one client app.

    One generator serves every job: fresh OS entropy, or ``privacy.seed`` when the user set one
    (then the sequence of draws repeats from launch to launch).
    """

    def __init__(self, server: RemoteService, cfg: Config) -> None:
        self.server = server
        self.cfg = cfg
        self.runner = JobRunner(self._protect)
        self.rng = rng_from(cfg.privacy.seed)
        self._lock = threading.Lock()
        self._model: HashNet | None = None
        self._sha256 = ""
        self._counts: dict[str, int] | None = None
        self._pool: AnchorPool | None = None

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.work_dir) / "client-cache"

    def model(self) -> HashNet:
        with self._lock:
            if self._model is None:
                self._model, card = self.server.model(
                    self.cache_dir, self.cfg.model.device, pinned=self.cfg.privacy.model_sha256
                )
                self._sha256 = card.sha256
            return self._model

    def label_counts(self) -> dict[str, int]:
        with self._lock:
            if self._counts is None:
                self._counts = self.server.labels()
            return self._counts

    def pool(self) -> AnchorPool:
        """Codes (never images) of every label, fetched once and cached with the model."""
        self.model()
        with self._lock:
            if self._pool is None:
                self._pool = self.server.anchor_pool(
                    self.cfg.privacy.anchor_pool, self.cache_dir, self._sha256
                )
            return self._pool

    def _protect(self, job: Job) -> None:
        """The job's work, in the runner's thread: everything here stays on this machine."""
        job.phase = "fetching the server's model and anchor pool (once)"
        model, pool = self.model(), self.pool()
        privacy = apply_strength(self.cfg.privacy, None if job.strength == CONFIGURED else job.strength)
        protector = Protector(model, privacy, pool, self.rng)
        job.phase = "protecting on this machine"
        p = protector.protect(
            job.original,
            job.mode,
            target_label=job.target_label,
            private=job.private,
            on_step=lambda k, d: job.trace.append(d),
        )
        job.phase = "encoding and checking the file to send"
        sent = encode_verified(model, p.image, p.target_code, p.distance, job.encoding)
        original_code = model.encode(job.original.unsqueeze(0))[0]
        perturbation, gain = perturbation_png(job.original, p.image)
        pngs = {"original": to_png(job.original), "protected": sent.data, "perturbation": perturbation}
        if job.private is not None:
            pngs["private"] = to_png(job.private)
        job.facts = {
            **p.summary(),
            "reached": p.distance == 0,
            "gain": round(gain, 1),
            "eps_255": round(privacy.eps * 255, 2),
            "steps": privacy.steps,
            "method": privacy.method,
            "trace": [int(d) for d in p.trace[: p.iterations + 1]],
            "original_code": to_hex(original_code),
            "original_likely_label": protector.likely_label(original_code),
            "protected_likely_label": protector.likely_label(p.code),
            # what a server could read from the file as sent, and after re-encoding it
            "server_views": server_views(model, pool, job.original, to_tensor(decode_image(sent.data))),
            "randomness": "seed" if privacy.seed >= 0 else "os-entropy",
            **sent.summary(),
            "original_bytes": job.original_bytes,
            "sent_bytes": len(pngs["protected"]),
            "sent_sha256": hashlib.sha256(pngs["protected"]).hexdigest(),
        }
        job.pngs, job.result = pngs, p


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
    strengths = {CONFIGURED: {"eps": st.cfg.privacy.eps, "steps": st.cfg.privacy.steps}, **STRENGTHS}
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
    original, size = _upload("image", "the image to protect")
    private = _upload("private", "the private image")[0] if mode == "carrier" else None
    job = Job(
        mode=mode,
        strength=strength,
        target_label=target_label or None,
        original=original,
        private=private,
        encoding=encoding,
        original_bytes=size,
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
    """Send the protected image, and only it, to the server's search; return what came back."""
    job = _job(job_id)
    if job.state != "done":
        abort(409, f"job {job_id} is {job.state}: only a finished protection can be sent")
    radius = parse_int("radius", request.form.get("radius"), None, 0, 1024)
    k = parse_int("k", request.form.get("k"), None, 1, 10**6)
    answer = _state().server.search(
        job.pngs["protected"],
        filename=f"protected{job.encoding.suffix}",
        mimetype=job.encoding.mimetype,
        radius=radius,
        k=k,
    )
    hits = answer.get("results", [])
    votes = answer.get("label_votes", {})  # over the whole result, not only the page shown
    job.search = {
        "code": answer.get("code"),
        "radius": answer.get("radius"),
        "k": answer.get("k"),
        "count": answer.get("count", len(hits)),
        "inferred_label": majority_of(votes),
        "votes": votes,
        "sent_bytes": len(job.pngs["protected"]),
        "server_code_matches": answer.get("code") == job.facts.get("file_code"),
        "results": [
            {
                "id": h["id"],
                "distance": h["distance"],
                "labels": h["labels"],
                "thumb_url": url_for("client.thumb", image_id=h["id"], size=RESULT_THUMB),
            }
            for h in hits
        ],
    }
    return jsonify(job.search)


@client_pages.get("/thumbs/<int:image_id>")
def thumb(image_id: int) -> Response:
    """A result's thumbnail, fetched from the server by id (so the page needs no other origin)."""
    size = parse_int("size", request.args.get("size"), RESULT_THUMB, THUMB_MIN, THUMB_MAX)
    try:
        data = _state().server.image(image_id, size)
    except ValueError as e:  # the server's 4xx/5xx, with its message
        abort(404, str(e))
    resp = Response(data, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp
