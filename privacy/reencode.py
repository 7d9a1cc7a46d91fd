"""What a server may do to an upload before its model sees it: re-encode it or resize it.

A protection is computed for the exact 8-bit PNG the client sends; many services re-encode or
resize what they receive first, and a server that keeps uploads can always do so later. These
are those transformations, done with Pillow as a server would do them. The user's client uses
them to show, before anything is sent, what the server's model would infer after each one; the
audit's re-encoding attacker uses the same functions.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from privacy.pool import AnchorPool
from retrieval.core.imaging import to_pil, to_tensor
from retrieval.core.model import HashNet


def _codec(fmt: str, quality: int) -> Callable[[Image.Image], Image.Image]:
    def run(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format=fmt, quality=quality)
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")

    return run


def _half_and_back(img: Image.Image) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)
    return small.resize((w, h), Image.Resampling.BICUBIC)


# name -> what the server does; "sent" is the upload as the client sent it
TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "sent": lambda img: img,
    "jpeg95": _codec("JPEG", 95),
    "jpeg90": _codec("JPEG", 90),
    "jpeg75": _codec("JPEG", 75),
    "webp80": _codec("WEBP", 80),
    "resize0.5": _half_and_back,
}
DESCRIPTIONS = {
    "sent": "the upload as sent",
    "jpeg95": "re-encoded as JPEG, quality 95",
    "jpeg90": "re-encoded as JPEG, quality 90",
    "jpeg75": "re-encoded as JPEG, quality 75",
    "webp80": "re-encoded as WebP, quality 80",
    "resize0.5": "resized to half and back (bicubic)",
}
CLIENT_PREVIEW = ("sent", "jpeg90", "jpeg75", "resize0.5")  # what the privacy client shows


def transform(name: str, img: Image.Image) -> Image.Image:
    """``img`` as the server's model sees it after transformation ``name`` (see TRANSFORMS)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transformation {name!r}; choose one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](img)


def transform_tensor(name: str, image: torch.Tensor) -> torch.Tensor:
    """The same on a pixel image (3, H, W) in [0, 1], which is first rounded to 8 bits."""
    return to_tensor(transform(name, to_pil(image)))


def inferred_after(
    model: HashNet, pool: AnchorPool, image: torch.Tensor, names: tuple[str, ...] = CLIENT_PREVIEW
) -> dict[str, str | None]:
    """What the server's model would infer from ``image`` (3, H, W) after each transformation,
    estimated on this machine: the code under ``model``, read through the anchor pool."""
    batch = torch.stack([transform_tensor(n, image) for n in names])
    codes = model.eval().encode(batch)
    return {n: pool.likely_label(np.asarray(c)) for n, c in zip(names, codes)}
