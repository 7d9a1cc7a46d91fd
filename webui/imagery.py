"""Small image helpers for the pages: thumbnails of uploads and the amplified perturbation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from retrieval.core.imaging import decode_image, thumbnail, to_pil, to_png


def thumbnail_png(data: bytes, size: int) -> bytes:
    """Decode image bytes (safely, metadata dropped) into a PNG of at most ``size`` pixels a side.

    Raises ValueError for unreadable images or a size outside [THUMB_MIN, THUMB_MAX].
    """
    return to_png(thumbnail(decode_image(data), size))


def perturbation_png(original: torch.Tensor, protected: torch.Tensor) -> tuple[bytes, float]:
    """|protected - original| on the 8-bit grid, scaled so that its largest value is white.

    Shape: both (3, H, W) in [0, 1]. Returns the PNG and the gain (1 when the images are equal),
    so a page can say "x gain".
    """
    if original.shape != protected.shape:
        raise ValueError(
            f"original and protected differ in shape: {tuple(original.shape)} vs {tuple(protected.shape)}"
        )
    a = np.asarray(to_pil(original), dtype=np.int16)
    b = np.asarray(to_pil(protected), dtype=np.int16)
    diff = np.abs(b - a)
    peak = int(diff.max())
    gain = 255.0 / peak if peak else 1.0
    amplified = np.clip(np.rint(diff * gain), 0, 255).astype(np.uint8)
    return to_png(Image.fromarray(amplified, "RGB")), gain
