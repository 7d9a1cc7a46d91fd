"""The protection's randomness: targets drawn as designed, from OS entropy unless a seed is given,
on every path (Python API, `hashveil protect` and `query --protect`, the web client), and nothing
the client asks the server names a target or depends on a seed.

References are independent of the code under test: hand-computed draw frequencies, the bytes a
recording server received, and the anchors recomputed from the store.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import torch
from click.testing import CliRunner

import privacy.client
from hashveil.cli import main
from privacy.client import connect
from privacy.pool import AnchorPool, cached_pool
from privacy.targets import anchor_code, draw_target_label, rng_from
from retrieval.core.codes import pack
from retrieval.core.config import override
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.service.server import create_app
from testkit.data import write_config
from testkit.servers import Recorder, live_server
from testkit.service import CLIENT_BASE, build_tiny_service, opened_client, random_png
from webui.client import create_client_app

RETRIES = 5  # two unseeded draws can coincide by chance; five in a row cannot (p < 1e-6 here)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cfg = build_tiny_service(tmp_path_factory.mktemp("service"))
    cfg = override(cfg, privacy={"steps": 5})  # the draws are under test, not the attack
    recorder = Recorder(create_app(cfg))
    with live_server(recorder) as url:
        yield cfg, recorder, url


def _image(seed: int = 7) -> torch.Tensor:
    return to_tensor(decode_image(random_png(np.random.default_rng(seed))))


# the draw itself


def test_target_label_follows_the_prior_without_the_own_label() -> None:
    eligible = {"a": 100, "b": 300, "c": 600, "d": 0}
    rng = np.random.default_rng(123)
    draws = [draw_target_label("a", eligible, rng) for _ in range(30_000)]
    share = {label: draws.count(label) / len(draws) for label in "abcd"}
    assert share["a"] == 0 and share["d"] == 0  # never the own label, never a label with no items
    assert share["b"] == pytest.approx(300 / 900, abs=0.01)
    assert share["c"] == pytest.approx(600 / 900, abs=0.01)
    # no own label: the whole prior
    draws = [draw_target_label(None, eligible, rng) for _ in range(30_000)]
    assert draws.count("a") / len(draws) == pytest.approx(0.1, abs=0.01)
    # a seeded generator repeats, whatever the order of the counts
    a = [draw_target_label("b", eligible, np.random.default_rng(5)) for _ in range(3)]
    b = [draw_target_label("b", dict(reversed(eligible.items())), np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    with pytest.raises(ValueError, match="no target label other than 'a'"):
        draw_target_label("a", {"a": 5}, rng)


def test_rng_from_uses_os_entropy_unless_seeded() -> None:
    assert rng_from(4).integers(2**62) == rng_from(4).integers(2**62)
    assert rng_from(-1).integers(2**62) != rng_from(-1).integers(2**62)
    assert rng_from(None).integers(2**62) != rng_from(None).integers(2**62)


def _pool(per_label: int = 40, bits: int = 16, seed: int = 0) -> AnchorPool:
    rng = np.random.default_rng(seed)
    items = [
        {"id": i, "code": pack(rng.choice([-1, 1], size=(1, bits)))[0].tobytes().hex(), "labels": [label]}
        for i, label in enumerate(name for name in ("x", "y", "z") for _ in range(per_label))
    ]
    return AnchorPool.from_json(
        {
            "per_label": per_label,
            "radius": 2,
            "labels": [{"name": n, "count": 1000} for n in "xyz"],
            "items": items,
        }
    )


def test_anchor_is_a_fresh_random_subset_of_the_pool() -> None:
    pool = _pool()
    rng = np.random.default_rng(0)
    anchors = {pool.draw_anchor("y", 9, rng).tobytes() for _ in range(100)}
    assert len(anchors) >= 90  # 100 draws, at least 90 distinct anchors on varied codes
    # each one is the sign of the sum of 9 of the label's items: recompute from the same draw
    codes_y = pool.codes_of("y")
    pick = np.random.default_rng(3).choice(len(codes_y), size=9, replace=False)
    assert np.array_equal(pool.draw_anchor("y", 9, np.random.default_rng(3)), anchor_code(codes_y[pick]))
    with pytest.raises(ValueError, match="has 40 items in the anchor pool; an anchor needs 41"):
        pool.draw_anchor("y", 41, rng)


def test_pool_is_validated_and_cached(tmp_path) -> None:
    pool = _pool()
    calls = []
    fetch = lambda: calls.append(1) or pool.to_json()  # noqa: E731
    path = tmp_path / "pool.json"
    first = cached_pool(path, fetch)
    second = cached_pool(path, fetch)
    assert calls == [1] and first.sha256 == second.sha256 == pool.sha256
    path.write_text("{not json")
    assert cached_pool(path, fetch).sha256 == pool.sha256 and calls == [1, 1]  # a corrupt cache is refetched
    with pytest.raises(ValueError, match="not an anchor pool"):
        AnchorPool.from_json({"items": []})
    bad = pool.to_json()
    bad["items"][0]["labels"] = ["nope"]
    with pytest.raises(ValueError, match="labels the pool does not list"):
        AnchorPool.from_json(bad)


# the Python API


def test_unseeded_protections_differ_and_seeded_ones_repeat(served, tmp_path) -> None:
    cfg, _, url = served
    image = _image()
    unseeded, _ = connect(url, cfg.privacy, tmp_path)
    assert cfg.privacy.seed == -1
    for _ in range(RETRIES):
        a, b = unseeded.protect(image), unseeded.protect(image)
        if not np.array_equal(a.target_code, b.target_code):
            break
    else:
        raise AssertionError(f"{RETRIES} pairs of unseeded protections drew the same target code")
    seeded = override(cfg, privacy={"seed": 11}).privacy
    runs = [connect(url, seeded, tmp_path)[0] for _ in range(2)]
    x, y = (r.protect(image) for r in runs)
    assert x.target_label == y.target_label and np.array_equal(x.target_code, y.target_code)
    assert torch.equal(x.image, y.image)


def test_semantic_target_is_an_anchor_of_pool_items_of_another_label(served, tmp_path) -> None:
    """Recomputed by hand from a copy of the generator: the label drawn from the prior without the
    image's own, then the sign of the sum of 9 of that label's pool codes picked by the same rng."""
    cfg, _, url = served
    protector, _ = connect(url, override(cfg, privacy={"seed": 17}).privacy, tmp_path)
    pool, image = protector.pool, _image(3)
    own = protector.likely_label(protector.model.encode(image[None])[0])
    labels = set()
    for _ in range(30):
        twin = np.random.default_rng()
        twin.bit_generator.state = protector.rng.bit_generator.state
        p = protector.protect(image)
        names = sorted(n for n in pool.eligible(9) if n != own)
        weights = np.array([pool.label_counts[n] for n in names], dtype=float)
        label = names[int(twin.choice(len(names), p=weights / weights.sum()))]
        codes = pool.codes_of(label)
        expected = anchor_code(codes[twin.choice(len(codes), size=9, replace=False)])
        assert p.target_label == label != own and np.array_equal(p.target_code, expected[0])
        labels.add(label)
    assert labels == set(pool.label_counts) - {own}


# the command line


def _cli_config(tmp_path: Path, cfg, **privacy) -> Path:
    client = override(cfg, paths={"work_dir": tmp_path / "client"}, privacy=privacy)
    return write_config(tmp_path / "client.toml", client)


def _query(config: Path, url: str, image: Path, *flags: str):
    return CliRunner().invoke(
        main, ["--config", str(config), "query", str(image), "--server", url, "--protect", *flags]
    )


def test_query_protect_asks_nothing_that_names_a_target(served, tmp_path) -> None:
    cfg, recorder, url = served
    image = tmp_path / "photo.png"
    image.write_bytes(random_png(np.random.default_rng(1)))
    config = _cli_config(tmp_path, cfg)
    n = len(recorder.requests)
    result = _query(config, url, image)
    assert result.exit_code == 0, result.output
    assert "fresh OS entropy" in result.output
    first = recorder.since(n)
    assert [r.path for r in first] == [
        "/api/model",
        "/api/model/weights",
        "/api/anchors/pool",
        "/api/search",
    ]
    for r in first:
        assert "label" not in parse_qs(r.query) and "seed" not in parse_qs(r.query), (r.path, r.query)
    n = len(recorder.requests)
    assert _query(config, url, image).exit_code == 0
    assert [r.path for r in recorder.since(n)] == ["/api/model", "/api/search"]  # weights and pool cached


def test_query_protect_is_random_unless_seeded(served, tmp_path) -> None:
    cfg, recorder, url = served
    image = tmp_path / "photo.png"
    image.write_bytes(random_png(np.random.default_rng(2)))
    config = _cli_config(tmp_path, cfg)
    sent = []
    for _ in range(2):
        n = len(recorder.requests)
        assert _query(config, url, image, "--seed", "9").exit_code == 0
        sent += recorder.uploads(n)
    assert len(sent) == 2 and sent[0] == sent[1]
    for _ in range(RETRIES):
        n = len(recorder.requests)
        for _ in range(2):
            assert _query(config, url, image).exit_code == 0
        a, b = recorder.uploads(n)
        if a != b:
            break
    else:
        raise AssertionError(f"{RETRIES} pairs of unseeded `query --protect` runs sent the same bytes")


def test_protect_command_targets_differ_unless_seeded(served, tmp_path) -> None:
    cfg, _, url = served
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(random_png(np.random.default_rng(4)))
    config = _cli_config(tmp_path, cfg)

    def target(*flags: str) -> str:
        out = tmp_path / f"out{time.monotonic_ns()}"
        args = ["--config", str(config), "protect", str(folder), "--server", url, "--out", str(out), *flags]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return json.loads((out / "a.protected.json").read_text())["target_code"]

    assert target("--seed", "3") == target("--seed", "3")
    assert any(target() != target() for _ in range(RETRIES))


def test_a_pinned_model_sha256_refuses_another_model(served, tmp_path) -> None:
    cfg, recorder, url = served
    image = tmp_path / "photo.png"
    image.write_bytes(random_png(np.random.default_rng(1)))
    n = len(recorder.requests)
    result = _query(_cli_config(tmp_path, cfg), url, image, "--model-sha256", "ab" * 32)
    assert result.exit_code == 1 and "not the pinned " + "ab" * 32 in result.output
    assert result.output.count("\n") <= 2 and "Traceback" not in result.output
    assert [r.path for r in recorder.since(n)] == ["/api/model"]  # no weights, no pool, no search
    real = requests.get(f"{url}/api/model", timeout=10).json()["sha256"]
    assert _query(_cli_config(tmp_path, cfg), url, image, "--model-sha256", real).exit_code == 0
    bad = _query(_cli_config(tmp_path, cfg), url, image, "--model-sha256", "xyz")
    assert bad.exit_code == 2 and "64 lowercase hex digits" in bad.output


# every front end draws through the same function


def test_cli_and_web_client_draw_through_the_same_code(served, tmp_path, monkeypatch) -> None:
    cfg, _, url = served
    seen, states = [], []
    real = privacy.client.draw_target_label

    def spy(*args, **kw):
        seen.append(args[2])  # the generator each front end passes
        states.append(repr(args[2].bit_generator.state))  # where it stands before this draw
        return real(*args, **kw)

    monkeypatch.setattr(privacy.client, "draw_target_label", spy)
    image = tmp_path / "photo.png"
    image.write_bytes(random_png(np.random.default_rng(5)))
    assert _query(_cli_config(tmp_path, cfg), url, image).exit_code == 0
    assert len(seen) == 1
    app = create_client_app(url, override(cfg, paths={"work_dir": tmp_path / "web"}))
    for _ in range(2):
        _web_job(app, image.read_bytes())
    assert len(seen) == 3 and seen[1] is seen[2] is app.extensions["hashveil_client"].rng
    # the second job draws on from where the first left off, not from a reseeded generator (its
    # target may still repeat: the tiny service has 4 labels, so equal targets prove nothing)
    assert states[1] != states[2]


def _web_job(app, data: bytes) -> dict:
    client = opened_client(app)
    r = client.post(
        "/protect", data={"mode": "semantic", "image": (io.BytesIO(data), "p.png")}, base_url=CLIENT_BASE
    )
    assert r.status_code == 202, r.get_json()
    for _ in range(600):
        status = client.get(r.get_json()["status_url"], base_url=CLIENT_BASE).get_json()
        if status["state"] in ("done", "failed"):
            assert status["state"] == "done", status["error"]
            return status["result"]
        time.sleep(0.05)
    raise AssertionError("the web client's job did not finish")


def test_web_client_with_a_seed_repeats_across_launches(served, tmp_path) -> None:
    cfg, _, url = served
    data = random_png(np.random.default_rng(6))
    seeded = override(cfg, privacy={"seed": 21})
    first = [
        _web_job(create_client_app(url, override(seeded, paths={"work_dir": tmp_path / f"w{i}"})), data)
        for i in range(2)
    ]
    assert first[0]["target_code"] == first[1]["target_code"] and first[0]["code"] == first[1]["code"]
    assert first[0]["randomness"] == "seed"


def test_noise_method_draws_fresh_noise_unless_seeded() -> None:
    """The one attack that draws: torch's global generator has the same seed in every process, so
    an unseeded Noise must not use it."""
    from privacy.attacks import Noise
    from retrieval.core.config import ModelConfig
    from retrieval.core.model import HashNet

    model = HashNet(ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32))
    x, target = torch.rand(1, 3, 32, 32), np.zeros((1, 2), np.uint8)
    seeded = [Noise(model, seed=5, early_stop=False)(x, target).images for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1])
    torch.manual_seed(0)
    a = Noise(model, early_stop=False)(x, target).images
    torch.manual_seed(0)
    b = Noise(model, early_stop=False)(x, target).images
    assert not torch.equal(a, b)  # same global seed, different noise


def test_local_protect_draws_from_the_same_pool_and_honours_the_pin(served, tmp_path) -> None:
    """`hashveil protect` without --server: the local model and store, the same pool route body."""
    cfg, _, _ = served
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(random_png(np.random.default_rng(8)))
    config = write_config(tmp_path / "local.toml", cfg)

    def run(*flags: str):
        out = tmp_path / f"out{time.monotonic_ns()}"
        result = CliRunner().invoke(
            main, ["--config", str(config), "protect", str(folder), "--out", str(out), *flags]
        )
        return result, out / "a.protected.json"

    (r1, j1), (r2, j2) = run("--seed", "2"), run("--seed", "2")
    assert r1.exit_code == r2.exit_code == 0, r1.output
    assert json.loads(j1.read_text())["target_code"] == json.loads(j2.read_text())["target_code"]
    bad, _ = run("--model-sha256", "cd" * 32)
    assert bad.exit_code == 1 and "expected " + "cd" * 32 in bad.output


def test_jitter_spreads_targets_that_a_concentrated_pool_would_collide() -> None:
    """On a database whose items of a label share one code (as on the default demo), fresh anchor
    subsets all give that code; flipping 2 random bits of it gives >= 90 distinct targets in 100."""
    from privacy.client import Protector
    from privacy.targets import jitter
    from retrieval.core.codes import hamming
    from retrieval.core.config import ModelConfig, PrivacyConfig
    from retrieval.core.model import HashNet

    code = pack(np.array([[1, -1] * 8]))
    assert hamming(jitter(code, 3, np.random.default_rng(0)), code)[0, 0] == 3
    assert np.array_equal(jitter(code, 0, np.random.default_rng(0)), code)
    with pytest.raises(ValueError, match=r"jitter must be an int in \[0, 16\]"):
        jitter(code, 17, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    names = [f"label{j}" for j in range(10)]  # 10 labels, 32 bits: the default demo's shape
    centres = {n: pack(rng.choice([-1, 1], size=(1, 32))) for n in names}
    items = [
        {"id": 10 * j + i, "code": centres[n][0].tobytes().hex(), "labels": [n]}
        for j, n in enumerate(names)
        for i in range(10)
    ]
    pool = AnchorPool.from_json(
        {"per_label": 10, "radius": 2, "labels": [{"name": n, "count": 10} for n in names], "items": items}
    )
    model = HashNet(ModelConfig(backbone="small_cnn", hash_bits=32, image_size=32))
    own = pack(np.ones((1, 32)))[0]
    for bits, fewest, most in ((0, 1, 10), (2, 90, 100)):
        p = Protector(model, PrivacyConfig(seed=4, target_jitter=bits), pool)
        targets = [p.target_for(own, None) for _ in range(100)]
        assert fewest <= len({t.tobytes() for t, _ in targets}) <= most
        for t, label in targets:  # each is its label's code with exactly `bits` bits flipped
            assert hamming(t, centres[label])[0, 0] == bits
