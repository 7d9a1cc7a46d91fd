"""The attacker ladder (audit.attackers), one test per rung, on the tiny trained colour dataset.

References are independent of the attackers: a brute-force Hamming scan over the store's codes,
Pillow re-encodes made here, a numpy pixel distance, hand-computed AUCs and shares, and a
synthetic client whose mapping from true to sent label is known.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from audit.attackers import ATTACKERS, LadderSettings, build_ladder, parse_names
from audit.attackers.inversion import KnowsTheClient, best_threshold, load_table, save_table
from audit.attackers.naive import NaiveServer
from audit.attackers.own_protections import OwnUpload
from audit.attackers.pixel_knn import PixelKNN
from audit.attackers.reencoding import ReencodingServer
from audit.attackers.second_model import SecondModel
from audit.attackers.training import SecondModelSettings, database, second_model
from audit.ladder import LadderEntry, Upload, roc_auc, run_ladder, summarise
from audit.ladder_report import format_table, markdown, protects_from
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from retrieval.core.codes import hamming
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.votes import majority_label
from retrieval.service.search import open_searcher

pytestmark = pytest.mark.slow
RADIUS = 2


@pytest.fixture(scope="module")
def world(tiny_trained, tmp_path_factory):
    """The server's searcher, its database at 16 px, and the query split as uploads with labels."""
    cfg, _ = tiny_trained
    searcher = open_searcher(cfg)
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    queries = [
        ((images.root / images.paths[i]).read_bytes(), images.label_sets([i])[0]) for i in splits.query
    ]
    cache = tmp_path_factory.mktemp("attackers")
    return {"searcher": searcher, "db": database(searcher, 16, cache), "queries": queries, "cache": cache}


def _brute_label(searcher, code: np.ndarray) -> str | None:
    """Majority label of the store's items within RADIUS of ``code`` (else the 10 nearest by distance, id)."""
    store = searcher.store
    ids = sorted({int(i) for n in store.label_names() for i in store.codes_with_label(n, 10**6, 0)[0]})
    rows = store.images(ids)
    codes = np.array([np.frombuffer(rows[i].code, np.uint8) for i in ids])
    d = hamming(code.reshape(1, -1), codes)[0]
    near = [j for j in np.lexsort((ids, d)) if d[j] <= RADIUS] or list(np.lexsort((ids, d))[:10])
    return majority_label(rows[ids[j]].labels for j in near)[0]


def _share(guesses, truths) -> float:
    return float(np.mean([g in t for g, t in zip(guesses, truths)]))


def test_naive_server_reads_what_a_brute_force_scan_reads(world) -> None:
    searcher, queries = world["searcher"], world["queries"][:20]
    naive = NaiveServer(searcher, RADIUS)
    guesses = naive.infer_many([q for q, _ in queries])
    for (data, _), guess in zip(queries, guesses):
        code = searcher.model.encode(to_tensor(decode_image(data))[None])[0]
        assert guess == _brute_label(searcher, code)
    assert naive.infer(queries[0][0]) == guesses[0]
    assert _share(guesses, [t for _, t in queries]) >= 0.8  # plain uploads: the server reads them


