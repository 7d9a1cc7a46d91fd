"""The privacy client app's state: the server connection, the model and anchor pool fetched once,
and the protection job's work, which runs in the job runner's thread and stays on this machine.

One generator serves every job: fresh OS entropy, or ``privacy.seed`` when the user set one.
A job with decoys protects K carriers at once (:mod:`privacy.decoys`) and keeps all K files; the
page shows the real query's carrier as "original" and the user's image as "private".
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from privacy.client import Protector, ensemble_surrogate
from privacy.decoys import decoy_photos, protect_decoys
from privacy.encode import encode_verified
from privacy.pool import AnchorPool
from privacy.presets import apply_strength
from privacy.remote import RemoteService
from privacy.targets import rng_from
from retrieval.core.codes import to_hex
from retrieval.core.config import Config
from retrieval.core.imaging import decode_image, to_png, to_tensor
from retrieval.core.model import HashNet
from webui.exposure import server_views
from webui.imagery import perturbation_png
from webui.jobs import Job, JobRunner

CONFIGURED = "config"  # the strength that keeps cfg.privacy as it is


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
        self.thumbs: dict[int, bytes] = {}  # with decoys: every answer's thumbnails, fetched at once

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
        surrogate = ensemble_surrogate(privacy, self.server, pool, model, self.cache_dir / self._sha256)
        protector = Protector(model, privacy, pool, self.rng, surrogate)
        job.phase = "protecting on this machine"
        if job.decoys:
            p, sent, decoys = self._protect_decoys(job, protector)
        else:
            p = protector.protect(
                job.original,
                job.mode,
                target_label=job.target_label,
                private=job.private,
                on_step=lambda k, d: job.trace.append(d),
            )
            job.phase = "encoding and checking the file to send"
            sent, decoys = encode_verified(model, p.image, p.target_code, p.distance, job.encoding), None
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
            "decoys": decoys,
            **sent.summary(),
            "original_bytes": job.original_bytes,
            "sent_bytes": len(pngs["protected"]),
            "sent_sha256": hashlib.sha256(pngs["protected"]).hexdigest(),
        }
        job.pngs, job.result = pngs, p

    def _protect_decoys(self, job: Job, protector: Protector):
        """K carriers (privacy.decoys) for the private image ``job.original``, which becomes
        ``job.private`` while the real query's carrier becomes ``job.original``."""
        photos = decoy_photos(self.cfg.privacy.decoy_dir)
        q = protect_decoys(protector, job.original, job.decoys, photos, job.encoding)
        job.private, job.original = job.original, q.plan.carriers[q.real]
        job.uploads, job.real = [f.data for f in q.files], q.real
        labels = [str(label) for label in q.plan.decoy_labels]
        return (
            q.protected[q.real],
            q.files[q.real],
            {"k": job.decoys, "labels": labels, "photos": len(photos)},
        )
