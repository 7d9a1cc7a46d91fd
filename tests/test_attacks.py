"""Attacks (privacy/attacks), obfuscations and image metrics on a tiny seeded HashNet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from evaluation.obfuscation import OBFUSCATIONS, blur, mosaic
from privacy.attacks import ATTACKS, RNM, Result, Tanh, make_attack
from privacy.attacks.rnm import literal_loss, margin_loss, proximal_loss
from privacy.attacks.tanh import alpha_schedule, tanh_loss
from privacy.metrics import PSNR_CAP_DB, linf, psnr
from retrieval.core.codes import hamming, pack, unpack
from retrieval.core.model import HashNet

EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(small_hashnet) -> HashNet:
    return small_hashnet


def grid_images(n: int, seed: int = 1) -> torch.Tensor:
    """Random 32x32 images on the 8-bit grid, as a decoded PNG would be."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=gen).float() / 255


def random_codes(n: int, bits: int = 16, seed: int = 2) -> np.ndarray:
    return pack(np.random.default_rng(seed).choice([-1, 1], size=(n, bits)))


ATTACK_CASES = {
    "rnm-literal": ("rnm", {"variant": "literal"}),
    "rnm-proximal": ("rnm", {"variant": "proximal"}),
    "rnm-margin": ("rnm", {"variant": "margin", "margin": 0.01}),
    "tanh": ("tanh", {}),
    "noise": ("noise", {"seed": 0}),
}


@pytest.mark.parametrize("case", sorted(ATTACK_CASES))
def test_every_attack_keeps_the_contract(model: HashNet, case: str) -> None:
    name, kw = ATTACK_CASES[case]
    x = grid_images(6)
    targets = random_codes(6)
    steps = 6
    result = make_attack(name, model, eps=EPS, steps=steps, step_size=1 / 255, **kw)(x, targets)
    assert isinstance(result, Result)
    assert result.images.shape == x.shape and result.images.dtype == x.dtype
    assert float(linf(result.images, x).max()) <= EPS + 1e-6
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    # what is reported is what the server sees: 8-bit images and their codes
    assert torch.allclose(result.images * 255, (result.images * 255).round(), atol=1e-3)
    assert result.codes.dtype == np.uint8 and result.codes.shape == (6, 2)
    np.testing.assert_array_equal(result.codes, model.encode(result.images))
    rows = 2 if name == "noise" else steps + 1
    assert result.trace.shape == (rows, 6) and result.trace.dtype == torch.float32
    final = hamming(result.codes, targets).diagonal()
    np.testing.assert_array_equal(result.trace[-1].numpy(), final)
    np.testing.assert_array_equal(result.trace[0].numpy(), hamming(model.encode(x), targets).diagonal())
    assert result.iterations.dtype == torch.int64 and result.iterations.shape == (6,)
    assert int(result.iterations.max()) <= rows - 1
    assert result.reached.dtype == torch.bool
    np.testing.assert_array_equal(result.reached.numpy(), final == 0)
    assert all(p.grad is None for p in model.parameters())


def test_make_attack_rejects_unknown_names_and_bad_values(model: HashNet) -> None:
    assert set(ATTACKS) == {"rnm", "tanh", "noise"}
    with pytest.raises(ValueError, match="'fgsm'"):
        make_attack("fgsm", model)
    with pytest.raises(ValueError, match="'sharp'"):
        RNM(model, variant="sharp")
    with pytest.raises(ValueError, match="-1"):
        RNM(model, eps=-1)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        RNM(model)(grid_images(3), random_codes(3, bits=8)[:, :1].repeat(2, axis=1)[:, :1])
    with pytest.raises(ValueError, match="1.5"):
        RNM(model)(grid_images(1) + 0.5 + 1 / 255, random_codes(1))


# Hand-computed case, K = 4: C = (0.3, -0.2, 0.8, -1.5), h_t = (+1, +1, -1, -1), sign(C) = (+, -, +, -)
C = torch.tensor([[0.3, -0.2, 0.8, -1.5]])
T = torch.tensor([[1.0, 1.0, -1.0, -1.0]])


def grad_of(loss_fn, *args) -> tuple[float, list[float]]:
    c = C.clone().requires_grad_(True)
    loss = loss_fn(c, T, *args)
    (g,) = torch.autograd.grad(loss.sum(), c)
    return float(loss.detach()), g[0].tolist()


