"""Protecting files and folders (privacy.batch): outputs, sidecars, skipping and bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hashveil.local import local_protector
from privacy.batch import PROTECTED_SUFFIX, expand_inputs, output_path, protect_files
from privacy.encode import Encoding
from retrieval.core.codes import hamming, to_hex
from retrieval.core.imaging import decode_image, load_image, to_tensor


@pytest.fixture(scope="module")
def protector(tiny_trained):
    cfg, _ = tiny_trained
    return local_protector(cfg.work_dir / "model", cfg.db_url, cfg.privacy)


@pytest.fixture()
def photos(tmp_path, tiny_data):
    """Three images in a folder tree, one of them already protected by an earlier run."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(tiny_data / "img" / "0001.png", root / "a.png")
    shutil.copy(tiny_data / "img" / "0002.png", root / "sub" / "b.png")
    shutil.copy(tiny_data / "img" / "0003.png", root / ("old" + PROTECTED_SUFFIX))
    (root / "notes.txt").write_text("not an image")
    return root


def test_expand_inputs_walks_folders_and_never_takes_outputs(photos, tmp_path) -> None:
    assert expand_inputs([photos]) == [photos / "a.png", photos / "sub" / "b.png"]
    assert expand_inputs([photos / "a.png"]) == [photos / "a.png"]
    with pytest.raises(ValueError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing.png"])


def test_protect_writes_outputs_and_sidecars_then_skips_them(protector, photos, tmp_path) -> None:
    out_dir = tmp_path / "out"
    first = list(protect_files(protector, [photos], mode="untargeted", out_dir=out_dir))
    assert [o.output for o in first] == [out_dir / "a.protected.png", out_dir / "b.protected.png"]
    for o in first:
        assert o.error is None and o.protected is not None and o.output.is_file()
        sent = to_tensor(load_image(o.output))
        original = to_tensor(load_image(o.source))
        assert sent.shape == original.shape  # the input's resolution
        assert float((sent - original).abs().max()) <= protector.cfg.eps + 1e-6
        # the sidecar reports the code the written file really has
        report = json.loads(o.output.with_suffix(".json").read_text())
        assert report["code"] == to_hex(protector.model.encode(sent[None])[0])
        assert report["iterations"] == o.protected.iterations
    again = list(protect_files(protector, [photos], mode="untargeted", out_dir=out_dir))
    assert all(o.protected is None and o.error is None for o in again)  # skipped: outputs exist
    before = (out_dir / "a.protected.png").stat().st_mtime_ns
    redone = list(
        protect_files(protector, [photos / "a.png"], mode="untargeted", out_dir=out_dir, overwrite=True)
    )
    assert redone[0].protected is not None
    assert (out_dir / "a.protected.png").stat().st_mtime_ns >= before


def test_unreadable_file_is_reported_and_the_batch_goes_on(protector, photos, tmp_path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    outcomes = list(protect_files(protector, [photos], mode="untargeted", out_dir=tmp_path / "o"))
    by_name = {o.source.name: o for o in outcomes}
    assert "corrupt" in by_name["broken.jpg"].error or "not a readable image" in by_name["broken.jpg"].error
    assert not output_path(photos / "broken.jpg", tmp_path / "o").exists()
    assert by_name["a.png"].protected is not None and by_name["b.png"].protected is not None
    assert np.isfinite(by_name["a.png"].protected.psnr)


@pytest.mark.parametrize(
    ("fmt", "magic"), [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")]
)
def test_formats_are_checked_as_the_server_decodes_them(protector, photos, tmp_path, fmt, magic) -> None:
    encoding, out = Encoding(fmt, 80), tmp_path / "out"
    (o,) = protect_files(protector, [photos / "a.png"], mode="untargeted", out_dir=out, encoding=encoding)
    data = o.output.read_bytes()
    assert o.output == out / f"a.protected{encoding.suffix}" and data.startswith(magic)
    assert data == o.encoded.data and o.input_bytes == (photos / "a.png").stat().st_size
    code = protector.model.encode(to_tensor(decode_image(data))[None])[0]  # what a server computes
    distance = int(hamming(code[None], o.protected.target_code[None])[0, 0])
    report = json.loads((out / "a.protected.json").read_text())
    assert report["file_code"] == to_hex(code) and report["file_distance"] == distance
    assert report["file_at_target"] == (distance == 0) and report["bytes"] == len(data)
    assert report["format"] == fmt and report["quality"] == (None if fmt == "png" else 80)
    if fmt == "png":  # lossless: the file is the protected image, bit for bit
        assert data == o.protected.png() and report["file_code"] == report["code"]
        assert torch.equal(to_tensor(decode_image(data)), o.protected.image)
    assert expand_inputs([out]) == []  # outputs of every format are never inputs


def test_sidecar_names_the_source_file_only(protector, tmp_path, tiny_data) -> None:
    private = tmp_path / "Alice Martin" / "therapy notes"
    private.mkdir(parents=True)
    shutil.copy(tiny_data / "img" / "0004.png", private / "me.png")
    (o,) = protect_files(protector, [private / "me.png"], mode="untargeted", out_dir=tmp_path / "out")
    text = (tmp_path / "out" / "me.protected.json").read_text()
    assert json.loads(text)["source"] == "me.png"
    assert "Alice" not in text and "therapy" not in text and str(tmp_path) not in text


def test_bad_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        Encoding("gif")
    with pytest.raises(ValueError, match=r"quality must be an int in \[1, 100\]; got 0"):
        Encoding("jpeg", 0)
