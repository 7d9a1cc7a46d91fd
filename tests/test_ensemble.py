"""Ensemble protection: the client's surrogate (privacy/surrogate.py), its targets per mode, the
attack hook that misleads it beside the server's model, its cache, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy.attacks import RNM, Noise
from privacy.attacks.ensemble import Member
from privacy.client import Protector, connect
from privacy.csq import CSQSettings
from privacy.pool import AnchorPool
from privacy.surrogate import Surrogate, cached_surrogate, surrogate_targets
from retrieval.core.codes import hamming
from retrieval.core.config import ModelConfig, PrivacyConfig, override
from retrieval.core.imaging import to_png, to_tensor
from retrieval.core.model import HashNet
from retrieval.service.server import create_app
from testkit.servers import live_server

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = CSQSettings(image_size=16, epochs=2, batch_size=8, seed=3)


def hashnet(seed: int, bits: int = 16) -> HashNet:
    torch.manual_seed(seed)
    return HashNet(
        ModelConfig(backbone="small_cnn", hash_bits=bits, image_size=32), load_pretrained=False
    ).eval()


def smooth_images(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=(32, 32), mode="bilinear")
    return torch.round(x * 255) / 255


def pool_of(n: int, names=("a", "b", "c")) -> AnchorPool:
    labels = tuple((names[i % len(names)],) for i in range(n))
    counts = {name: sum(name in item for item in labels) for name in names}
    return AnchorPool(256, 2, np.arange(n, dtype=np.int64), np.zeros((n, 2), np.uint8), labels, counts)


def test_surrogate_targets_per_mode_by_hand():
    model = hashnet(5)
    centres = torch.tensor([[1.0] * 8 + [-1.0] * 8, [-1.0, 1.0] * 8])
    s = Surrogate(model, ("cat", "dog"), centres)
    x, private = smooth_images(2, 1), smooth_images(2, 2)
    semantic = surrogate_targets(s, "semantic", x, ["dog", "cat"])
    # dog: bits 0101... -> 0x55 0x55; cat: eight 1s then eight 0s -> 0xff 0x00
    assert semantic.tolist() == [[0x55, 0x55], [0xFF, 0x00]]
    own = (model(x) > 0).detach().numpy()
    untargeted = np.unpackbits(surrogate_targets(s, "untargeted", x), axis=1).astype(bool)
    assert (untargeted == ~own).all()
    carrier = np.unpackbits(surrogate_targets(s, "carrier", x, private=private), axis=1).astype(bool)
    assert (carrier == (model(private) > 0).detach().numpy()).all()
    with pytest.raises(ValueError, match="knows no label 'bird'"):
        surrogate_targets(s, "semantic", x, ["bird", "cat"])
    with pytest.raises(ValueError, match="one target label per image"):
        surrogate_targets(s, "semantic", x, ["cat"])
    with pytest.raises(ValueError, match="one private image per carrier"):
        surrogate_targets(s, "carrier", x)
    with pytest.raises(ValueError, match="unknown mode"):
        surrogate_targets(s, "decoy", x)


def test_the_ensemble_moves_the_surrogate_closer_than_the_server_alone():
    server, surrogate = hashnet(0), hashnet(1)
    x = smooth_images(8, 4)
    rng = np.random.default_rng(0)
    target = np.packbits(rng.integers(0, 2, (8, 16)), axis=1).astype(np.uint8)
    own = np.packbits(rng.integers(0, 2, (8, 16)), axis=1).astype(np.uint8)
    attack = RNM(server, eps=16 / 255, steps=60, step_size=1 / 255, step_rule="sign")
    alone = attack(x, target)
    both = attack(x, target, member=Member(surrogate, own))
    before = hamming(surrogate.encode(x), own).diagonal()
    d_alone = hamming(surrogate.encode(alone.images), own).diagonal()
    d_both = hamming(surrogate.encode(both.images), own).diagonal()
    assert d_both.mean() < d_alone.mean() and d_both.mean() < before.mean()
    assert both.trace[-1].mean() < both.trace[0].mean()  # the server's code still moves to its target
    assert (both.images - x).abs().max() <= 16 / 255 + 1e-6


def test_the_surrogate_is_trained_once_and_cached(tmp_path):
    pool, fetched = pool_of(12), []

    def fetch(i: int) -> bytes:
        fetched.append(i)
        return to_png(smooth_images(1, int(i) + 10)[0])

    first = cached_surrogate(pool, fetch, 16, tmp_path, TINY)
    assert sorted(fetched) == list(range(12))
    second = cached_surrogate(pool, fetch, 16, tmp_path, TINY)
    assert len(fetched) == 12  # nothing fetched, nothing trained
    assert torch.equal(first.centres, second.centres)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    cached_surrogate(pool_of(9), fetch, 16, tmp_path, TINY)  # another pool: another surrogate
    assert len(fetched) == 21


def test_bad_input_is_a_clear_error(tmp_path):
    model, pool = hashnet(0), pool_of(6)
    with pytest.raises(ValueError, match="surrogate"):
        Protector(model, PrivacyConfig(ensemble=True, n_anchor=1, anchor_pool=1), pool)
    with pytest.raises(ValueError, match="gradient method"):
        PrivacyConfig(ensemble=True, method="noise")
    x = smooth_images(2)
    targets = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="member's target_codes must have shape"):
        RNM(model, steps=2)(x, targets, member=Member(hashnet(1), np.zeros((3, 2), np.uint8)))
    with pytest.raises(ValueError, match="cannot mislead an ensemble member"):
        Noise(model)(x, targets, member=Member(hashnet(1), targets))
    with pytest.raises(ValueError, match="pool image 0 is not a readable image"):
        cached_surrogate(pool, lambda i: b"not an image", 16, tmp_path, TINY)
    with pytest.raises(ValueError, match="anchor pool is empty"):
        cached_surrogate(pool_of(0), lambda i: b"", 16, tmp_path, TINY)


@pytest.mark.slow
def test_connect_trains_the_surrogate_once_and_protects_with_it(tiny_trained, tiny_data, tmp_path):
    cfg, _ = tiny_trained
    privacy = override(cfg, privacy={"ensemble": True, "seed": 0, "eps": 16 / 255}).privacy
    app = create_app(cfg)
    with live_server(app) as url:
        protector, _ = connect(url, privacy, tmp_path)
        assert protector.surrogate is not None
        folders = sorted(tmp_path.glob("*/surrogate-*"))
        assert len(folders) == 1
        stamp = (folders[0] / "centres.json").stat().st_mtime_ns
        again, _ = connect(url, privacy, tmp_path)
        assert (folders[0] / "centres.json").stat().st_mtime_ns == stamp  # not retrained
        from retrieval.core.imaging import load_image

        image = to_tensor(load_image(tiny_data / "img" / "0001.png"))
        p = again.protect(image, "untargeted")
        own = again.surrogate.model.encode(image[None])
        assert p.surrogate_distance == int(hamming(again.surrogate.model.encode(p.image[None]), ~own)[0, 0])
        assert "surrogate_distance" in p.summary()


@pytest.mark.slow
def test_the_cli_flag_reaches_the_config_and_refuses_what_it_cannot_do(tiny_trained, tiny_data, tmp_path):
    from click.testing import CliRunner

    from hashveil.cli import main
    from testkit.data import write_config

    cfg, _ = tiny_trained
    config = str(write_config(tmp_path / "c.toml", cfg))
    image = str(tiny_data / "img" / "0001.png")
    local = CliRunner().invoke(
        main, ["--config", config, "protect", image, "--ensemble", "--out", str(tmp_path)]
    )
    assert local.exit_code != 0 and "use --server URL" in local.output
    noise = CliRunner().invoke(
        main,
        ["--config", config, "protect", image, "--ensemble", "--method", "noise", "--out", str(tmp_path)],
    )
    assert noise.exit_code != 0 and "privacy.ensemble needs a gradient method" in noise.output
    assert not list(tmp_path.glob("*.protected.*"))  # nothing written
