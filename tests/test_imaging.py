import io

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.core.imaging import decode_image, to_png, to_tensor


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_png_round_trip_is_exact():
    x = torch.randint(0, 256, (3, 9, 7)).float() / 255
    assert torch.equal(to_tensor(decode_image(to_png(x))), x)


def test_exif_orientation_applied_and_metadata_dropped():
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    exif[0x8825] = {1: "N"}  # a GPS block
    data = encode(img, "JPEG", exif=exif.tobytes())
    out = decode_image(data)
    assert out.size == (2, 4)  # upright
    assert not out.info.get("exif") and not out.getexif()
    assert b"Exif" not in to_png(out)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16"])
def test_modes_are_converted_to_rgb(mode):
    img = Image.new(mode, (5, 5))
    out = decode_image(encode(img, "TIFF" if mode in ("CMYK", "I;16") else "PNG"))
    assert out.mode == "RGB" and out.size == (5, 5)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert np.asarray(decode_image(encode(img))).min() == 255


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a readable image"),
    ],
)
def test_bad_bytes_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        decode_image(data)


def test_truncated_png_raises_value_error():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    with pytest.raises(ValueError, match="corrupt or truncated|not a readable"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    data = encode(Image.new("L", (5000, 5000)))  # a few kB that decode to 25 Mpx
    assert len(data) < 100_000
    with pytest.raises(ValueError, match="limit"):
        decode_image(data, max_pixels=10_000_000)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("P", (3, 3), i) for i in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).size == (3, 3)
