"""The privacy client against a real local server that records every byte it receives."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from privacy.client import connect
from privacy.encode import Encoding
from privacy.remote import RemoteService
from privacy.send import QueryOptions, query_encoded
from retrieval.core.codes import hamming, parse
from retrieval.core.config import override
from retrieval.core.imaging import decode_image, load_image, to_tensor
from retrieval.service.server import create_app
from testkit.servers import Recorder, live_server

pytestmark = pytest.mark.slow


class Tampering(Recorder):
    """A recorder that can corrupt the weights it serves."""

    tamper = False

    def __call__(self, environ, start_response):
        out = b"".join(super().__call__(environ, start_response))
        if self.tamper and environ["PATH_INFO"] == "/api/model/weights":
            out = out[:-1] + bytes([out[-1] ^ 0xFF])
        return [out]


@pytest.fixture(scope="module")
def served(tiny_trained):
    cfg, _ = tiny_trained
    cfg = override(cfg, privacy={"eps": 16 / 255, "steps": 200, "step_size": 1 / 255, "step_rule": "sign"})
    recorder = Tampering(create_app(cfg))
    with live_server(recorder) as url:
        yield cfg, recorder, url


def between_two_labels(data) -> tuple[Image.Image, tuple[str, str]]:
    """An even blend of a green and a yellow image: the tiny model's labels are far apart at any
    small budget, but an image between two of them can be pushed to either."""
    a, b = (np.asarray(load_image(data / "img" / f"{i:04d}.png"), dtype=np.float32) for i in (1, 3))
    return Image.fromarray(((a + b) / 2).round().astype(np.uint8)), ("green", "yellow")


def photo_with_gps(img: Image.Image) -> bytes:
    """A JPEG of an image carrying EXIF with a GPS block and a camera make."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPSInfo
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_protected_query_never_sends_the_original(served, tiny_data, tmp_path):
    cfg, recorder, url = served
    blend, pair = between_two_labels(tiny_data)
    original_bytes = photo_with_gps(blend)
    original = to_tensor(decode_image(original_bytes))
    protector, _ = connect(url, cfg.privacy, tmp_path)
    own = protector.likely_label(protector.model.encode(original.unsqueeze(0))[0])
    target = pair[1] if own == pair[0] else pair[0]
    recorder.requests.clear()
    sent_query = query_encoded(
        original, url, cfg.privacy, Encoding("png"), tmp_path, QueryOptions("semantic", target, radius=2)
    )
    answer, protected = sent_query.answer, sent_query.protected
    sent = recorder.uploads()
    assert len(sent) == 1
    everything = b"".join(r.body for r in recorder.requests)
    assert original_bytes not in everything
    assert b"SecretCam" not in everything and b"Exif" not in everything
    pixels = to_tensor(decode_image(sent[0]))
    assert not torch.equal(pixels, original)  # not the original's pixels either
    assert (pixels - original).abs().max() <= cfg.privacy.eps + 1e-6
    # the server saw the protected code, and it is the target's
    assert answer["code"] == protected.code.tobytes().hex()
    assert protected.distance == 0
    assert int(hamming(parse(answer["code"], 16), protected.target_code.reshape(1, -1))[0, 0]) == 0
    labels = [set(r["labels"]) for r in answer["results"]]
    assert labels and np.mean([target in l for l in labels]) > 0.5


def test_plain_query_sends_the_image_as_is(served, tiny_data, tmp_path):
    cfg, recorder, url = served
    image = to_tensor(load_image(tiny_data / "img" / "0001.png"))
    recorder.requests.clear()
    sent_query = query_encoded(image, url, None, Encoding("png"), tmp_path, QueryOptions(radius=2))
    answer, protected = sent_query.answer, sent_query.protected
    assert protected is None
    assert torch.equal(to_tensor(decode_image(recorder.uploads()[0])), image)
    assert any("green" in r["labels"] for r in answer["results"])


def test_untargeted_and_carrier_modes(served, tiny_data, tmp_path):
    cfg, _, url = served
    protector, server = connect(url, cfg.privacy, tmp_path)
    image = to_tensor(between_two_labels(tiny_data)[0])
    own = protector.model.encode(image.unsqueeze(0))
    away = protector.protect(image, "untargeted")
    assert int(hamming(away.code.reshape(1, -1), own)[0, 0]) >= 6  # pushed away from its own code
    private = to_tensor(load_image(tiny_data / "img" / "0003.png"))  # a "yellow" image
    carried = protector.protect(image, "carrier", private=private)
    assert carried.distance == 0
    assert (carried.code == protector.model.encode(private.unsqueeze(0))[0]).all()


def test_tampered_weights_are_refused(served, tmp_path):
    cfg, recorder, url = served
    recorder.tamper = True
    try:
        with pytest.raises(ValueError, match="sha256"):
            RemoteService(url).model(tmp_path / "fresh")
        assert not list((tmp_path / "fresh").glob("*/model.safetensors"))  # bad download not kept
    finally:
        recorder.tamper = False


def test_semantic_mode_without_enough_anchor_items_is_a_clear_error():
    from privacy.client import Protector
    from privacy.pool import AnchorPool
    from retrieval.core.config import ModelConfig, PrivacyConfig
    from retrieval.core.model import HashNet

    model = HashNet(ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32))
    items = [{"id": i, "code": "0000", "labels": ["blue"]} for i in range(8)]
    pool = AnchorPool.from_json(
        {
            "per_label": 8,
            "radius": 2,
            "labels": [{"name": "red", "count": 5}, {"name": "blue", "count": 8}],
            "items": items,
        }
    )
    protector = Protector(model, PrivacyConfig(n_anchor=9), pool)
    with pytest.raises(ValueError, match=r"no label has the 9 database items an anchor needs.*'blue': 8"):
        protector.protect(torch.rand(3, 32, 32), "semantic")
