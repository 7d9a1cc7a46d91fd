"""The ladder's decoy rung (audit.attackers.decoys): an attacker who sees the K uploads of one
query and must name the real one.

References: the features against a brute-force scan of the database, strategies against
synthetic queries with and without a planted tell, and the benchmark end to end on tiny data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.attackers.decoys import (
    FEATURES,
    DecoyFeatures,
    DecoyGroup,
    best_strategy,
    chosen_on_half,
    decoy_rung,
)
from retrieval.core.codes import hamming
from retrieval.core.config import override
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.votes import majority_label
from retrieval.service.search import open_searcher
from testkit.data import write_config
from testkit.service import random_png


@pytest.fixture(scope="module")
def cfg(tiny_trained):
    cfg, _ = tiny_trained
    # as test_decoys.py serves it: carriers reach most targets at this budget on the tiny model
    return override(cfg, privacy={"eps": 0.3, "steps": 60, "step_size": 0.03, "decoy_delay_s": 0.05})


def test_decoy_features_are_what_a_brute_force_scan_gives(cfg) -> None:
    searcher = open_searcher(cfg)
    store = searcher.store
    ids = sorted({int(i) for n in store.label_names() for i in store.codes_with_label(n, 10**6, 0)[0]})
    rows = store.images(ids)
    db = np.array([np.frombuffer(rows[i].code, np.uint8) for i in ids])
    first = sorted((Path(cfg.data.data_dir) / "img").glob("*.png"))[0]  # a query-split-like image
    uploads = (first.read_bytes(), random_png(np.random.default_rng(3), 32))
    group = DecoyGroup(uploads, (10.0, 10.5), ("red",), 0)
    x, labels = DecoyFeatures(searcher, 2).of(group)
    f = {name: x[:, FEATURES.index(name)] for name in FEATURES}
    assert f["position"].tolist() == [0, 1] and f["gap_s"].tolist() == [0, 0.5]
    assert f["file_bytes"].tolist() == [len(u) for u in uploads]
    for i, u in enumerate(uploads):
        code = searcher.encode(to_tensor(decode_image(u))[None])[0]
        d = hamming(code[None], db)[0]
        assert f["exact_matches"][i] == pytest.approx(np.log1p((d == 0).sum()))
        assert f["matches_in_radius"][i] == pytest.approx(np.log1p((d <= 2).sum()))
        assert f["nearest_distance"][i] == d.min()
        hits = searcher.search_code(code, 2) or searcher.hits(*searcher.index.knn(code[None], 10)[0])
        assert labels[i] == majority_label(h.labels for h in hits)[0]


def _synthetic(n: int, k: int, tell: str | None, seed: int = 0):
    """n queries of k uploads with random features; with ``tell``, the real upload has the largest."""
    rng = np.random.default_rng(seed)
    groups, xs, labels = [], [], []
    for q in range(n):
        real = int(rng.integers(k))
        x = rng.normal(size=(k, len(FEATURES)))
        x[:, 0] = np.arange(k)
        if tell:
            x[real, FEATURES.index(tell)] = x[:, FEATURES.index(tell)].max() + 1
        groups.append(DecoyGroup((b"",) * k, (0.0,) * k, (f"l{q}",), real))
        xs.append(x)
        labels.append([f"l{q}" if i == real else f"other{i}" for i in range(k)])
    return xs, labels, groups


def test_decoy_strategies_find_a_planted_tell_and_nothing_without_one() -> None:
    xs, labels, groups = _synthetic(200, 4, "file_bytes")
    rows = {r.name: r for r in decoy_rung(xs, labels, groups)}
    assert rows["most file_bytes"].named == rows["most file_bytes"].picked == 1.0
    assert rows["learned (all features, 2-fold)"].named >= 0.9  # learned on one half, scored on the other
    assert (
        rows["chance (a random pick)"].picked == 0.25
        and rows["always the real upload (ceiling)"].named == 1.0
    )
    assert best_strategy(list(rows.values())).named == 1.0
    assert chosen_on_half(xs, labels, groups) == 1.0
    xs, labels, groups = _synthetic(400, 4, None, seed=1)
    rows = decoy_rung(xs, labels, groups)
    assert all(r.named <= 0.33 for r in rows if not r.name.startswith("always"))  # chance 0.25, +2 sd
    assert chosen_on_half(xs, labels, groups) <= 0.33


@pytest.mark.slow
def test_decoy_benchmark_on_tiny_data(cfg, tmp_path) -> None:
    """`python -m benchmarks.attackers --decoys K` end to end against a `hashveil serve` child."""
    import csv
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    config = write_config(tmp_path / "c.toml", cfg)
    cmd = [sys.executable, "-m", "benchmarks.attackers", "--config", str(config), "--decoys", "3"]
    cmd += ["--decoy-trials", "8", "--seed", "1", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "decoys.csv").open()))
    assert {r["k"] for r in rows} == {"3"} and {r["queries"] for r in rows} == {"8"}
    assert {"first", "most file_bytes", "least exact_matches", "learned (all features, 2-fold)"} <= {
        r["strategy"] for r in rows
    }
    assert next(r for r in rows if r["strategy"].startswith("chance"))["picked"] == "0.3333"
    md = (tmp_path / "decoys.md").read_text()
    assert "Written by `python -m benchmarks.attackers --config" in md and "--decoys 3" in md
    assert "best strategy:" in run.stdout and "real carriers:" in md and "decoys carriers:" in md
