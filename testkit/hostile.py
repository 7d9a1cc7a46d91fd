"""Hostile input for the API: image seeds and their mutations, and the bad-input table.

Shared by tests/test_properties.py, tests/test_bad_inputs.py and the benchmarks
fuzz_upload.py and bad_inputs.py, so that the CI profile and the long runs send the same kinds
of input. Nothing here knows the server's code; it speaks HTTP like a client.
"""

from __future__ import annotations

import http.client
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from hypothesis import strategies as st
from PIL import Image


def _encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def picture(size: int = 24, seed: int = 0) -> Image.Image:
    """A small RGB picture with smooth blocks and noise."""
    rng = np.random.default_rng(seed)
    cells = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((size, size))
    arr = np.clip(np.asarray(cells, np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def rgba_picture(size: int = 24) -> Image.Image:
    """RGBA with alpha only 0 or 255, so its composite over white is exact to compute."""
    img = picture(size).convert("RGBA")
    alpha = np.where(np.indices((size, size)).sum(axis=0) % 3 == 0, 0, 255).astype(np.uint8)
    img.putalpha(Image.fromarray(alpha))
    return img


def grey16_picture(size: int = 24) -> Image.Image:
    ramp = np.linspace(0, 60000, size * size).reshape(size, size).astype(np.uint16)
    return Image.fromarray(ramp)


def seed_images() -> dict[str, bytes]:
    """Valid encodings in every format and mode the decoder should take."""
    rgb = picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees
    frames = [rgb, rgb.rotate(90), rgb.rotate(180)]
    return {
        "png_rgb": _encode(rgb, "PNG"),
        "png_palette": _encode(rgb.convert("P"), "PNG"),
        "png_rgba": _encode(rgba_picture(), "PNG"),
        "png_16bit": _encode(grey16_picture(), "PNG"),
        "jpeg_rgb": _encode(rgb, "JPEG", quality=90),
        "jpeg_cmyk": _encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "jpeg_exif_rotated": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "gif_animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "tiff": _encode(rgb, "TIFF"),
        "webp": _encode(rgb, "WEBP"),
        "bmp": _encode(rgb, "BMP"),
    }


SEEDS = seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid seed with 1-6 byte-level edits: overwrite, delete a run, insert, truncate."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    edits = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("set", "delete", "insert", "truncate")),
                st.integers(0, 2**20),
                st.binary(min_size=1, max_size=8),
            ),
            min_size=1,
            max_size=6,
        )
    )
    for op, pos, blob in edits:
        at = pos % (len(data) + 1)
        if op == "set":
            data[at : at + len(blob)] = blob
        elif op == "delete":
            del data[at : at + len(blob) * 4]
        elif op == "insert":
            data[at:at] = blob
        else:
            del data[at:]
    return f"mutated {name}", bytes(data)


def upload_bytes() -> st.SearchStrategy[tuple[str, bytes]]:
    """(where it came from, bytes): arbitrary bytes, a valid seed, or a mutated seed."""
    return st.one_of(
        st.binary(max_size=4096).map(lambda b: ("arbitrary bytes", b)),
        st.sampled_from(sorted(SEEDS.items())),
        mutated_images(),
    )


