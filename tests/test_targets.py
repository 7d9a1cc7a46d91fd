"""Target codes (privacy/targets.py): P2S anchor, P2P, target labels, untargeted, carrier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy.targets import anchor_code, carrier_target, p2p_target, pick_target_label, untargeted_target
from retrieval.core.codes import hamming, pack, unpack
from retrieval.core.config import ModelConfig
from retrieval.core.model import HashNet

A = [+1, +1, -1, -1, +1, -1, +1, -1]
B = [+1, -1, -1, +1, +1, -1, -1, -1]
C = [-1, +1, -1, +1, +1, +1, -1, -1]


def test_anchor_is_the_sign_of_the_sum_by_hand() -> None:
    # column sums: 1, 1, -3, 1, 3, -1, -1, -3
    got = anchor_code(pack(np.array([A, B, C])))
    assert got.shape == (1, 1) and got.dtype == np.uint8
    assert unpack(got)[0].tolist() == [1, 1, -1, 1, 1, -1, -1, -1]
    # ties (sum 0) go to +1, whatever the order
    neg_a = [-v for v in A]
    assert unpack(anchor_code(pack(np.array([A, neg_a]))))[0].tolist() == [1] * 8
    assert unpack(anchor_code(pack(np.array([neg_a, A]))))[0].tolist() == [1] * 8
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        anchor_code(np.zeros((0, 1), dtype=np.uint8))


def test_p2p_target_is_one_of_the_codes() -> None:
    codes = pack(np.array([A, B, C]))
    np.testing.assert_array_equal(p2p_target(codes), codes[:1])
    rng = np.random.default_rng(0)
    picked = {p2p_target(codes, rng).tobytes() for _ in range(30)}
    assert picked == {row.tobytes() for row in codes}


def test_pick_target_label_avoids_own_labels_and_rare_labels() -> None:
    counts = {"cat": 10, "dog": 9, "car": 3, "sky": 20, "sea": 8}
    rng = np.random.default_rng(0)
    seen = {pick_target_label(["cat", "sea"], counts, 9, rng) for _ in range(50)}
    assert seen == {"dog", "sky"}  # never own (cat, sea), never below n_anchor (car, sea)
    assert pick_target_label(["sky"], counts, 10, rng) == "cat"
    with pytest.raises(ValueError, match="21"):
        pick_target_label([], counts, 21, rng)
    with pytest.raises(ValueError, match="0"):
        pick_target_label([], counts, 0, rng)
    # seeded draws repeat
    a = [pick_target_label([], counts, 1, np.random.default_rng(5)) for _ in range(3)]
    b = [pick_target_label([], dict(reversed(counts.items())), 1, np.random.default_rng(5)) for _ in range(3)]
    assert a == b


def test_untargeted_target_is_the_complement() -> None:
    codes = pack(np.array([A, B]))
    far = untargeted_target(codes)
    np.testing.assert_array_equal(unpack(far), -unpack(codes))
    assert hamming(codes, far).diagonal().tolist() == [8, 8]


def test_carrier_target_is_the_private_images_own_code() -> None:
    torch.manual_seed(0)
    model = HashNet(ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32))
    private = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    got = carrier_target(model, private)
    assert model.training  # mode restored
    model.eval()
    np.testing.assert_array_equal(got, model.encode(private[None]))
    assert got.shape == (1, 2)
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        carrier_target(model, private[0])