def _pil_bytes(data: bytes, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_reencoding_server_reencodes_before_its_model(world) -> None:
    searcher, queries = world["searcher"], world["queries"][:8]
    naive = NaiveServer(searcher, RADIUS)
    for name, fmt, kw in (("jpeg75", "JPEG", {"quality": 75}), ("webp80", "WEBP", {"quality": 80})):
        attacker = ReencodingServer(searcher, RADIUS, name)
        data = [q for q, _ in queries]
        redone = [_pil_bytes(d, fmt, **kw) for d in data]
        assert attacker.infer_many(data) == naive.infer_many(redone)
        codes = [searcher.model.encode(to_tensor(decode_image(d))[None]) for d in (*data, *redone)]
        flips = [int(hamming(a, b)[0, 0]) for a, b in zip(codes[: len(data)], codes[len(data) :])]
        assert attacker.detect_many(data) == flips
    half = ReencodingServer(searcher, RADIUS, "resize0.5")
    img = Image.open(io.BytesIO(queries[0][0])).convert("RGB")
    w, h = img.size
    small = img.resize((w // 2, h // 2), Image.Resampling.BICUBIC).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    assert half.infer(queries[0][0]) == naive.infer(buf.getvalue())
    with pytest.raises(ValueError, match="transform must be one of"):
        ReencodingServer(searcher, RADIUS, "sent")


def test_pixel_knn_matches_numpy_and_ignores_a_small_perturbation(world) -> None:
    db, queries = world["db"], world["queries"][:20]
    knn = PixelKNN(db, k=5)
    flat = db.pixels.numpy().reshape(len(db.ids), -1).astype(np.float64) / 255
    for data, _ in queries[:5]:
        small = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((16, 16)), dtype=np.float64)
        q = small.transpose(2, 0, 1).reshape(-1) / 255
        order = np.argsort(((flat - q) ** 2).sum(axis=1), kind="stable")[:5]
        expected = majority_label(db.label_sets(order))[0]
        assert knn.infer(data) == expected
    data = [q for q, _ in queries]
    assert _share(knn.infer_many(data), [t for _, t in queries]) >= 0.9
    rng = np.random.default_rng(0)
    noisy = []
    for d in data:  # +-8/255 of noise on every pixel: what a protection may change, and more
        a = np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), dtype=np.int16)
        a = np.clip(a + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        noisy.append(buf.getvalue())
    assert _share(knn.infer_many(noisy), [t for _, t in queries]) >= 0.9


def test_second_model_is_trained_by_the_attacker_and_reads_plain_uploads(world) -> None:
    searcher, db, queries = world["searcher"], world["db"], world["queries"]
    settings = SecondModelSettings(image_size=16, epochs=8, batch_size=32)
    model = second_model(db, searcher.hash_bits, settings, world["cache"])
    assert model.backbone_name == "small_cnn" and model.image_size == 16
    again = second_model(db, searcher.hash_bits, settings, world["cache"])  # read back from the cache
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    naive = NaiveServer(searcher, RADIUS)
    attacker = SecondModel(model, db, RADIUS, naive)
    data, truths = [q for q, _ in queries], [t for _, t in queries]
    guesses = attacker.infer_many(data)
    chance = max(Counter(t[0] for t in truths).values()) / len(truths)
    assert _share(guesses, truths) >= chance + 0.3
    scores = attacker.detect_many(data)
    agree = [s for s, g, n in zip(scores, guesses, naive.infer_many(data)) if g == n]
    assert agree and all(s == 0 for s in agree)  # both models read the same label: nothing detected
    assert all(0 <= s <= 1 for s in scores)


def _synthetic_client(queries, mapping) -> list[OwnUpload]:
    """Uploads a client would make if it sent, for an image of true label y, an image that the
    server reads as mapping(y): images of label mapping(y), claimed as y."""
    by_label: dict[str, list[bytes]] = {}
    for data, truth in queries:
        by_label.setdefault(truth[0], []).append(data)
    out = []
    for true in sorted(by_label):
        for data in by_label[mapping(true)]:
            out.append(OwnUpload(data, true, "semantic"))
    return out


def test_knowing_attacker_inverts_a_predictable_client_and_not_a_random_one(world) -> None:
    searcher, queries = world["searcher"], [q for q in world["queries"] if len(q[1]) == 1]
    labels = sorted({t[0] for _, t in queries})
    shift = {a: labels[(i + 1) % len(labels)] for i, a in enumerate(labels)}  # a fixed target per label
    train, test = queries[::2], queries[1::2]
    inverter = KnowsTheClient.learn(searcher, RADIUS, _synthetic_client(train, shift.get))
    held_out = _synthetic_client(test, shift.get)
    data, truths = [u.upload for u in held_out], [(u.true_label,) for u in held_out]
    naive = NaiveServer(searcher, RADIUS).infer_many(data)
    assert _share(naive, truths) <= 0.2  # the server alone is misled...
    assert _share(inverter.infer_many(data), truths) >= 0.8  # ...one who knows the client is not
    rng = np.random.default_rng(0)
    other = lambda true: str(rng.choice([lab for lab in labels if lab != true]))  # noqa: E731
    random_train = [OwnUpload(u.upload, u.true_label, u.group) for u in _random_client(train, other)]
    guesser = KnowsTheClient.learn(searcher, RADIUS, random_train)
    fresh = _random_client(test, other)
    share = _share(guesser.infer_many([u.upload for u in fresh]), [(u.true_label,) for u in fresh])
    assert share <= 0.6  # about 1/3 by construction: nothing to invert


def _random_client(queries, other) -> list[OwnUpload]:
    """For each image, the claim that it was sent for a random *other* true label."""
    return [OwnUpload(data, other(truth[0]), "semantic") for data, truth in queries]


def test_knowing_attackers_table_threshold_and_backoff(tmp_path, world) -> None:
    # protected [2.1, 3.5, 1.5] against plain [0.2, 0.3, 1.0]: from 1.5 on, both are told apart
    assert best_threshold(np.array([2.1, 3.5, 1.5]), np.array([0.2, 0.3, 1.0])) == pytest.approx(1.5)
    table = {
        ("a", "a", 1): Counter({"b": 3, "c": 1}),
        ("a", "b", 1): Counter({"c": 2}),
        ("d", "d", 0): Counter({"d": 4}),
    }
    save_table(tmp_path / "t.json", table, 0.25)
    assert load_table(tmp_path / "t.json") == (table, 0.25)
    attacker = KnowsTheClient(world["searcher"], RADIUS, table, 0.25)
    assert attacker.lookup(("a", "a", 1)) == "b"
    assert attacker.lookup(("a", "z", 1)) == "b"  # backs off to (sent, looks protected): b 3, c 3 -> b
    assert attacker.lookup(("q", "q", 0)) == "q"  # never seen: the label after JPEG
    assert attacker.lookup(("a", "b", 1)) == "b"  # a cell of 2 < MIN_CELL backs off to (sent, protected)


def test_roc_auc_and_summary_by_hand() -> None:
    # pairs (pos > neg): 0.9 beats 4; 0.35 beats 0.1 and ties 0.35; 0.5 beats 3 -> 8.5 / 12
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0.9, 0.35, 0.5]) == pytest.approx(8.5 / 12)
    assert roc_auc([], [1.0]) is None

    class Fake:
        def __init__(self, name, detects):
            self.name, self.rung, self.description, self.detects = name, "naive", name, detects

    entries = [
        LadderEntry(1, "plain", ("x",), {"a": "x", "b": "y"}, {"a": 0.1}),
        LadderEntry(2, "plain", ("y",), {"a": "y", "b": "y"}, {"a": 0.2}),
        LadderEntry(3, "semantic", ("x",), {"a": "z", "b": "x"}, {"a": 0.9}),
        LadderEntry(4, "semantic", ("y",), {"a": "x", "b": "y"}, {"a": 0.15}),
        LadderEntry(5, "semantic", None, {"a": "x", "b": "x"}, {"a": 0.3}),
    ]
    s = summarise(entries, [Fake("a", True), Fake("b", False)])
    assert s.groups == ("plain", "semantic") and s.labelled == {"plain": 2, "semantic": 2}
    assert s.shares == {"a": {"plain": 1.0, "semantic": 0.0}, "b": {"plain": 0.5, "semantic": 1.0}}
    assert s.chance == {"plain": 0.5, "semantic": 0.5}
    # detector a: plain [0.1, 0.2] against semantic [0.9, 0.15, 0.3]: 2 + 1 + 2 of 6 pairs
    assert s.auc == {"a": {"semantic": pytest.approx(5 / 6)}}
    assert "a" in format_table(s) and "| naive | a | 100 % | 0 % | 0.83 |" in markdown(s)
    assert "| semantic | a (0 %) | b (100 %; 50 %) |" in protects_from(s)  # defeated: <= chance + 10 points


