"""Robust protection (privacy/attacks/views.py) and the margin, on a tiny seeded HashNet.

The reference for "what the server sees" is Pillow called here by hand, not the module's own
transformation functions.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from privacy.attacks import RNM, from_config
from privacy.attacks.views import ServerViews
from privacy.reencode import describe
from retrieval.core.codes import hamming, unpack
from retrieval.core.config import PrivacyConfig
from retrieval.core.imaging import to_pil, to_tensor
from retrieval.core.model import HashNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(small_hashnet) -> HashNet:
    return small_hashnet


def smooth_images(n: int, seed: int = 1) -> torch.Tensor:
    """Smooth 32x32 images on the 8-bit grid (photo-like: JPEG changes them a little, not wholesale)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return torch.round(x * 255) / 255


def pillow_codec(x: torch.Tensor, quality: int, fmt: str = "JPEG") -> torch.Tensor:
    """``x`` saved by Pillow as ``fmt`` (JPEG or WEBP) at ``quality`` and decoded again."""
    buf = io.BytesIO()
    to_pil(x).save(buf, format=fmt, quality=quality)
    return to_tensor(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def pillow_half(x: torch.Tensor) -> torch.Tensor:
    img = to_pil(x)
    small = img.resize((img.width // 2, img.height // 2), Image.Resampling.BICUBIC)
    return to_tensor(small.resize(img.size, Image.Resampling.BICUBIC))


def server_sees(model: HashNet, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Codes after each transformation the default robust protection checks, done by hand."""
    return {
        "sent": model.encode(images),
        "jpeg60": model.encode(torch.stack([pillow_codec(x, 60) for x in images])),
        "webp80": model.encode(torch.stack([pillow_codec(x, 80, "WEBP") for x in images])),
        "resize0.5": model.encode(torch.stack([pillow_half(x) for x in images])),
    }


def test_views_are_pillow_forward_and_differentiable_backward() -> None:
    x = smooth_images(3).requires_grad_(True)
    views = ServerViews(random_views=1, seed=0)(x, np.random.default_rng(0))
    assert views.shape == (5, 3, 3, 32, 32)
    assert torch.equal(views[0], x)
    for i in range(3):
        assert torch.allclose(views[1, i], pillow_codec(x[i].detach(), 60), atol=1e-6)
        assert torch.allclose(views[2, i], pillow_codec(x[i].detach(), 80, "WEBP"), atol=1e-6)
        assert torch.allclose(views[3, i], pillow_half(x[i].detach()), atol=1e-6)
    for v in (1, 2, 3, 4):  # kornia's JPEG, WebP's identity and torch's resize carry a gradient
        (grad,) = torch.autograd.grad(views[v].sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0, v


def test_server_transformation_names() -> None:
    assert describe("jpeg85") == "re-encoded as JPEG, quality 85"
    assert describe("resize0.75") == "resized to 0.75x and back (bicubic)"
    assert describe("crop2").startswith("cropped by 2 pixels")
    for bad in ("jpeg0", "jpeg101", "resize0", "resize1.5", "gif", "sent2"):
        with pytest.raises(ValueError):
            describe(bad)
    with pytest.raises(ValueError, match="always checked"):
        ServerViews(checks=("sent",))
    with pytest.raises(ValueError, match="robust needs"):
        PrivacyConfig(robust=True, method="tanh")


def _targets(model: HashNet, x: torch.Tensor) -> np.ndarray:
    """Each image's target: the code of the next image (a code the model does produce)."""
    return np.roll(model.encode(x), 1, axis=0)


def test_robust_protection_stops_only_on_what_the_server_sees(model: HashNet) -> None:
    x = smooth_images(12, seed=2)
    targets = _targets(model, x)
    cfg = PrivacyConfig(eps=16 / 255, step_size=16 / 255, steps=60, robust=True, seed=0)
    result = from_config(cfg, model)(x, targets)
    stopped = result.iterations < cfg.steps
    assert stopped.sum() >= 3, result.iterations  # the rule is exercised, not vacuous
    seen = server_sees(model, result.images)
    for name, codes in seen.items():
        at_target = hamming(codes, targets).diagonal() == 0
        assert at_target[stopped.numpy()].all(), name


def test_robust_protection_survives_jpeg_more_often_than_plain(model: HashNet) -> None:
    x = smooth_images(12, seed=2)
    targets = _targets(model, x)
    kw = dict(eps=16 / 255, step_size=16 / 255, steps=60, seed=0)
    after = {}
    for robust in (False, True):
        result = from_config(PrivacyConfig(robust=robust, **kw), model)(x, targets)
        codes = server_sees(model, result.images)["jpeg60"]
        after[robust] = float(hamming(codes, targets).diagonal().mean())
    assert after[True] < after[False], after


class Amplified(torch.nn.Module):
    """The tiny model with its relaxed outputs 300x larger (median about 6, trained-DPSH-like),
    so that a margin of 2 lies beyond where the quadratic readings settled before the fix (1.5)."""

    def __init__(self, inner: HashNet) -> None:
        super().__init__()
        self.inner, self.hash_bits = inner, inner.hash_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 300 * self.inner(x)

    def encode(self, x: torch.Tensor) -> np.ndarray:
        return self.inner.encode(x)


@pytest.mark.parametrize("variant", ["proximal", "literal", "margin"])
def test_margin_is_reached_and_held_by_every_reading(model: HashNet, variant: str) -> None:
    big = Amplified(model).eval()
    x = smooth_images(8, seed=3)
    # the image's own code, pushed past the margin (flipping bits is tested in test_attacks.py;
    # the literal reading cannot flip them at all)
    targets = model.encode(x)
    attack = RNM(
        big, eps=16 / 255, steps=100, step_size=16 / 255, step_rule="scaled", variant=variant, margin=2.0
    )
    result = attack(x, targets)
    with torch.no_grad():
        held = (unpack(targets) * big(result.images) >= 2.0).all(dim=1)
    stopped = result.iterations < 100
    assert stopped.float().mean() >= 0.75, result.iterations
    assert held[stopped].all()  # every image that stopped holds the margin as returned


def test_an_image_that_never_stops_keeps_its_best_iterate(model: HashNet) -> None:
    x = smooth_images(8, seed=4)
    targets = np.bitwise_not(model.encode(x))  # every bit to flip: every image runs to the cap
    # large sign steps overshoot: without the best iterate, 2 of these 8 end worse than they were
    result = RNM(model, eps=32 / 255, steps=15, step_size=8 / 255, step_rule="sign")(x, targets)
    capped = result.iterations == 15
    assert capped.sum() >= 4
    # not the last step's image (which may have slipped back) but the closest one it reached
    best_seen = result.trace[:-1].min(dim=0).values
    assert torch.equal(result.trace[-1][capped], best_seen[capped])
    assert (result.trace[-1] <= result.trace[0]).all()  # never worse than the image as it was


def test_protect_robust_reports_what_holds_after_each_server_transformation(tiny_trained, tmp_path) -> None:
    """`hashveil protect --strength robust`: the report's holds_after equals Pillow by hand."""
    from click.testing import CliRunner

    from hashveil.cli import main
    from retrieval.core.codes import parse
    from retrieval.core.imaging import decode_image
    from retrieval.core.model import load_checkpoint
    from testkit.data import write_config
    from testkit.service import random_png

    cfg, _ = tiny_trained
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.png").write_bytes(random_png(np.random.default_rng(20 + i)))
    config = write_config(tmp_path / "c.toml", cfg)
    args = ["--config", str(config), "protect", str(folder), "--strength", "robust", "--steps", "30"]
    out = CliRunner().invoke(main, [*args, "--seed", "3", "--mode", "untargeted"])
    assert out.exit_code == 0, out.output
    assert out.output.count("holds after") == 2
    model, _ = load_checkpoint(cfg.work_dir / "model")
    for i in range(2):
        report = json.loads((folder / f"p{i}.protected.json").read_text())
        image = to_tensor(decode_image((folder / f"p{i}.protected.png").read_bytes()))
        target = parse(report["target_code"], model.hash_bits).reshape(1, -1)
        seen = server_sees(model, image[None])
        assert set(report["holds_after"]) == {"jpeg60", "webp80", "resize0.5"}
        for name, held in report["holds_after"].items():
            assert held == (hamming(seen[name], target)[0, 0] == 0), name
