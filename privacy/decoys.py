"""Decoy queries: the real query sent among K - 1 others that the server cannot tell from it.

Every one of the K uploads comes out of the same pipeline: a carrier (a random square crop of a
photo from the user's decoy folder, at the model's input side) pushed in one batch, with the same
protection, to a target code, encoded in the same format and sent in random order with random
gaps. Only the targets differ: the real query's is the private image's own code (carrier mode:
the private image never leaves this machine); a decoy's is the code of a database item from the
anchor pool, so decoy targets are distributed as image codes are, not as P2S anchors. The item is
one whose code lies as far from its label's centre as the real code lies from its own
(:func:`decoy_code`): the model was trained on the database, so an unseen image's code is off
centre more often than a database item's, and would otherwise stand out.

The labels: given the label the server will infer from the real query (estimated here from the
pool), the decoys' labels are drawn so that the K labels are a sample without replacement whose
inclusion probabilities are K times the label prior (systematic sampling, Madow 1949), conditioned
on holding the real one. Then, for a real label drawn from the prior, each of the K labels is
equally likely to be the real one: P(real = l | labels S) = 1/K for every l in S. (A label with
K * prior > 1 is in every draw, and for it the equality fails; :func:`inclusion_probabilities`.)
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from privacy.client import Protected, Protector
from privacy.encode import Encoded, Encoding, encode_verified
from privacy.pool import AnchorPool
from privacy.targets import anchor_code
from retrieval.core.codes import hamming
from retrieval.core.imaging import load_image, to_tensor

log = logging.getLogger(__name__)
MAX_DECOYS = 16  # K at most: every upload costs a protection and a search
MIN_CROP = 0.5  # a carrier's side is 50-100 % of its photo's shorter side
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
BUNDLED_PHOTOS = (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),)  # (package, file) photos only


def bundled_photos() -> list[Path]:
    """Photos that installed packages ship (the demo's decoy folder): matplotlib's grace_hopper.jpg."""
    found = []
    for package, name in BUNDLED_PHOTOS:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            if (Path(root) / name).is_file():
                found.append(Path(root) / name)
    return found


def decoy_photos(folder: str | Path = "") -> list[Path]:
    """The photos decoy carriers are cut from: every image file under ``folder`` (recursively),
    or the bundled photos for ``""``. ValueError when there is none."""
    if not str(folder):
        photos = bundled_photos()
        if not photos:
            raise ValueError("no bundled photo found for decoys: set privacy.decoy_dir (or --decoy-dir)")
        return photos
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"decoy folder {root} is not a folder")
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise ValueError(f"the decoy folder {root} holds no photos ({', '.join(PHOTO_SUFFIXES)})")
    return photos


def carrier_crops(photos: Sequence[Path], n: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` carriers, each a square crop of a random photo (side drawn in [MIN_CROP, 1] of its
    shorter side, placed anywhere), resized to ``side``. Shape: (n, 3, side, side) in [0, 1]."""
    out = []
    for i in rng.integers(len(photos), size=n):
        img = load_image(photos[int(i)])
        w, h = img.size
        crop = max(1, int(round(rng.uniform(MIN_CROP, 1.0) * min(w, h))))
        x, y = int(rng.integers(w - crop + 1)), int(rng.integers(h - crop + 1))
        box = img.crop((x, y, x + crop, y + crop)).resize((side, side), Image.Resampling.LANCZOS)
        out.append(to_tensor(box))
    return torch.stack(out)


def inclusion_probabilities(prior: Mapping[str, float], k: int) -> dict[str, float]:
    """min(1, c * prior) per label, with c such that they sum to ``k``: labels that would pass 1
    are set to 1 (in every draw) and the rest rescaled. ValueError when k exceeds the labels."""
    rest = {n: float(v) for n, v in prior.items() if v > 0}
    if not 1 <= k <= len(rest):
        raise ValueError(f"{k} distinct labels needed; the prior has {len(rest)}: {sorted(rest)}")
    pi: dict[str, float] = {}
    budget = k
    while rest:
        total = sum(rest.values())
        over = [n for n, v in rest.items() if budget * v / total >= 1]
        if not over:
            break
        for n in over:
            pi[n] = 1.0
            del rest[n]
        budget -= len(over)
    total = sum(rest.values())
    pi.update({n: budget * v / total for n, v in rest.items()})
    return pi


def draw_decoy_labels(
    real: str | None, prior: Mapping[str, float], k: int, rng: np.random.Generator
) -> list[str]:
    """K - 1 labels, distinct from each other and from ``real``: a systematic sample of K labels
    with inclusion probabilities :func:`inclusion_probabilities`, conditioned on holding
    ``real`` (its start drawn uniformly on the arc that selects it, so no draw is rejected).
    A ``real`` outside the prior (no label the client can place) gets a plain sample of K - 1."""
    names = sorted(n for n, v in prior.items() if v > 0)  # sorted: a seeded rng repeats its draws
    size = k if real in names else k - 1
    if size == 0:
        return []
    pi = inclusion_probabilities({n: prior[n] for n in names}, size)
    order = [names[i] for i in rng.permutation(len(names))]
    cum = np.concatenate([[0.0], np.cumsum([pi[n] for n in order])])
    if real in names:
        r = order.index(real)
        start = (cum[r] + rng.uniform(0, pi[real])) % 1.0
    else:
        start = rng.uniform(0, 1)
    points = start + np.arange(size)
    picked = [order[min(int(np.searchsorted(cum, p, side="right")) - 1, len(order) - 1)] for p in points]
    if len(set(picked)) != size or (real in names and real not in picked):  # float rounding at an edge
        return draw_decoy_labels(real, prior, k, rng)
    return [n for n in picked if n != real]


@dataclass(frozen=True)
class DecoyPlan:
    """The K carriers and targets of one user query, in the order they will be sent.

    Shape: carriers (K, 3, S, S) in [0, 1]; targets (K, K/8) uint8. ``labels[i]``: the label the
    server should infer from upload i (the real one's as estimated here); ``real``: its position.
    """

    carriers: torch.Tensor
    targets: np.ndarray
    labels: tuple[str | None, ...]
    real: int

    @property
    def decoy_labels(self) -> list[str | None]:
        return [label for i, label in enumerate(self.labels) if i != self.real]


def check_decoys(k: int) -> int:
    """``k`` (uploads per query, the real one included) if it is an int in [1, MAX_DECOYS]."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_DECOYS:
        raise ValueError(
            f"decoys must be an int in [1, {MAX_DECOYS}] (K uploads, the real one included); got {k!r}"
        )
    return k


def plan_decoys(
    pool: AnchorPool,
    real_code: np.ndarray,
    k: int,
    photos: Sequence[Path],
    side: int,
    rng: np.random.Generator,
) -> DecoyPlan:
    """Draw the decoys' labels and database items, K carriers and the send order (see module)."""
    check_decoys(k)
    inferred = pool.inferred_labels
    prior = {n: c for n, c in pool.label_counts.items() if c > 0 and n in set(inferred)}
    real_label = pool.likely_label(real_code)
    needed = k if real_label in prior else k - 1  # labels to draw, the real one's included
    if needed > len(prior):
        raise ValueError(
            f"{k} uploads need {k} labels that the server tells apart; this server's anchor pool has "
            f"{len(prior)}: use --decoys {len(prior) + (real_label not in prior)} or fewer"
        )
    labels = draw_decoy_labels(real_label, prior, k, rng)
    real_code = np.asarray(real_code, dtype=np.uint8).reshape(-1)
    distance = off_centre(pool, real_code, real_label)
    targets = [real_code] + [decoy_code(pool, label, distance, rng) for label in labels]
    order = rng.permutation(k)  # order[i]: which of (real, decoy 1, ...) goes i-th
    drawn = [real_label, *labels]
    return DecoyPlan(
        carriers=carrier_crops(photos, k, side, rng),
        targets=np.stack([targets[j] for j in order]),
        labels=tuple(drawn[j] for j in order),
        real=int(np.flatnonzero(order == 0)[0]),
    )


def centres(pool: AnchorPool) -> dict[str, np.ndarray]:
    """Each label's centre: the sign of the sum of the codes of the pool items retrieved as that
    label (the P2S anchor of all of them). Shape: (K/8,) each."""
    inferred = np.array([str(lab) for lab in pool.inferred_labels])
    return {
        str(n): anchor_code(pool.codes[inferred == n])[0] for n in set(pool.inferred_labels) if n is not None
    }


def off_centre(pool: AnchorPool, code: np.ndarray, label: str | None) -> int:
    """Hamming distance from ``code`` to the centre of ``label`` (0 without one)."""
    centre = centres(pool).get(str(label)) if label is not None else None
    return 0 if centre is None else int(hamming(code.reshape(1, -1), centre.reshape(1, -1))[0, 0])


def decoy_code(pool: AnchorPool, label: str, distance: int, rng: np.random.Generator) -> np.ndarray:
    """The code of a pool item retrieved as ``label``, drawn (weighted to stand for the database)
    among those whose distance from the label's centre is closest to ``distance``: the real
    query's own distance from its centre, so that an image code off its label's centre (more
    common for an unseen image than for a database item the model was trained on) is not the odd
    one out among the K."""
    rows = np.flatnonzero([lab == label for lab in pool.inferred_labels])
    d = hamming(pool.codes[rows], centres(pool)[label].reshape(1, -1))[:, 0]
    rows = rows[np.abs(d - distance) == np.abs(d - distance).min()]
    w = item_weights(pool)[rows]
    return pool.codes[int(rng.choice(rows, p=w / w.sum() if w.sum() > 0 else None))]


def item_weights(pool: AnchorPool) -> np.ndarray:
    """Weights that make the pool stand for the database: label count / pool items of that label,
    averaged over an item's labels (the pool holds up to ``per_label`` items of every label)."""
    held: dict[str, int] = {}
    for names in pool.labels:
        for name in names:
            held[name] = held.get(name, 0) + 1
    return np.array(
        [np.mean([pool.label_counts[n] / held[n] for n in names]) if names else 0.0 for names in pool.labels]
    )


@dataclass(frozen=True)
class DecoyQuery:
    """The K protected carriers of one user query and their files, in send order."""

    plan: DecoyPlan
    protected: list[Protected]
    files: list[Encoded]

    @property
    def real(self) -> int:
        return self.plan.real


def protect_decoys(
    protector: Protector, private: torch.Tensor, k: int, photos: Sequence[Path], encoding: Encoding
) -> DecoyQuery:
    """Plan a query with decoys for ``private`` (3, H, W), protect its K carriers in one batch and
    encode each file as the server will hash it; ``private`` itself is only hashed."""
    model = protector.model
    code = model.encode(private.unsqueeze(0).to(model.device))[0]
    plan = plan_decoys(protector.pool, code, k, photos, model.image_size, protector.rng)
    done = protector.protect_codes(plan.carriers, plan.targets, list(plan.labels))
    files = [encode_verified(model, p.image, p.target_code, p.distance, encoding) for p in done]
    return DecoyQuery(plan, done, files)


def send_in_order(
    files: Sequence[bytes],
    search: Callable[[bytes], dict],
    delay_s: float,
    rng: np.random.Generator,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict]:
    """Search with each file in turn, a random gap in [0, ``delay_s``] before each but the first."""
    answers = []
    for i, data in enumerate(files):
        if i and delay_s > 0:
            sleep(float(rng.uniform(0, delay_s)))
        answers.append(search(data))
    return answers


def fetch_thumbnails(
    answers: Sequence[dict], per_answer: int, fetch: Callable[[int], bytes], rng: np.random.Generator
) -> dict[int, bytes]:
    """The first ``per_answer`` result thumbnails of every answer, in one shuffled sweep, so that
    the server cannot tell from these requests which answer the user looks at."""
    ids = sorted({int(h["id"]) for a in answers for h in a.get("results", [])[:per_answer]})
    return {ids[i]: fetch(ids[i]) for i in rng.permutation(len(ids))}