def png_bomb(side: int = 8000) -> bytes:
    """A valid greyscale PNG of side x side zero pixels (64 M at 8000) in about 70 KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes((side + 1) * side), 9)  # each row: filter byte 0, then zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# the bad-input table


@dataclass(frozen=True)
class BadInput:
    """One request and the statuses it may get; ``raw_path`` requests skip URL normalisation."""

    name: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    expect: tuple[int, ...] = (400,)
    raw_path: bool = False


@dataclass(frozen=True)
class Outcome:
    case: BadInput
    status: int
    error: str  # the JSON error message, or a note on a 2xx answer
    good_answered: bool

    @property
    def ok(self) -> bool:
        return (
            self.status in self.case.expect and self.good_answered and (self.status < 400 or bool(self.error))
        )


def _file(data: bytes, name: str = "q.png") -> dict[str, Any]:
    return {"files": {"image": (name, data, "application/octet-stream")}}


def bad_inputs(
    hash_bits: int, max_upload_mb: float, good_code: str, token: str, label: str, image_id: int
) -> list[BadInput]:
    """Every bad input of issue #6; the five odd image modes may be converted (200) or refused (4xx).

    ``label`` and ``image_id`` exist in the served store; ``image_id + 1`` must not.
    """
    jpeg, png = SEEDS["jpeg_rgb"], SEEDS["png_rgb"]
    sof = jpeg.index(b"\xff\xc0")
    corrupt_jpeg = jpeg[: sof + 5] + b"\x00\x00\x00\x00" + jpeg[sof + 9 :]  # zero height and width
    corrupt_png = png[:20] + bytes([png[20] ^ 0xFF]) + png[21:]  # IHDR no longer matches its CRC
    odd = (200, 400, 415, 422)
    search, auth = "/api/search", {"Authorization": f"Bearer {token}"}

    def code_query(**body: Any) -> dict[str, Any]:
        return {"json": {"code": good_code, **body}}

    return [
        BadInput("empty body", "POST", search),
        BadInput("empty image file", "POST", search, _file(b"")),
        BadInput("not an image (text)", "POST", search, _file(b"hello, this is not an image")),
        BadInput("truncated JPEG", "POST", search, _file(jpeg[: len(jpeg) // 2], "t.jpg")),
        BadInput("corrupt JPEG (SOF zeroed)", "POST", search, _file(corrupt_jpeg, "c.jpg")),
        BadInput("truncated PNG", "POST", search, _file(png[: len(png) // 2])),
        BadInput("corrupt PNG (bad IHDR CRC)", "POST", search, _file(corrupt_png)),
        BadInput("decompression bomb (8000x8000 PNG, 70 KB)", "POST", search, _file(png_bomb())),
        BadInput(
            f"file over the {max_upload_mb:g} MB upload limit",
            "POST",
            search,
            _file(png + bytes(int(max_upload_mb * 2**20) + 1024)),
            (413,),
        ),
        BadInput("animated GIF", "POST", search, _file(SEEDS["gif_animated"], "a.gif"), odd),
        BadInput("16-bit greyscale PNG", "POST", search, _file(SEEDS["png_16bit"]), odd),
        BadInput("CMYK JPEG", "POST", search, _file(SEEDS["jpeg_cmyk"], "c.jpg"), odd),
        BadInput("palette PNG", "POST", search, _file(SEEDS["png_palette"]), odd),
        BadInput("RGBA PNG", "POST", search, _file(SEEDS["png_rgba"]), odd),
        BadInput(
            "wrong field name (multipart 'file')",
            "POST",
            search,
            {"files": {"file": ("q.png", png, "image/png")}},
        ),
        BadInput("wrong field name (JSON 'hash')", "POST", search, {"json": {"hash": good_code}}),
        BadInput("code of wrong length", "POST", search, {"json": {"code": good_code + "0"}}),
        BadInput("non-hex code", "POST", search, {"json": {"code": "zz" * (hash_bits // 8)}}),
        BadInput("radius -1", "POST", search, code_query(radius=-1)),
        BadInput(
            f"radius {hash_bits + 1} (above the bit length)", "POST", search, code_query(radius=hash_bits + 1)
        ),
        BadInput("k 0", "POST", search, code_query(k=0)),
        BadInput("k 10**12", "POST", search, code_query(k=10**12)),
        BadInput("radius as a word ('two')", "POST", search, code_query(radius="two")),
        BadInput("radius 2.5", "POST", search, code_query(radius=2.5)),
        BadInput("k true", "POST", search, code_query(k=True)),
        BadInput("code as a number", "POST", search, {"json": {"code": 1234}}),
        BadInput("body a JSON list", "POST", search, {"json": [good_code]}),
        BadInput(
            "malformed JSON",
            "POST",
            search,
            {"data": b'{"code": ', "headers": {"Content-Type": "application/json"}},
        ),
        BadInput(
            "JSON nested 100,000 deep",
            "POST",
            search,
            {"data": b"[" * 100_000, "headers": {"Content-Type": "application/json"}},
        ),
        BadInput("anchor pool size as a word", "GET", "/api/anchors/pool", {"params": {"per_label": "many"}}),
        BadInput("anchor pool size 0", "GET", "/api/anchors/pool", {"params": {"per_label": "0"}}),
        BadInput("image id that does not exist", "GET", f"/api/images/{image_id + 1}", expect=(404,)),
        BadInput("image id beyond int64", "GET", "/api/images/99999999999999999999", expect=(404,)),
        BadInput("thumbnail size 8 (below 16)", "GET", f"/api/images/{image_id}", {"params": {"size": 8}}),
        BadInput(
            "path-like id ../../etc/passwd",
            "GET",
            "/api/images/../../etc/passwd",
            expect=(404,),
            raw_path=True,
        ),
        BadInput(
            "path-like id, %2F-encoded",
            "GET",
            "/api/images/..%2F..%2Fetc%2Fpasswd",
            expect=(404,),
            raw_path=True,
        ),
        BadInput("admin: no token", "GET", "/api/admin/queries", expect=(401,)),
        BadInput(
            "admin: wrong token",
            "GET",
            "/api/admin/queries",
            {"headers": {"Authorization": "Bearer wrong"}},
            (403,),
        ),
        BadInput(
            "admin: not a bearer header",
            "GET",
            "/api/admin/queries",
            {"headers": {"Authorization": f"Basic {token}"}},
            (401,),
        ),
        BadInput(
            "admin upload: wrong token",
            "GET",
            "/api/admin/queries/1/upload",
            {"headers": {"Authorization": "Bearer wrong"}},
            (403,),
        ),
        BadInput(
            "admin upload: query id that does not exist",
            "GET",
            "/api/admin/queries/999999/upload",
            {"headers": auth},
            (404,),
        ),
        BadInput("GET on the POST-only /api/search", "GET", search, expect=(405,)),
    ]


def send(base_url: str, case: BadInput) -> tuple[int, Any]:
    """Send one case; returns (status, parsed JSON body or None)."""
    if case.raw_path:  # http.client sends the path byte for byte; requests would resolve '..'
        host, port = base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(case.method, case.path, headers=case.kwargs.get("headers", {}))
            resp = conn.getresponse()
            body = resp.read()
            is_json = resp.getheader("Content-Type", "").startswith("application/json")
            return resp.status, json.loads(body) if is_json else None
        finally:
            conn.close()
    resp = requests.request(case.method, base_url + case.path, timeout=60, **case.kwargs)
    is_json = resp.headers.get("Content-Type", "").startswith("application/json")
    return resp.status_code, resp.json() if is_json else None


def run_bad_inputs(base_url: str, cases: list[BadInput], good: dict[str, Any]) -> list[Outcome]:
    """Each case, then the good JSON query ``good``: it must get the same answer as before."""
    want = requests.post(base_url + "/api/search", json=good, timeout=60).json()
    out = []
    for case in cases:
        status, body = send(base_url, case)
        if status < 400:
            error = (
                f"accepted: code {body['code']}" if isinstance(body, dict) and "code" in body else "accepted"
            )
        else:
            error = body.get("error", "") if isinstance(body, dict) else ""
        again = requests.post(base_url + "/api/search", json=good, timeout=60)
        out.append(Outcome(case, status, error, again.status_code == 200 and again.json() == want))
    return out


def markdown_table(outcomes: list[Outcome]) -> str:
    lines = ["| input | status | error message | next good query answered |", "|---|---|---|---|"]
    for o in outcomes:
        message = o.error.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.case.name} | {o.status} | {message} | {'yes' if o.good_answered else 'NO'} |")
    return "\n".join(lines)