def test_literal_rnm_gradient_by_hand() -> None:
    # beta = 1/4: dP/dc = 2 beta (c - sign c) - t / K; P = beta ||C - sign C||^2 - sign(C).t / K
    loss, g = grad_of(literal_loss)
    assert loss == pytest.approx(0.25 * (0.49 + 0.64 + 0.04 + 0.25) - 0.0)
    # bit 1 is wrong with |c| < 1/2: the literal penalty pushes it further away (+0.15)
    assert g == pytest.approx([-0.6, 0.15, 0.15, 0.0])


def test_proximal_rnm_gradient_by_hand() -> None:
    # lambda = 1/(2K): proximal point = h_t, dP/dc = 2 beta (c - t) - t / K
    loss, g = grad_of(proximal_loss)
    assert loss == pytest.approx(0.25 * (0.49 + 1.44 + 3.24 + 0.25))
    assert g == pytest.approx([-0.6, -0.85, 1.15, 0.0])
    # lambda > 1/K: the proximal point is sign(C) again, i.e. the literal reading
    assert grad_of(proximal_loss, None, 1.0)[1] == pytest.approx([-0.6, 0.15, 0.15, 0.0])


def test_margin_rnm_gradient_by_hand() -> None:
    # t * c = (0.3, -0.2, -0.8, 1.5); relu(m - t c) / K
    loss, g = grad_of(margin_loss, 0.5)
    assert loss == pytest.approx((0.2 + 0.7 + 1.3) / 4)
    assert g == pytest.approx([-0.25, -0.25, 0.25, 0.0])
    loss, g = grad_of(margin_loss, 0.0)  # only the wrong bits 1 and 2
    assert loss == pytest.approx((0.2 + 0.8) / 4)
    assert g == pytest.approx([0.0, -0.25, 0.25, 0.0])


def test_tanh_loss_gradient_by_hand() -> None:
    _, g = grad_of(tanh_loss, 0.5)
    want = [-0.5 / 4 * (1 - math.tanh(0.5 * c) ** 2) * t for c, t in zip(C[0].tolist(), T[0].tolist())]
    assert g == pytest.approx(want)


def test_tanh_alpha_schedule() -> None:
    """DHTA's get_alpha, in absolute iterations whatever the number of steps."""
    got = [alpha_schedule(i) for i in (0, 999, 1000, 1199, 1200, 1399, 1400, 1600, 1800, 1999, 5000)]
    assert got == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.5, 0.7, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        alpha_schedule(-1)


def test_attack_defaults_are_the_privacy_config() -> None:
    """One set of defaults: every attack class defaults to PrivacyConfig's values."""
    from retrieval.core.config import PrivacyConfig

    p, m = PrivacyConfig(), nn.Linear(1, 1)
    for attack in (RNM(m), Tanh(m), make_attack("noise", m)):
        assert (attack.eps, attack.step_size, attack.margin) == (p.eps, p.step_size, p.margin)
    for attack in (RNM(m), Tanh(m)):
        assert (attack.steps, attack.step_rule) == (p.steps, p.step_rule)
    assert RNM(m).variant == p.rnm_variant


def test_rnm_default_reduces_hamming_distance(model: HashNet) -> None:
    x = grid_images(8, seed=3)
    targets = np.bitwise_not(model.encode(x))  # the farthest codes: 16 bits to flip
    result = RNM(model, eps=16 / 255, steps=20)(x, targets)
    start, end = float(result.trace[0].mean()), float(result.trace[-1].mean())
    assert start == 16.0
    assert end <= start - 2, (start, end)  # measured: 13.6 of 16 bits left after 20 steps
    assert float(linf(result.images, x).max()) <= 16 / 255 + 1e-6


def test_image_already_at_target_is_left_alone(model: HashNet) -> None:
    x = grid_images(4, seed=4)
    for attack in (RNM(model, steps=5), Tanh(model, steps=5), make_attack("noise", model)):
        result = attack(x, model.encode(x))
        assert result.iterations.tolist() == [0] * 4
        assert torch.equal(result.images, x)
        assert result.reached.all() and float(result.trace.abs().max()) == 0


class CountingNet(nn.Module):
    """Wraps a HashNet and counts the image rows it is asked to forward."""

    def __init__(self, inner: HashNet) -> None:
        super().__init__()
        self.inner, self.hash_bits, self.rows = inner, inner.hash_bits, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.inner(x)

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        return pack(self(x))


