"""Images in and out: bytes or files -> RGB tensors in [0, 1], and back to PNG.

The one pixel space of hashveil is float (3, H, W) in [0, 1]. Decoding applies the EXIF
orientation and drops all metadata; it refuses decompression bombs and unreadable files with
a ValueError that says why.

One resizer: :func:`resize_square` (torch, bilinear with antialiasing) is the only way an image
reaches the model's input size, inside the model (``HashNet.features``) and in the index
builder's and the evaluation's data loaders, so that the server, the client (which attacks
the model's own resize) and the database all hash exactly the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger uploads are refused, not decoded
THUMB_MIN, THUMB_MAX = 16, 512  # sides of the thumbnails any page or route may ask for


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes into an upright RGB PIL image with no metadata.

    Raises ValueError for empty, unreadable, truncated or oversized images.
    """
    if not data:
        raise ValueError("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ValueError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
            img.seek(0)  # first frame of an animation
            img = ImageOps.exif_transpose(img)
            img.load()
    except UnidentifiedImageError:
        raise ValueError("not a readable image (PNG, JPEG, GIF, BMP, TIFF or WebP expected)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image refused: {e}") from None
    # PIL reports truncated and corrupt files as OSError, some corrupt TIFF tags as TypeError
    except (OSError, SyntaxError, TypeError) as e:
        raise ValueError(f"corrupt or truncated image: {e}") from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    clean = Image.new("RGB", img.size)
    clean.paste(img.convert("RGB"))  # a fresh image: no EXIF, ICC or text chunks survive
    return clean


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as upright RGB; ValueError names the file when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    try:
        return decode_image(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float (3, H, W) in [0, 1], at its own size (resizing: :func:`resize_square`)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


RESIZER = "torch-bilinear-antialias-clamped"  # names resize_square in cache keys: change it when the resizer changes


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """The one resizer (module docstring): (n, 3, H, W) -> (n, 3, size, size), unchanged when
    already that size. Each image is resized on its own, so batching never changes a result.
    The filter averages pixels with positive weights; the clamp only removes float rounding
    (1 + 1e-7), so a resized image passes the same [0, 1] check as the upload it came from."""
    if x.ndim != 4:
        raise ValueError(f"images must have shape (n, C, H, W); got {tuple(x.shape)}")
    if x.shape[-2:] == (size, size):
        return x
    if len(x) == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    out = [
        F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        for img in x
    ]
    return torch.cat(out).clamp(0.0, 1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """Float (3, H, W) in [0, 1] -> RGB PIL image, rounding to 8 bits."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W); got {tuple(image.shape)}")
    arr = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def thumbnail(img: Image.Image, size: int) -> Image.Image:
    """A copy of ``img`` of at most ``size`` pixels a side; ValueError for a size outside
    [THUMB_MIN, THUMB_MAX]."""
    if isinstance(size, bool) or not isinstance(size, int) or not THUMB_MIN <= size <= THUMB_MAX:
        raise ValueError(f"size must be an int in [{THUMB_MIN}, {THUMB_MAX}]; got {size!r}")
    out = img.copy()
    out.thumbnail((size, size))
    return out


def to_png(image: torch.Tensor | Image.Image) -> bytes:
    """Encode as PNG with no metadata."""
    img = to_pil(image) if isinstance(image, torch.Tensor) else image
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
