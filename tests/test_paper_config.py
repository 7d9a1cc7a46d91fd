"""The paper's configuration (VGG-11 trained end to end on 224 px images) runs through every stage.

Random-init VGG-11 (nothing downloads; users name a local torchvision state_dict in
model.pretrained) on a handful of generated images: this checks the plumbing of the paper's
path (train, hash, index, search, protect), not its accuracy, which needs a GPU and real data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.core.codes import hamming
from retrieval.core.config import Config, override
from testkit.data import make_folder_dataset

pytestmark = pytest.mark.slow


def test_vgg11_at_224px_trains_indexes_searches_and_protects(tmp_path):
    from hashveil.local import local_protector
    from index_builder.build import build_index
    from index_builder.dpsh import train
    from retrieval.core.imaging import load_image, to_tensor
    from retrieval.service.search import open_searcher

    data = make_folder_dataset(tmp_path / "data", n=24, size=64)
    cfg = override(
        Config(),
        paths={"work_dir": tmp_path / "work"},
        model={
            "backbone": "vgg11",
            "hash_bits": 16,
            "image_size": 224,
            "freeze_backbone": False,
            "device": "cpu",
        },
        data={"dataset": "folder", "data_dir": str(data), "num_query": 4, "num_train": 16, "num_database": 0},
        train={"epochs": 1, "batch_size": 8},
        index={"batch_size": 8, "workers": 0},
        privacy={"steps": 3, "n_anchor": 3},
    )
    torch.manual_seed(0)
    card = train(cfg).card
    assert (card.backbone, card.image_size, card.hash_bits) == ("vgg11", 224, 16)

    built = build_index(cfg)
    searcher = open_searcher(cfg)
    assert built.images == searcher.index.ntotal == searcher.store.count() == 20
    assert searcher.model.image_size == 224

    # every database image, hashed again through the served model, finds exactly the items whose
    # stored codes are within the radius (brute force over the store's codes)
    rows = searcher.store.images(searcher.index.ids().tolist())
    ids = np.array(sorted(rows))
    stored = np.stack([np.frombuffer(rows[i].code, np.uint8) for i in ids])
    x = torch.stack([to_tensor(load_image(searcher.image_path(int(i)))) for i in ids[:3]])
    codes, hits = searcher.search_images(x, radius=2)
    assert (codes == stored[:3]).all()
    for code, found in zip(codes, hits):
        d = hamming(code.reshape(1, -1), stored)[0]
        want = sorted(zip(d[d <= 2].tolist(), ids[d <= 2].tolist()))
        assert [(h.distance, h.id) for h in found] == want

    protector = local_protector(cfg.work_dir / "model", cfg.db_url, cfg.privacy, cfg.model.device)
    p = protector.protect(x[0], "semantic")
    assert p.image.shape == x[0].shape and p.image.device.type == "cpu"
    assert float((p.image - x[0]).abs().max()) <= cfg.privacy.eps + 1e-6
    assert p.iterations <= 3 and p.png()[:8] == b"\x89PNG\r\n\x1a\n"