def test_the_whole_ladder_on_logged_uploads(world, tiny_trained) -> None:
    """build_ladder builds every rung and run_ladder gives each upload every attacker's reading."""
    cfg, _ = tiny_trained
    settings = LadderSettings(
        names=parse_names("all"),
        radius=RADIUS,
        pixel_size=16,
        second_model=SecondModelSettings(image_size=16, epochs=2, batch_size=32),
        inversion_per_label=2,
        privacy=cfg.privacy,
        seed=3,
    )
    attackers = build_ladder(world["searcher"], settings, world["cache"])
    assert tuple(a.name for a in attackers) == ATTACKERS
    assert {a.rung for a in attackers} == {"naive", "re-encoding", "second model", "knows the client"}
    uploads = [Upload(i, q, "plain", t) for i, (q, t) in enumerate(world["queries"][:6])]
    uploads.append(Upload(99, b"not an image", "plain", ("red",)))
    entries = run_ladder(attackers, uploads)
    assert [e.id for e in entries] == list(range(6))  # the unreadable upload is skipped, with a warning
    naive = NaiveServer(world["searcher"], RADIUS).infer_many([u.data for u in uploads[:6]])
    assert [e.guesses["naive"] for e in entries] == naive
    assert all(set(e.scores) == {a.name for a in attackers if a.detects} for e in entries)
    with pytest.raises(ValueError, match="attackers must be 'all' or names"):
        parse_names("naive,telepathy")