def test_finished_images_stop_costing_work(model: HashNet) -> None:
    x = grid_images(6, seed=5)
    own = model.encode(x)
    targets = own.copy()
    targets[3:] = np.bitwise_not(own[3:])  # first three are done at once, last three are far
    counting = CountingNet(model)
    steps = 8
    result = RNM(counting, steps=steps)(x, targets)
    assert result.iterations[:3].tolist() == [0, 0, 0]
    assert result.iterations[3:].tolist() == [steps] * 3
    # one look at each finished image, `steps` forwards per running one, one final encode each
    assert counting.rows == 3 * 1 + 3 * steps + 6
    # without early stop every image takes every step
    assert RNM(model, steps=3, early_stop=False)(x, targets).iterations.tolist() == [3] * 6


def test_each_image_stops_when_it_reaches_its_target(model: HashNet) -> None:
    x = grid_images(8, seed=6)
    with torch.no_grad():
        c = model(x)
    targets = unpack(model.encode(x))
    nearest = c.abs().argsort(dim=1)[:, :3]  # flip the three bits closest to 0
    targets.scatter_(1, nearest, -targets.gather(1, nearest))
    result = RNM(model, steps=20, variant="margin")(x, pack(targets))
    assert result.trace[0].tolist() == [3.0] * 8
    assert result.reached.all()  # measured: 2 to 4 steps each
    its = result.iterations.tolist()
    assert len(set(its)) > 1 and max(its) < 20
    for i, it in enumerate(its):
        assert float(result.trace[it - 1, i]) > 0  # not done one step earlier
        assert result.trace[it:, i].tolist() == [0.0] * (21 - it)  # zero from then on


def test_on_step_sees_each_trace_row_as_it_is_made(model: HashNet) -> None:
    x = grid_images(4, seed=6)
    targets = np.bitwise_not(model.encode(x))
    seen: list[tuple[int, list[float]]] = []
    result = RNM(model, steps=6)(x, targets, on_step=lambda k, d: seen.append((k, d.tolist())))
    assert [k for k, _ in seen] == list(range(6))  # far targets: no image stops early
    for k, dist in seen:
        assert dist == result.trace[k].tolist()


def test_off_grid_input_is_quantised_within_the_budget(model: HashNet) -> None:
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    result = RNM(model, eps=2 / 255, steps=3, variant="proximal")(x, random_codes(3))
    q = result.images * 255
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert float(linf(result.images, x).max()) <= 2 / 255 + 1e-6
    free = RNM(model, eps=2 / 255, steps=3, quantize=False, step_size=0.3 / 255)(x, random_codes(3))
    assert float(linf(free.images, x).max()) <= 2 / 255 + 1e-6


@pytest.mark.parametrize("name", sorted(OBFUSCATIONS))
def test_obfuscations_keep_range_and_shape(name: str) -> None:
    x = grid_images(2, seed=9)[:, :, :30, :30]
    strength = {"mosaic": 4, "brightness": 1.7, "transparency": 0.4, "gaussian_noise": 0.2, "blur": 1.5}[name]
    out = OBFUSCATIONS[name](x, strength)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().max()) > 0.01


def test_mosaic_is_piecewise_constant_on_its_blocks() -> None:
    x = grid_images(1, seed=10)[:, :, :30, :30]  # 30 = 7 blocks of 4 + one cut short of 2
    out = mosaic(x, 4)
    for r0 in range(0, 30, 4):
        for c0 in range(0, 30, 4):
            tile, src = out[..., r0 : r0 + 4, c0 : c0 + 4], x[..., r0 : r0 + 4, c0 : c0 + 4]
            want = src.mean(dim=(-2, -1), keepdim=True).expand_as(tile)
            assert torch.allclose(tile, want, atol=1e-6)


def test_blur_keeps_a_constant_image_and_sigma_zero_is_identity() -> None:
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur(flat, 2.0), flat, atol=1e-6)
    x = grid_images(1, seed=11)
    assert torch.equal(blur(x, 0.0), x)


def test_psnr_and_linf_by_hand() -> None:
    a = torch.full((2, 3, 8, 8), 0.5)
    b = a.clone()
    b[0] += 0.1  # uniform error 0.1: MSE 0.01 -> 20 dB
    assert psnr(a, b).tolist() == pytest.approx([20.0, PSNR_CAP_DB])
    assert linf(a, b).tolist() == pytest.approx([0.1, 0.0])
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\)"):
        psnr(a, b[:, :, :4])
