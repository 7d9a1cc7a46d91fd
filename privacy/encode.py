"""Protected images in the formats people share, checked after encoding.

PNG is lossless: the file decodes to exactly the protected pixels (the attack keeps them on the
8-bit grid), so its code is the code the protection reached. JPEG and WebP are far smaller, but a
lossy codec moves pixels by more than the protection did and can undo it. So every file is decoded
and hashed here exactly as a hashveil server does with an upload (:func:`server_code`), and the
report says whether that code is still at the target.

A protection that anticipates the codec (the ``robust`` option of the re-encoding issue) plugs in
by optimising for an :class:`Encoding` and calling :func:`server_code` in its stopping rule;
:func:`encode_verified` stays the final check for every protection.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import features

from retrieval.core.codes import hamming, to_hex
from retrieval.core.imaging import decode_image, to_pil, to_tensor
from retrieval.core.model import HashNet

FORMATS = ("png", "jpeg", "webp")
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_QUALITY = 90


@dataclass(frozen=True)
class Encoding:
    """A file format and, for the lossy ones, its quality (1-100; PNG ignores it)."""

    format: str = "png"
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}; got {self.format!r}")
        q = self.quality
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
            raise ValueError(f"quality must be an int in [1, 100]; got {q!r}")
        if self.format == "webp" and not features.check("webp"):
            raise ValueError("this Pillow was built without WebP support; use --format png or jpeg")

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]

    @property
    def mimetype(self) -> str:
        return MIMETYPES[self.format]

    @property
    def lossy(self) -> bool:
        return self.format != "png"

    def describe(self) -> str:
        return "PNG" if not self.lossy else f"{self.format.upper()} quality {self.quality}"

    def encode(self, image: torch.Tensor) -> bytes:
        """(3, H, W) in [0, 1] -> file bytes with no metadata (no EXIF, GPS, ICC or text)."""
        buf = io.BytesIO()
        img = to_pil(image)
        if self.format == "png":
            img.save(buf, format="PNG")
        elif self.format == "jpeg":  # 4:4:4: the perturbation's colour at full resolution (4:2:0
            # files are smaller and kept as many codes of a photo, but fewer of small images)
            img.save(buf, format="JPEG", quality=self.quality, subsampling=0, optimize=True)
        else:
            img.save(buf, format="WEBP", quality=self.quality, method=6)
        return buf.getvalue()


@dataclass(frozen=True)
class Encoded:
    """An encoded protected image and what a server computes from it."""

    data: bytes
    encoding: Encoding
    code: np.ndarray  # (K/8,) the code of the decoded file
    target_code: np.ndarray  # (K/8,)
    distance: int  # Hamming distance of ``code`` to the target
    protected_distance: int  # ... and of the protected pixels before encoding

    @property
    def at_target(self) -> bool:
        """True when the server's code of the file is the target code."""
        return self.distance == 0

    def summary(self) -> dict:
        return {
            "format": self.encoding.format,
            "quality": self.encoding.quality if self.encoding.lossy else None,
            "bytes": len(self.data),
            "file_code": to_hex(self.code),
            "file_distance": self.distance,
            "file_at_target": self.at_target,
        }


def server_code(model: HashNet, data: bytes) -> np.ndarray:
    """The packed code a hashveil server computes from uploaded bytes: decoded as the server
    decodes uploads, hashed by the model. Shape: (K/8,) uint8."""
    return model.encode(to_tensor(decode_image(data)).unsqueeze(0))[0]


def encode_verified(
    model: HashNet, image: torch.Tensor, target_code: np.ndarray, protected_distance: int, encoding: Encoding
) -> Encoded:
    """Encode the protected ``image`` (3, H, W) and check the file's code against ``target_code``."""
    data = encoding.encode(image)
    code = server_code(model, data)
    distance = int(hamming(code.reshape(1, -1), np.asarray(target_code).reshape(1, -1))[0, 0])
    return Encoded(data, encoding, code, np.asarray(target_code), distance, int(protected_distance))
