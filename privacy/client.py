"""The user's side of hashveil: protect images locally, send only the protected ones.

The client speaks HTTP to the search server, as a real client would, and never imports the
server's code. It fetches the model card and weights once, checks their sha256, and runs the
protection (RNM by default) on the user's machine, so the original never leaves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import requests
import torch

from privacy.attacks import make_attack
from privacy.metrics import linf, psnr
from privacy.targets import anchor_code, carrier_target, pick_target_label, untargeted_target
from retrieval.codes import hamming, to_hex
from retrieval.config import PrivacyConfig
from retrieval.imaging import to_png
from retrieval.model import CARD_FILE, WEIGHTS_FILE, HashNet, ModelCard, load_checkpoint

log = logging.getLogger(__name__)

MODES = ("semantic", "carrier", "untargeted")
# Named strengths: L_inf budget in pixels and the most PGD steps. Early stopping means most
# images use far fewer steps than the cap; the budget bounds the visible change.
STRENGTHS = {
    "low": {"eps": 4 / 255, "steps": 50},
    "mid": {"eps": 8 / 255, "steps": 100},
    "high": {"eps": 16 / 255, "steps": 300},
}


def apply_strength(cfg: PrivacyConfig, strength: str | None) -> PrivacyConfig:
    if strength is None:
        return cfg
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {sorted(STRENGTHS)}; got {strength!r}")
    return replace(cfg, **STRENGTHS[strength])


class Server:
    """A search server seen from outside: its JSON API over HTTP."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()

    def _get(self, path: str, **params) -> requests.Response:
        r = self.http.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        raise_for_status(r)
        return r

    def model(self, cache_dir: Path, device: str = "cpu") -> tuple[HashNet, ModelCard]:
        """Download (once per sha256) and load the server's model onto ``device``, refusing unverified weights."""
        card = self._get("/api/model").json()
        sha = card.get("sha256", "")
        if len(sha) != 64:
            raise ValueError(f"the server published no valid sha256 for its model: {sha!r}")
        folder = Path(cache_dir) / sha
        if not (folder / WEIGHTS_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            card_fields = {k: v for k, v in card.items() if k in ModelCard.__dataclass_fields__}
            (folder / CARD_FILE).write_text(ModelCard.from_dict(card_fields).to_json())
            tmp = folder / (WEIGHTS_FILE + ".part")
            with self.http.get(f"{self.url}/api/model/weights", stream=True, timeout=self.timeout) as r:
                raise_for_status(r)
                with tmp.open("wb") as f:
                    for block in r.iter_content(1 << 20):
                        f.write(block)
            tmp.replace(folder / WEIGHTS_FILE)
        try:
            return load_checkpoint(folder, expected_sha256=sha, device=device)
        except ValueError:
            (folder / WEIGHTS_FILE).unlink(missing_ok=True)  # do not keep a bad download
            raise

    def labels(self) -> dict[str, int]:
        return {item["name"]: item["count"] for item in self._get("/api/labels").json()["labels"]}

    def anchors(self, label: str, n: int, seed: int = 0) -> np.ndarray:
        data = self._get("/api/anchors", label=label, n=n, seed=seed).json()
        return np.array([list(bytes.fromhex(c)) for c in data["codes"]], dtype=np.uint8)

    def image(self, image_id: int, size: int | None = None) -> bytes:
        """A database image (or thumbnail) by id: PNG bytes."""
        params = {"size": size} if size is not None else {}
        return self._get(f"/api/images/{int(image_id)}", **params).content

    def search(self, image_png: bytes, radius: int | None = None, k: int | None = None) -> dict:
        form = {key: str(v) for key, v in (("radius", radius), ("k", k)) if v is not None}
        r = self.http.post(f"{self.url}/api/search", files={"image": ("query.png", image_png, "image/png")},
                           data=form, timeout=self.timeout)
        raise_for_status(r)
        return r.json()


def raise_for_status(r: requests.Response) -> None:
    """Turn an HTTP error answer into a ValueError carrying the server's JSON message."""
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text[:200]
        raise ValueError(f"server answered {r.status_code} for {r.url}: {message}")


@dataclass
class Protected:
    """One protected image and how the protection went."""

    image: torch.Tensor          # (3, H, W) in [0, 1], on the 8-bit grid
    code: np.ndarray             # (K/8,) code of the protected image
    target_code: np.ndarray      # (K/8,)
    target_label: str | None
    iterations: int
    distance: int                # Hamming distance to the target after protection
    psnr: float
    linf: float
    trace: np.ndarray            # Hamming distance to the target per iteration

    def png(self) -> bytes:
        return to_png(self.image)

    def summary(self) -> dict:
        return {"target_label": self.target_label, "target_code": to_hex(self.target_code),
                "code": to_hex(self.code), "iterations": self.iterations, "distance": self.distance,
                "psnr_db": round(self.psnr, 2), "linf_255": round(self.linf * 255, 2)}


class Protector:
    """Chooses targets and runs the protection, all on the user's machine.

    ``anchors(label) -> packed codes`` and ``label_counts`` come from the server's API or a
    local store; only codes of database items are needed, never their images.
    """

    def __init__(self, model: HashNet, cfg: PrivacyConfig, anchors: Callable[[str], np.ndarray],
                 label_counts: dict[str, int]) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.label_counts = label_counts
        self._anchors = anchors
        self._anchor_codes: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(cfg.seed)
        extra = {"tanh": {"step_rule": cfg.step_rule},
                 "rnm": {"step_rule": cfg.step_rule, "variant": cfg.rnm_variant, "margin": cfg.margin}}
        extra = extra.get(cfg.method, {})
        self.attack = make_attack(cfg.method, model, eps=cfg.eps, steps=cfg.steps,
                                  step_size=cfg.step_size, **extra)

    def anchor(self, label: str) -> np.ndarray:
        """The P2S anchor code of a label (sign of the sum of n_anchor database codes)."""
        if label not in self._anchor_codes:
            self._anchor_codes[label] = anchor_code(self._anchors(label))[0]
        return self._anchor_codes[label]

    def likely_label(self, code: np.ndarray) -> str:
        """The label whose anchor is nearest to ``code``: what the server would infer, computed locally."""
        usable = [l for l, c in self.label_counts.items() if c >= self.cfg.n_anchor]
        if not usable:
            raise ValueError(f"no label has the {self.cfg.n_anchor} database items an anchor needs "
                             f"(privacy.n_anchor); counts: {self.label_counts}")
        anchors = np.stack([self.anchor(l) for l in usable])
        return usable[int(hamming(code.reshape(1, -1), anchors)[0].argmin())]

    def protect(self, image: torch.Tensor, mode: str = "semantic", *, target_label: str | None = None,
                private: torch.Tensor | None = None,
                on_step: Callable[[int, int], None] | None = None) -> Protected:
        """Protect one image (3, H, W) in [0, 1]; ``on_step(k, distance)`` follows the progress.

        semantic: push toward the anchor of another label (``target_label`` or a random one);
        untargeted: push toward the complement of its own code; carrier: push ``image`` (the
        carrier) toward the code of ``private``, which is computed here and never sent.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        x = image.unsqueeze(0).to(self.model.device)  # the attack runs where the model is
        own = self.model.encode(x)[0]
        label = None
        if mode == "semantic":
            label = target_label or pick_target_label(
                (self.likely_label(own),), self.label_counts, self.cfg.n_anchor, self.rng)
            if label not in self.label_counts:
                raise ValueError(f"unknown target label {label!r}; known: {sorted(self.label_counts)}")
            target = self.anchor(label)
        elif mode == "untargeted":
            target = untargeted_target(own.reshape(1, -1))[0]
        else:
            if private is None:
                raise ValueError("carrier mode needs the private image whose results to retrieve")
            target = carrier_target(self.model, private)[0]
        report = None if on_step is None else (lambda k, dist: on_step(k, int(dist[0])))
        result = self.attack(x, target.reshape(1, -1), on_step=report)
        return Protected(
            image=result.images[0].cpu(), code=result.codes[0], target_code=target, target_label=label,
            iterations=int(result.iterations[0]),
            distance=int(hamming(result.codes[:1], target.reshape(1, -1))[0, 0]),
            psnr=float(psnr(result.images, x)[0]), linf=float(linf(result.images, x)[0]),
            trace=result.trace[:, 0].cpu().numpy(),
        )



def connect(server_url: str, cfg: PrivacyConfig, cache_dir: Path,
            device: str = "cpu") -> tuple[Protector, Server]:
    """A Protector on a server's model (downloaded once, sha256-checked) and anchors (codes only)."""
    server = Server(server_url)
    model, _ = server.model(cache_dir, device)
    return Protector(model, cfg, lambda l: server.anchors(l, cfg.n_anchor, cfg.seed), server.labels()), server


def local_protector(model_dir: Path, db_url: str, cfg: PrivacyConfig, device: str = "cpu") -> Protector:
    """A Protector on a local model and store (for a user who runs the service themselves)."""
    from retrieval.store import Store

    model, _ = load_checkpoint(model_dir, device=device)
    store = Store(db_url)
    return Protector(model, cfg, lambda l: store.codes_with_label(l, cfg.n_anchor, cfg.seed)[1],
                     store.label_counts())


def query(image: torch.Tensor, server_url: str, cfg: PrivacyConfig | None, *, cache_dir: Path,
          mode: str = "semantic", target_label: str | None = None, private: torch.Tensor | None = None,
          radius: int | None = None, k: int | None = None,
          device: str = "cpu") -> tuple[dict, Protected | None]:
    """Query a server with ``image`` (3, H, W) in [0, 1]; the protection runs on ``device``.

    With ``cfg`` the image is protected here and only the protected PNG is sent; with None it
    is sent as it is (to compare). Returns the server's answer and the protection report.
    """
    if cfg is None:
        return Server(server_url).search(to_png(image), radius, k), None
    protector, server = connect(server_url, cfg, cache_dir, device)
    protected = protector.protect(image, mode, target_label=target_label, private=private)
    return server.search(protected.png(), radius, k), protected
