"""What a server may do to an upload before its model sees it: re-encode it or resize it.

A protection is computed for the exact 8-bit PNG the client sends; many services re-encode or
resize what they receive first, and a server that keeps uploads can always do so later. These
are those transformations, done with Pillow as a server would do them. The user's client uses
them to show, before anything is sent, what the server's model would infer after each one; the
audit's re-encoding attacker uses the same functions.
"""

from __future__ import annotations

import io
import re
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


def _resize_and_back(scale: float) -> Callable[[Image.Image], Image.Image]:
    def run(img: Image.Image) -> Image.Image:
        w, h = img.size
        small = img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)
        return small.resize((w, h), Image.Resampling.BICUBIC)

    return run


def _crop(pixels: int) -> Callable[[Image.Image], Image.Image]:
    def run(img: Image.Image) -> Image.Image:
        w, h = img.size
        p = min(pixels, (w - 1) // 2, (h - 1) // 2)
        return img.crop((p, p, w - p, h - p)).resize((w, h), Image.Resampling.BICUBIC)

    return run


# A transformation is named by its kind and its setting: "sent" (the upload as it is), "jpeg90" and
# "webp80" (quality 1-100), "resize0.5" (to that factor and back, bicubic), "crop2" (that many
# pixels off every side, then back to the size).
_PATTERN = re.compile(r"(sent)|(jpeg|webp)(\d{1,3})|resize(0?\.\d+|1(?:\.0*)?)|crop(\d{1,2})")
CLIENT_PREVIEW = ("sent", "jpeg90", "jpeg60", "webp80", "resize0.5")  # what the privacy client shows


def parse(name: str) -> tuple[Callable[[Image.Image], Image.Image], str]:
    """The transformation called ``name`` and its description; ValueError for an unknown name."""
    m = _PATTERN.fullmatch(name)
    if m is None:
        raise ValueError(
            f"unknown server transformation {name!r}: use sent, jpegQ or webpQ (quality 1-100), "
            "resizeS (factor in (0, 1]) or cropP (pixels)"
        )
    if m.group(1):
        return (lambda img: img), "the upload as sent"
    if m.group(2):
        quality = int(m.group(3))
        if not 1 <= quality <= 100:
            raise ValueError(f"quality in {name!r} must be in [1, 100]")
        fmt = "JPEG" if m.group(2) == "jpeg" else "WebP"
        return _codec(fmt.upper(), quality), f"re-encoded as {fmt}, quality {quality}"
    if m.group(4):
        scale = float(m.group(4))
        if scale <= 0:
            raise ValueError(f"the factor in {name!r} must be in (0, 1]")
        return _resize_and_back(scale), f"resized to {scale:g}x and back (bicubic)"
    pixels = int(m.group(5))
    return _crop(pixels), f"cropped by {pixels} pixels on every side and resized back"


def describe(name: str) -> str:
    return parse(name)[1]


def transform(name: str, img: Image.Image) -> Image.Image:
    """``img`` as the server's model sees it after transformation ``name`` (see :func:`parse`)."""
    return parse(name)[0](img)


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
