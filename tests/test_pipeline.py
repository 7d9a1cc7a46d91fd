"""End to end through the real command line: generated data -> train -> build -> serve -> HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from retrieval.core.codes import hamming, parse
from retrieval.core.config import override
from retrieval.core.imaging import load_image, to_png, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.store import Store
from testkit.data import tiny_config, write_config
from testkit.servers import free_port, start_serve, stop

pytestmark = pytest.mark.slow


def hashveil(cfg: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "hashveil", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_train_build_serve_query_over_http(tmp_path, tiny_data):
    port = free_port()
    cfg = write_config(
        tmp_path / "config.toml", override(tiny_config(tmp_path / "work", tiny_data), server={"port": port})
    )

    trained = hashveil(cfg, "train")
    assert "map@all" in trained
    model, card = load_checkpoint(tmp_path / "work" / "model")
    assert card.metrics["map@all"] > card.metrics["map@all_untrained"]

    built = hashveil(cfg, "build-index")
    assert "indexed 200 images" in built

    image = tiny_data / "img" / "0005.png"
    local = hashveil(cfg, "search", str(image), "--radius", "3", "--json")
    assert '"results"' in local

    server = start_serve(cfg, port)
    try:
        base = f"http://127.0.0.1:{port}"
        png = to_png(to_tensor(load_image(image)))
        answer = requests.post(
            f"{base}/api/search",
            files={"image": ("q.png", png, "image/png")},
            data={"radius": "3"},
            timeout=30,
        ).json()
        # independent reference: the model's code of the query against every stored code
        code = model.encode(to_tensor(load_image(image)).unsqueeze(0))
        assert answer["code"] == code[0].tobytes().hex()
        rows = Store(f"sqlite:///{tmp_path / 'work' / 'hashveil.sqlite'}").images(range(1000))
        ids = np.array(sorted(rows))
        codes = np.stack([np.frombuffer(rows[i].code, np.uint8) for i in ids])
        dist = hamming(parse(answer["code"], 16), codes)[0]
        expected = sorted((int(d), int(i)) for d, i in zip(dist, ids) if d <= 3)
        assert [(r["distance"], r["id"]) for r in answer["results"]] == expected
        assert len(expected) > 0
        # most results share the query's label: the trained model retrieves by content
        labels = [set(r["labels"]) for r in answer["results"]]
        assert np.mean(["green" in l for l in labels]) > 0.6
        bad = requests.post(
            f"{base}/api/search",
            data=b"not an image",
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert 400 <= bad.status_code < 500 and "error" in bad.json()
        assert requests.get(f"{base}/api/health", timeout=5).ok  # still serving
    finally:
        stop(server)
