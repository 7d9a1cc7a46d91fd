"""A complete tiny service (untrained model, generated images, FAISS index, SQLite store, manifest)
built from scratch in a folder: what the API tests, the bad-input table and the fuzzer serve."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from retrieval.core.config import Config, override
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import file_sha256, save_checkpoint
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import Manifest, write_manifest
from retrieval.service.records import ImageRow
from retrieval.service.store import Store
from testkit.data import untrained_model

LABELS = ("circle", "square", "stripe", "noise")
N_IMAGES = 200
BITS = 16
FIRST_ID, ID_STEP = 1000, 7  # image i has id FIRST_ID + ID_STEP * i


def random_png(rng: np.random.Generator, size: int = 32) -> bytes:
    """Smooth colour blocks plus noise: varied enough that a random CNN gives varied codes."""
    cells = rng.integers(0, 256, (*(2 * [int(rng.integers(2, 6))]), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(cells).resize((size, size), Image.Resampling.BILINEAR), np.int16)
    img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def build_tiny_service(tmp_path: Path) -> Config:
    """A complete model + images + index + store + manifest set in tmp_path; returns its Config."""
    cfg = override(
        Config(),
        paths={"work_dir": tmp_path},
        model={"backbone": "small_cnn", "hash_bits": BITS, "image_size": 32},
        index={"db_url": f"sqlite:///{tmp_path / 'tiny.sqlite'}"},
        server={"radius": 2, "max_k": 50, "max_upload_mb": 1},
    )
    model = untrained_model(cfg.model)
    card = save_checkpoint(
        model, tmp_path / "model", model.card(dataset="tiny", label_names=LABELS, metrics={"map": 0.5})
    )
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    rows, tensors = [], []
    for i in range(N_IMAGES):
        data = random_png(rng)
        (root / f"{i:03d}.png").write_bytes(data)
        tensors.append(to_tensor(decode_image(data)))
        labels = tuple(sorted(rng.choice(LABELS, size=rng.integers(1, 3), replace=False).tolist()))
        rows.append((FIRST_ID + ID_STEP * i, f"{i:03d}.png", labels))
    codes = model.encode(torch.stack(tensors))
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    index = BinaryIndex.create(BITS, "flat")
    index.add(codes, ids)
    index.save(tmp_path / "index" / "index.faiss")
    store = Store(cfg.db_url)
    store.create()
    store.replace_images(
        (ImageRow(i, p, lab, "database", c.tobytes()) for (i, p, lab), c in zip(rows, codes)), LABELS
    )
    write_manifest(
        tmp_path / "index" / "manifest.json",
        Manifest(
            model_sha256=card.sha256,
            hash_bits=BITS,
            index_file="index.faiss",
            index_kind="flat",
            index_sha256=file_sha256(tmp_path / "index" / "index.faiss"),
            count=N_IMAGES,
            store_fingerprint=store.fingerprint(),
            db_url=cfg.db_url,
            image_root=str(root.resolve()),
            dataset="tiny",
            created=datetime.now(timezone.utc).isoformat(),
        ),
    )
    store.close()
    return cfg


CLIENT_BASE = "http://127.0.0.1:5001"


def opened_client(app: Flask) -> FlaskClient:
    """A test client of the privacy client app that has opened its launch URL, as the user's
    browser does; pass ``base_url=CLIENT_BASE`` with every request."""
    from webui.launch import launch_url  # testkit imports the web layer only when asked

    http = app.test_client()
    r = http.get(launch_url(app, 5001).removeprefix(CLIENT_BASE), base_url=CLIENT_BASE)
    assert r.status_code == 303, r.get_data()[:200]
    return http
