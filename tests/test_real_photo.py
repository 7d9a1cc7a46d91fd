"""A natural photo of the kind users have (matplotlib's bundled grace_hopper.jpg, 512x600, from the
installed wheel, never downloaded), at its own size, through `hashveil protect --server` and
`hashveil query`, against a live server: the code the server computes from the uploaded file is
the code the client reported for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.cbook
import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from hashveil.cli import main
from retrieval.core.codes import to_hex
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.server import create_app
from testkit.data import write_config
from testkit.servers import live_server

PHOTO = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def server(tiny_trained):
    cfg, _ = tiny_trained
    with live_server(create_app(cfg)) as url:
        yield cfg, url


def _search(url: str, data: bytes, name: str) -> dict:
    r = requests.post(f"{url}/api/search", files={"image": (name, data)}, data={"radius": "0"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_protect_then_search_a_real_photo(server, tmp_path, fmt) -> None:
    cfg, url = server
    folder = tmp_path / "Grace's holiday"
    folder.mkdir()
    source = shutil.copy(PHOTO, folder / "grace hopper.jpg")
    config = write_config(tmp_path / "client.toml", cfg)
    out = CliRunner().invoke(
        main,
        [
            "--config",
            str(config),
            "protect",
            str(source),
            "--server",
            url,
            "--mode",
            "untargeted",
            "--format",
            fmt,
        ],
    )
    assert out.exit_code == 0, out.output
    suffix = ".png" if fmt == "png" else ".jpg"
    written = folder / f"grace hopper.protected{suffix}"
    report = json.loads((folder / "grace hopper.protected.json").read_text())
    with Image.open(written) as img:
        assert img.size == Image.open(PHOTO).size == (512, 600)  # at its own size
        assert img.format == ("PNG" if fmt == "png" else "JPEG") and not img.info.get("exif")
    assert report["source"] == "grace hopper.jpg" and "holiday" not in json.dumps(report)
    assert report["source_bytes"] == PHOTO.stat().st_size and report["bytes"] == written.stat().st_size
    assert f"({report['bytes'] / 1000:.0f} KB)" in out.output

    answer = _search(url, written.read_bytes(), written.name)
    assert answer["code"] == report["file_code"]  # the server's code of the file = the client's
    model, _ = load_checkpoint(cfg.work_dir / "model")  # and the code of those bytes, computed here
    assert answer["code"] == to_hex(model.encode(to_tensor(decode_image(written.read_bytes()))[None])[0])
    if fmt == "png":  # lossless: exactly the code the protection reached
        assert report["file_code"] == report["code"]
        assert to_tensor(decode_image(written.read_bytes())).shape == (3, 600, 512)
    assert ("code at the target" in out.output) == report["file_at_target"]


def test_query_with_protection_sends_a_file_whose_code_the_server_confirms(server, tmp_path) -> None:
    cfg, url = server
    config = write_config(tmp_path / "client.toml", cfg)
    out = CliRunner().invoke(
        main,
        ["--config", str(config), "query", str(PHOTO), "--server", url, "--protect", "--mode", "untargeted"]
        + ["--format", "webp", "--quality", "90"],
    )
    assert out.exit_code == 0, out.output
    assert "WEBP quality 90 file:" in out.output and "WARNING" not in out.output
    assert f"the file was {PHOTO.stat().st_size / 1000:.0f} KB" in out.output
