"""The bad-input table of issue #6 against one live waitress server, which must keep answering.

Each bad request gets its status and a JSON error that says what is wrong; after each one the
same good code query must get the same answer as before the first. Images in odd modes are
accepted and converted the way an independent reference converts them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

from retrieval.core.codes import to_hex
from retrieval.core.config import override
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.hostile import (
    SEEDS,
    bad_inputs,
    grey16_picture,
    markdown_table,
    picture,
    rgba_picture,
    run_bad_inputs,
)
from testkit.servers import live_server
from testkit.service import BITS, build_tiny_service

TOKEN = "bad-input-token"
GOOD_ID = 1000  # the tiny service's first image


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cfg = override(build_tiny_service(tmp_path_factory.mktemp("bad_inputs")), server={"admin_token": TOKEN})
    with live_server(create_app(cfg)) as url:
        yield cfg, url


def _good_code(cfg) -> str:
    return to_hex(np.frombuffer(Store(cfg.db_url).images([GOOD_ID])[GOOD_ID].code, np.uint8))


def _log_count(cfg) -> int:
    return len(Store(cfg.db_url).query_log(limit=10**6))


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_answering(served) -> None:
    cfg, url = served
    good_code = _good_code(cfg)
    cases = bad_inputs(BITS, cfg.server.max_upload_mb, good_code, TOKEN, "circle", GOOD_ID)
    before = _log_count(cfg)
    outcomes = run_bad_inputs(url, cases, {"code": good_code, "radius": 3})
    failed = [o for o in outcomes if not o.ok]
    assert not failed, "\n" + markdown_table(failed)
    by_name = {o.case.name: o for o in outcomes}
    needles = {
        "empty body": "send an image",
        "empty image file": "empty",
        "not an image (text)": "not a readable image",
        "truncated JPEG": "truncated",
        "truncated PNG": "truncated",
        "corrupt PNG (bad IHDR CRC)": "not a readable image",
        "decompression bomb (8000x8000 PNG, 70 KB)": "64000000 pixels; the limit is 40000000",
        "file over the 1 MB upload limit": "1 MB upload limit",
        "code of wrong length": "4 hex digits",
        "non-hex code": "not valid hex",
        "radius -1": "radius must be an int in [0, 16]; got -1",
        "radius 17 (above the bit length)": "radius must be an int in [0, 16]; got 17",
        "k 0": "k must be an int in [1, 50]; got 0",
        "k 10**12": "got 1000000000000",
        "anchor pool size 0": "per_label must be an int in [1, 1000]; got '0'",
        "admin: wrong token": "wrong admin token",
        "image id beyond int64": "not found",
    }
    for name, needle in needles.items():
        assert needle in by_name[name].error, (name, by_name[name].error)
    accepted = sum(o.status == 200 for o in outcomes)
    assert accepted == 5  # the five odd image modes, converted; nothing else is logged
    assert _log_count(cfg) == before + 1 + len(cases) + accepted  # + the good queries
    assert requests.get(url + "/api/health", timeout=10).json()["status"] == "ok"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _references() -> dict[str, np.ndarray]:
    """The RGB each odd upload should become, computed without the server's decoder."""
    rgba = np.asarray(rgba_picture())
    grey = np.asarray(grey16_picture(), np.float64)
    with Image.open(io.BytesIO(SEEDS["gif_animated"])) as gif:
        first = np.asarray(gif.convert("RGB"))  # frame 0
    with Image.open(io.BytesIO(SEEDS["jpeg_cmyk"])) as cmyk:
        assert cmyk.mode == "CMYK"
        cmyk_rgb = np.asarray(cmyk.convert("RGB"))
    return {
        "png_rgba": np.where(rgba[..., 3:] == 0, 255, rgba[..., :3]).astype(np.uint8),  # over white
        "png_16bit": np.repeat((grey / grey.max() * 255).astype(np.uint8)[..., None], 3, axis=2),
        "png_palette": np.asarray(picture().convert("P").convert("RGB")),
        "gif_animated": first,
        "jpeg_cmyk": cmyk_rgb,
    }


@pytest.mark.parametrize("seed", ["png_rgba", "png_16bit", "png_palette", "gif_animated", "jpeg_cmyk"])
def test_odd_image_modes_are_converted_like_the_reference(served, seed) -> None:
    _, url = served
    ref = _references()[seed]
    sent = requests.post(
        url + "/api/search", files={"image": ("q", SEEDS[seed])}, data={"radius": 0}, timeout=60
    )
    want = requests.post(
        url + "/api/search",
        files={"image": ("r.png", _png(Image.fromarray(ref)))},
        data={"radius": 0},
        timeout=60,
    )
    assert sent.status_code == want.status_code == 200, sent.text
    assert sent.json()["code"] == want.json()["code"]
    assert sent.json()["results"] == want.json()["results"]


def test_bodies_over_the_limit_get_a_readable_json_413_from_hashveil_serve(tmp_path) -> None:
    """`hashveil serve` as users run it (waitress with its own body limit): a 20 MB JSON body and a
    20 MB upload both get the app's JSON 413, read in full by the client instead of a reset."""
    from retrieval.core.api_client import ApiClient
    from testkit.data import write_config
    from testkit.servers import free_port, start_serve, stop

    cfg = build_tiny_service(tmp_path / "set")  # max_upload_mb = 1
    port = free_port()
    server = start_serve(write_config(tmp_path / "config.toml", cfg), port)
    try:
        url = f"http://127.0.0.1:{port}"
        padded = '{"code": "abcd", "pad": "' + "x" * (20 * 2**20) + '"}'
        resp = requests.post(
            url + "/api/search", data=padded, headers={"Content-Type": "application/json"}, timeout=120
        )
        assert resp.status_code == 413 and resp.json()["error"] == (
            "request body exceeds the server's 1 MB upload limit"
        )
        with pytest.raises(ValueError, match="413 .* exceeds the server's 1 MB upload limit"):
            ApiClient(url, timeout=120).search(
                b"\x89PNG" + bytes(20 * 2**20)
            )  # what the privacy client sends
        good = requests.post(url + "/api/search", json={"code": "abcd"}, timeout=60)
        assert good.status_code == 200  # and it goes on answering
    finally:
        stop(server)
