"""One resizer: an image of any size gets the same code on every path (index builder, server
upload, privacy client, evaluation), and a protected photo's code is the one the server computes.

The images are odd sizes (none is the model's 32 px square, some not square) plus a real photo
at its own size (matplotlib's bundled grace_hopper.jpg, 512 x 600, from the installed wheel).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.bench import Workbench
from evaluation.options import EvalOptions
from index_builder.build import build_index
from index_builder.datasets import open_dataset
from index_builder.features import encode_images
from index_builder.imagelist import ImageDataset
from index_builder.splits import make_splits
from privacy.client import Protector
from retrieval.core.codes import to_hex
from retrieval.core.config import DataConfig, override
from retrieval.core.imaging import decode_image, load_image, resize_square, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.data import NAMES, save_untrained_model, tiny_config

SIZES = [(37, 53), (61, 29), (32, 33), (100, 80), (45, 45), (29, 71)]
PHOTO = "photo/grace hopper.jpg"


@pytest.fixture(scope="module")
def odd_service(tmp_path_factory):
    """A folder of odd-sized images (and the photo) indexed with an untrained small_cnn."""
    root = tmp_path_factory.mktemp("odd")
    data = root / "data"
    rng = np.random.default_rng(0)
    lines = ["path,labels"]
    for i in range(36):
        w, h = SIZES[i % len(SIZES)]
        cells = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        img = Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC)
        (data / "img").mkdir(parents=True, exist_ok=True)
        img.save(data / "img" / f"{i:02d}.png")
        lines.append(f"img/{i:02d}.png,{NAMES[i % 4]}")
    (data / "photo").mkdir()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        (data / PHOTO).write_bytes(f.read())
    lines.append(f"{PHOTO},{NAMES[0]}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    cfg = override(
        tiny_config(root / "work", data),
        data={"num_query": 4, "num_train": 10, "num_database": 0, "seed": 1},
        index={"batch_size": 8},  # batches that mix sizes
        privacy={"n_anchor": 3},
    )
    save_untrained_model(cfg)
    build_index(cfg)
    return cfg


def _stored(cfg) -> dict[str, str]:
    """Relative path -> hex code as the index builder stored it."""
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    rows = Store(cfg.db_url).images(splits.database.tolist())
    return {images.paths[i]: rows[i].code.hex() for i in map(int, splits.database)}


def test_resizing_alone_or_in_a_batch_is_the_same() -> None:
    x = torch.rand(3, 3, 41, 67, generator=torch.Generator().manual_seed(0))
    together = resize_square(x, 32)
    for i in range(3):
        assert torch.equal(resize_square(x[i : i + 1], 32)[0], together[i])
    assert resize_square(together, 32) is together  # the model's resize is a no-op after the loader's


def test_every_path_gives_the_same_code(odd_service) -> None:
    cfg = odd_service
    stored = _stored(cfg)
    assert PHOTO in stored and len(stored) == 33
    model, _ = load_checkpoint(cfg.work_dir / "model")
    client = create_app(cfg).test_client()
    for rel, code in stored.items():
        data = (Path(cfg.data.data_dir) / rel).read_bytes()
        # server: the upload, decoded at its own size, resized inside the model
        resp = client.post("/api/search", data={"image": (io.BytesIO(data), Path(rel).name), "radius": "0"})
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["code"] == code, rel
        # client: `hashveil protect/query` load the file at its own size and run the model
        assert to_hex(model.encode(to_tensor(load_image(Path(cfg.data.data_dir) / rel))[None])[0]) == code
    assert len(set(stored.values())) > 5  # the untrained model still tells these images apart


def test_evaluation_hashes_the_database_as_the_builder(odd_service) -> None:
    cfg = odd_service
    wb = Workbench(cfg, EvalOptions.quick_profile(queries=4))
    bench = wb.bench(cfg.model.hash_bits)
    images, splits = wb.data()
    stored = _stored(cfg)
    assert [c.tobytes().hex() for c in bench.db_codes] == [stored[images.paths[i]] for i in splits.database]
    model, _ = load_checkpoint(cfg.work_dir / "model")
    native = [to_tensor(load_image(images.root / images.paths[i])) for i in wb.sample().index]
    np.testing.assert_array_equal(bench.codes, np.concatenate([model.encode(x[None]) for x in native]))
    # and the loader (odd sizes in one batch) agrees with the whole model on native sizes
    every = np.arange(len(images))
    loader_codes = encode_images(model, images, every, batch_size=7, workers=0, device="cpu")
    one_by_one = [model.encode(to_tensor(load_image(images.root / p))[None])[0] for p in images.paths]
    np.testing.assert_array_equal(loader_codes, np.stack(one_by_one))
    assert ImageDataset(images, every[:1], 32)[0][0].shape == (3, 32, 32)


def test_a_protected_photo_is_at_its_target_on_the_server(odd_service, tmp_path) -> None:
    """The client attacks the model's own resize, so the server sees the code the client reports."""
    cfg = override(
        odd_service, privacy={"eps": 16 / 255, "steps": 30, "step_size": 2 / 255, "step_rule": "sign"}
    )
    model, _ = load_checkpoint(cfg.work_dir / "model")
    store = Store(cfg.db_url)
    protector = Protector(
        model, cfg.privacy, lambda label: store.codes_with_label(label, 3, 0)[1], store.label_counts()
    )
    photo = shutil.copy(Path(cfg.data.data_dir) / PHOTO, tmp_path / "photo.jpg")
    image = to_tensor(load_image(photo))
    assert image.shape == (3, 600, 512)
    protected = protector.protect(image, "untargeted")
    assert protected.image.shape == image.shape  # protected at the photo's own size
    png = protected.png()
    assert to_tensor(decode_image(png)).shape == image.shape
    resp = create_app(cfg).test_client().post("/api/search", data={"image": (io.BytesIO(png), "p.png")})
    assert resp.get_json()["code"] == to_hex(protected.code)
    assert protected.distance < cfg.model.hash_bits  # it moved toward the complement of its code


def test_features_cached_before_the_resizer_are_reused_only_without_resizing(
    odd_service, tiny_data, tmp_path
):
    """A cache keyed without the resizer is valid only when no image needed resizing."""
    import hashlib

    from safetensors.torch import save_file

    from index_builder.features import backbone_digest, cached_features, images_digest

    model, _ = load_checkpoint(odd_service.work_dir / "model")  # small_cnn at 32 px
    kw = dict(batch_size=16, workers=0, device="cpu")
    for folder, expect_reuse in ((tiny_data, True), (Path(odd_service.data.data_dir), False)):
        images = open_dataset(DataConfig(dataset="folder", data_dir=str(folder)), tmp_path, 32)
        idx = np.arange(10)
        old = hashlib.sha256(
            (backbone_digest(model, resizer="") + images_digest(images, idx)).encode()
        ).hexdigest()
        cache = tmp_path / folder.name
        cache.mkdir()
        marker = torch.full((10, 512), 7.0)  # not what the backbone computes: shows which one was read
        save_file({"features": marker}, cache / f"{old[:32]}.safetensors")
        feats = cached_features(model, images, idx, cache, **kw)
        assert torch.equal(feats, marker) == expect_reuse, folder
        assert len(list(cache.glob("*.safetensors"))) == 2  # the new key is written (or linked) beside it