def test_audit_command_runs_the_ladder_per_logged_upload(world, tiny_trained, tmp_path) -> None:
    """`hashveil audit --attackers all` on a real log: a line per upload, the table, and JSON whose
    naive readings are the replay's (the same server retrieval, computed twice)."""
    import json

    from click.testing import CliRunner

    from hashveil.cli import main
    from testkit.data import write_config

    cfg, _ = tiny_trained
    searcher = world["searcher"]
    ids, truths = [], {}
    for n, (data, truth) in enumerate(world["queries"][:4]):
        code = searcher.encode(to_tensor(decode_image(data))[None])[0]
        hits = searcher.search_code(code, RADIUS)
        log_id = searcher.store.log_query(
            code=code.tobytes(), radius=RADIUS, k=None, result_ids=[h.id for h in hits],
            upload=data, upload_type="image", remote_addr="127.0.0.1",
        )  # fmt: skip
        ids.append(log_id)
        truths[log_id] = truth
    (tmp_path / "labels.csv").write_text("id,labels\n" + "".join(f"{i},{'|'.join(truths[i])}\n" for i in ids))
    (tmp_path / "groups.csv").write_text(
        "id,group\n" + "".join(f"{i},{'plain' if n < 2 else 'semantic'}\n" for n, i in enumerate(ids))
    )
    config = write_config(tmp_path / "c.toml", cfg)
    args = ["--config", str(config), "audit", "--limit", "4", "--labels", str(tmp_path / "labels.csv")]
    args += ["--groups", str(tmp_path / "groups.csv"), "--attackers", "all", "--inversion-per-label", "1"]
    args += ["--second-model-epochs", "1", "--attacker-seed", "4", "--json", str(tmp_path / "out.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for n, i in enumerate(ids):
        assert f"#{i} {'plain' if n < 2 else 'semantic'} true {'|'.join(truths[i])}: naive=" in result.output
    assert "AUC semantic" in result.output and "pixel-knn" in result.output
    out = json.loads((tmp_path / "out.json").read_text())
    replay = {e["log_id"]: e["view"]["inferred_label"] for e in out["audit"]["entries"]}
    entries = out["ladder"]["entries"]
    assert sorted(e["id"] for e in entries) == sorted(ids)
    assert all(e["guesses"]["naive"] == replay[e["id"]] for e in entries)
    assert set(entries[0]["guesses"]) == set(ATTACKERS)
    bad = CliRunner().invoke(main, ["--config", str(config), "audit", "--attackers", "naive,guess"])
    assert bad.exit_code == 1 and "attackers must be 'all' or names" in bad.output


def test_attackers_benchmark_on_tiny_data(tiny_trained, tmp_path) -> None:
    """benchmarks/attackers.py end to end against a `hashveil serve` child process."""
    import csv
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from testkit.data import write_config

    cfg, _ = tiny_trained
    root = Path(__file__).resolve().parents[1]
    config = write_config(tmp_path / "c.toml", cfg)
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "attackers.py"),
        "--config",
        str(config),
        "--per-label",
        "2",
    ]
    cmd += ["--inversion-per-label", "1", "--second-model-epochs", "1", "--pixel-size", "16", "--seed", "2"]
    cmd += ["--out", str(tmp_path), "--client-json", str(tmp_path / "attackers.json")]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "attackers.csv").open()))
    assert {(r["attacker"], r["group"]) for r in rows} == {
        (a, g) for a in ATTACKERS for g in ("plain", "semantic", "untargeted", "carrier")
    }
    assert all(r["uploads"] == "8" for r in rows)  # 2 per label, 4 labels, every group
    md = (tmp_path / "attackers.md").read_text()
    assert (
        "Written by `python -m benchmarks.attackers --config" in md
        and "## What each mode protects you from" in md
    )
    shown = json.loads((tmp_path / "attackers.json").read_text())
    assert shown["per_label"] == 2 and {r["attacker"] for r in shown["rows"]} == set(ATTACKERS)
    naive = next(r for r in rows if r["attacker"] == "naive" and r["group"] == "plain")
    assert float(naive["true_label_inferred"]) >= 0.75  # plain uploads leak on the trained tiny model
    assert "semantic: 8 protections" in run.stdout
