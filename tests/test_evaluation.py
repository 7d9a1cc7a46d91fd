"""evaluation.run: every experiment end to end (quick profile) on the tiny trained model,
checked against independent computations: MAP from the store's codes, a hand-computed t-MAP."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from evaluation.gradcam import grad_cam, last_conv
from evaluation.report import read_csv
from evaluation.run import EXPERIMENTS, EvalOptions, run_all, run_experiment, t_map
from index_builder.datasets import open_dataset
from index_builder.features import encode_images
from index_builder.splits import make_splits
from retrieval.core.codes import pack
from retrieval.core.config import override
from retrieval.core.metrics import mean_average_precision
from retrieval.core.model import load_checkpoint
from retrieval.service.store import Store

EPS_LIST = (0.01, 0.03, 0.05)
QUERIES = 8


@pytest.fixture(scope="module")
def quick(tiny_trained, tmp_path_factory):
    """run_all once in the quick profile. The tiny colour model only moves under a visible budget,
    so protection uses eps 0.5 with 16/255 steps (Table 2 and Figure 3 keep their small eps)."""
    cfg, _ = tiny_trained
    cfg = override(cfg, privacy={"eps": 0.5, "step_size": 16 / 255, "step_rule": "sign"})
    out = tmp_path_factory.mktemp("eval")
    options = EvalOptions.quick_profile(queries=QUERIES, rnm_steps=8, tanh_steps=12, eps_list=EPS_LIST)
    return cfg, out, options, run_all(cfg, out, options)


def rows_of(out, name: str) -> list[dict[str, str]]:
    return read_csv(out / f"{name}.csv")


def test_run_all_writes_every_experiment(quick) -> None:
    _, out, _, results = quick
    text = results.read_text()
    for name in EXPERIMENTS:
        for suffix in ("csv", "md", "png"):
            path = out / f"{name}.{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert (out / f"{name}.md").read_text().strip() in text
    protocol = json.loads((out / "table1_queries.json").read_text())
    assert len(protocol["query_index"]) == len(protocol["target_labels"]) == QUERIES
    assert all(len(ids) == 9 for ids in protocol["anchor_ids"])
    assert all(p in ids for p, ids in zip(protocol["p2p_id"], protocol["anchor_ids"]))


def test_table1_original_map_matches_a_direct_computation(quick) -> None:
    cfg, out, _, _ = quick
    rows = rows_of(out, "table1")
    assert [(r["method"], r["metric"]) for r in rows] == [
        ("Noise", "t-MAP"),
        ("Tanh-P2P", "t-MAP"),
        ("Tanh-P2S", "t-MAP"),
        ("RNM-P2P", "t-MAP"),
        ("RNM-P2S", "t-MAP"),
        ("Original", "t-MAP"),
        ("P2P targets", "t-MAP"),
        ("P2S anchors", "t-MAP"),
        ("Original", "MAP"),
    ]
    assert all(0 <= float(r["value"]) <= 1 and r["bits"] == "16" for r in rows)
    assert float(rows[0]["paper_flickr25k"]) == pytest.approx(0.0076)
    # independent path: the service's stored database codes and the whole model on the images
    model, _ = load_checkpoint(cfg.work_dir / "model")
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    query = np.array(json.loads((out / "table1_queries.json").read_text())["query_index"])
    q_codes = encode_images(model, images, query, batch_size=16, workers=0, device="cpu")
    stored = Store(cfg.db_url).images(splits.database.tolist())
    db_codes = np.stack([np.frombuffer(stored[int(i)].code, np.uint8) for i in splits.database])
    direct = mean_average_precision(
        q_codes,
        images.labels[query],
        db_codes,
        images.labels[splits.database],
        splits.database,
        cfg.train.map_topk,
    ).map
    assert float(rows[-1]["value"]) == pytest.approx(direct, abs=1e-12)
    # the P2P ceiling: the stored codes of the P2P items, scored against the target labels
    protocol = json.loads((out / "table1_queries.json").read_text())
    p2p = np.stack([np.frombuffer(stored[i].code, np.uint8) for i in protocol["p2p_id"]])
    target = np.array([[name in names for name in images.label_names] for names in protocol["target_labels"]])
    ceiling = t_map(
        p2p,
        target.astype(np.uint8),
        db_codes,
        images.labels[splits.database],
        splits.database,
        cfg.train.map_topk,
    )
    assert float(rows[6]["value"]) == pytest.approx(ceiling.map, abs=1e-12)
    # with a generous budget the targeted methods beat the unmodified queries' t-MAP
    value = {(r["method"], r["metric"]): float(r["value"]) for r in rows}
    assert value["RNM-P2S", "t-MAP"] > value["Original", "t-MAP"]
    assert value["Tanh-P2S", "t-MAP"] > value["Original", "t-MAP"]
    assert float(rows[4]["reached"]) > float(rows[0]["reached"])  # RNM-P2S versus Noise


def test_table2_and_table3_rows(quick) -> None:
    _, out, _, _ = quick
    rows = rows_of(out, "table2")
    assert [(r["method"], float(r["eps"])) for r in rows] == [
        (m, e) for e in EPS_LIST for m in ("Noise", "Tanh-P2P", "RNM-P2P")
    ]
    assert all(0 <= float(r["t_map"]) <= 1 and float(r["psnr_db"]) > 20 for r in rows)
    assert float(next(r for r in rows if r["method"] == "RNM-P2P")["paper_nuswide_24bits"]) == pytest.approx(
        0.5244
    )
    rows = {r["method"]: r for r in rows_of(out, "table3")}
    assert list(rows) == ["Noise", "Tanh-P2P", "RNM-P2P", "Tanh-complement", "RNM-complement", "Original"]
    assert all(0 <= float(r["value"]) <= 1 for r in rows.values())
    original = float(rows["Original"]["value"])
    assert float(rows["RNM-P2P"]["value"]) < original and float(rows["Tanh-complement"]["value"]) < original


def test_figure2_traces(quick) -> None:
    cfg, out, options, _ = quick
    rows = rows_of(out, "figure2")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    assert methods == ["rnm", "tanh"]
    curves = {}
    for m in methods:
        curves[m] = [float(r["mean_distance"]) for r in rows if r["method"] == m]
        assert len(curves[m]) == options.tanh_steps + 1 and all(0 <= d <= 16 for d in curves[m])
    starts = {float(r["mean_distance"]) for r in rows if r["iteration"] == "0"}
    assert len(starts) == 1  # every method starts from the same images and targets
    summary = {r["method"]: r for r in rows_of(out, "figure2_summary")}
    for m in methods:  # the summary's distances are the curve's
        assert float(summary[m]["distance_at_10"]) == pytest.approx(curves[m][10])
        assert float(summary[m]["distance_final"]) == pytest.approx(curves[m][-1])
        assert 0 <= float(summary[m]["median_iterations"]) <= options.tanh_steps
    ratio = float(summary["tanh"]["mean_iterations"]) / float(summary["rnm"]["mean_iterations"])
    assert float(summary["rnm"]["tanh_over_rnm_mean"]) == pytest.approx(ratio)


def test_figure3_quality_and_privacy(quick) -> None:
    _, out, _, _ = quick
    rows = rows_of(out, "figure3")
    assert rows[0]["method"] == "original" and rows[0]["psnr_db"] == ""
    names = [r["method"] for r in rows[1:]]
    assert names == [
        "mosaic",
        "brightness",
        "transparency",
        "gaussian_noise",
        "blur",
        "adversarial (RNM-P2S)",
        "adversarial (RNM-P2S)",
    ]
    assert all(0 <= float(r["map"]) <= 1 for r in rows)
    adversarial = [float(r["psnr_db"]) for r in rows if r["method"].startswith("adversarial")]
    traditional = [float(r["psnr_db"]) for r in rows[1:] if not r["method"].startswith("adversarial")]
    assert min(adversarial) > max(traditional) > 0  # small eps keeps far more quality


def test_figure4_gradcam(quick, tiny_trained) -> None:
    cfg, out, options, _ = quick
    rows = rows_of(out, "figure4")
    assert len(rows) == options.figure4_images * 7
    for r in rows:
        assert -1 <= float(r["cam_correlation"]) <= 1 + 1e-6 and 0 <= float(r["cam_entropy"]) <= 1
        if r["variant"] == "original":
            assert float(r["cam_correlation"]) == pytest.approx(1.0) and r["hamming_to_original"] == "0"
    model, _ = load_checkpoint(cfg.work_dir / "model")
    assert last_conv(model.backbone) is model.backbone.body[3]
    cam = grad_cam(model, torch.rand(3, 3, 32, 32))
    assert cam.shape == (3, 32, 32) and float(cam.min()) >= 0
    assert torch.allclose(cam.flatten(1).amax(dim=1), torch.ones(3))


def test_t_map_by_hand() -> None:
    """Query code 0; items at distances 0..3 with ids out of row order; target label column 1."""
    bits = np.zeros((5, 16))
    for row, d in enumerate((3, 0, 1, 2, 1)):
        bits[row, :d] = 1
    codes = pack(bits * 2 - 1)
    db_ids = np.array([13, 10, 12, 11, 14])
    labels = np.array([[1, 1], [1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.uint8)
    query = pack(-np.ones((1, 16)))
    # ranking by (distance, id): 10 (d0, A), 12 (d1, B), 14 (d1, A), 11 (d2, B), 13 (d3, A|B)
    # relevant to B: ranks 2, 4, 5 -> AP = (1/2 + 2/4 + 3/5) / 3
    result = t_map(query, np.array([1]), codes, labels, db_ids)
    assert result.map == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # top 3: 10, 12, 14 -> one relevant at rank 2 -> AP@3 = 1/2
    assert t_map(query, np.array([1]), codes, labels, db_ids, topk=3).map == pytest.approx(0.5)
    # relevant to A: ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3; t-MAP is MAP with a one-hot label
    assert t_map(query, np.array([0]), codes, labels, db_ids).map == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    with pytest.raises(ValueError, match="label columns"):
        t_map(query, np.array([2]), codes, labels, db_ids)


def test_other_bit_lengths_train_once(tiny_trained, tmp_path) -> None:
    """A bit length other than the trained one gets its own model, reused on the next run."""
    cfg, _ = tiny_trained
    cfg = override(cfg, train={"epochs": 1})
    options = EvalOptions.quick_profile(queries=4, bits=(24,), rnm_steps=2, tanh_steps=2)
    run_experiment("table1", cfg, tmp_path / "a", options)
    weights = cfg.work_dir / "eval" / "models" / "24bits" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    rows = rows_of(tmp_path / "a", "table1")
    assert {r["bits"] for r in rows} == {"24"} and not math.isnan(float(rows[-1]["value"]))
    run_experiment("table1", cfg, tmp_path / "b", options)
    assert weights.stat().st_mtime_ns == stamp
    assert rows_of(tmp_path / "b", "table1") == rows


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="bit lengths"):
        EvalOptions(bits=(20,))
    with pytest.raises(ValueError, match="eps"):
        EvalOptions(eps_list=(0.0,))
    with pytest.raises(ValueError, match="queries"):
        EvalOptions(queries=0)
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("table9", None, "x")  # type: ignore[arg-type]
