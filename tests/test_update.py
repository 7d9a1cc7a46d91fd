"""Changing a built collection without a rebuild (index_builder.update, `hashveil add` / `remove`):
the index, the store and the manifest change together, an interrupted update is finished or
undone, and a running server picks the change up (retrieval.service.reload)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hashveil.cli import main
from index_builder import update
from index_builder.build import build_index
from index_builder.update import add_images, recover, remove_images
from retrieval.core.codes import hamming, to_hex
from retrieval.core.config import Config, override
from retrieval.core.imaging import load_image, resize_square, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.manifest import MANIFEST_FILE, read_manifest
from retrieval.service.search import open_searcher
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.data import make_class_folders, save_untrained_model, tiny_config, write_config
from webui.service import mount_service_pages


@pytest.fixture()
def built(tmp_path) -> Config:
    """48 images in 4 class folders, an untrained model, an index of the 43 database images."""
    data = make_class_folders(tmp_path / "my photos")
    cfg = override(
        tiny_config(tmp_path / "work", data), data={"num_query": 0, "num_train": 0, "num_database": 0}
    )
    save_untrained_model(cfg)
    build_index(cfg)
    return cfg


def _photo(path: Path, colour=(200, 30, 30), seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    img = np.clip(np.full((40, 30, 3), colour) + rng.normal(0, 30, (40, 30, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def _reference_code(cfg: Config, path: Path) -> np.ndarray:
    """The code of a file as build-index computes it (resized to the model's size, then hashed)."""
    model, card = load_checkpoint(cfg.work_dir / "model")
    return model.encode(resize_square(to_tensor(load_image(path))[None], card.image_size))[0]


def _state(cfg: Config) -> tuple[bytes, dict[int, tuple]]:
    """The manifest's bytes and the store's rows: what must not change when an update fails."""
    store = Store(cfg.db_url)
    ids = open_searcher(cfg).index.ids().tolist()
    rows = {i: (r.path, r.labels, r.code) for i, r in store.images(ids).items()}
    return (cfg.work_dir / "index" / MANIFEST_FILE).read_bytes(), rows


def test_add_indexes_new_files_with_labels_from_their_folder(built: Config) -> None:
    root = Path(built.data.data_dir)
    before = open_searcher(built)
    first_id = int(before.index.ids().max()) + 1
    a = _photo(root / "red apples" / "new one é.png")
    b = _photo(root / "blue sky" / "deep" / "夕焼け.jpg", (40, 60, 220), seed=2)
    (root / "blue sky" / "deep" / "notes.txt").write_text("not an image")
    result = add_images(built, [a, root / "blue sky" / "deep"])
    assert result.added == [
        (first_id, "red apples/new one é.png"),
        (first_id + 1, "blue sky/deep/夕焼け.jpg"),
    ]
    assert result.skipped == {"not an image file": 1}

    after = open_searcher(built)  # verifies index, store and manifest against each other
    assert (
        after.index.ntotal
        == before.index.ntotal + 2
        == read_manifest(built.work_dir / "index" / MANIFEST_FILE).count
    )
    rows = after.store.images([first_id, first_id + 1])
    assert rows[first_id].labels == ("red apples",) and rows[first_id + 1].labels == ("blue sky",)
    for image_id, path in ((first_id, a), (first_id + 1, b)):
        code = _reference_code(built, path)
        assert rows[image_id].code == code.tobytes()
        ids, dist = after.index.search(code.reshape(1, -1), 0)[0]
        assert image_id in ids.tolist() and set(dist.tolist()) == {0}
    old_ids = set(before.index.ids().tolist())
    assert set(after.index.ids().tolist()) == old_ids | {first_id, first_id + 1}

    again = add_images(built, [a])  # already indexed: nothing changes
    assert again.added == [] and again.already == [(first_id, "red apples/new one é.png")]


def test_bad_additions_are_refused_and_change_nothing(built: Config, tmp_path: Path) -> None:
    root = Path(built.data.data_dir)
    state = _state(built)
    outside = _photo(tmp_path / "elsewhere" / "x.png")
    with pytest.raises(ValueError, match="is not inside the indexed folder"):
        add_images(built, [outside])
    (root / "green" / "list.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot be added: not an image file"):
        add_images(built, [root / "green" / "list.txt"])
    loose = _photo(root / "loose.png")  # no class folder: the layout gives it no label
    with pytest.raises(ValueError, match="cannot be added: not read by the layout"):
        add_images(built, [loose])
    inside = _photo(root / "green" / "fine.png")
    with pytest.raises(ValueError, match="pass the --layout the index was built with"):
        add_images(override(built, data={"layout": "flat"}), [inside])
    with pytest.raises(ValueError, match=r"no indexed image has id \[999999\]"):
        remove_images(built, [3, 999999])
    assert _state(built) == state
    assert sorted(p.name for p in (built.work_dir / "index").iterdir()) == sorted(
        ["manifest.json", "codes.faiss", "update.lock"]
    )


def test_remove_takes_images_out_of_index_and_store(built: Config) -> None:
    before = open_searcher(built)
    gone = before.index.ids()[:3].tolist()
    code = before.store.images(gone[:1])[gone[0]].code
    result = remove_images(built, gone)
    assert result.removed == sorted(gone)
    after = open_searcher(built)
    assert after.index.ntotal == before.index.ntotal - 3
    assert not set(gone) & set(after.index.ids().tolist()) and after.store.images(gone) == {}
    hits = after.index.search(np.frombuffer(code, np.uint8).reshape(1, -1), after.hash_bits)[0][0]
    assert gone[0] not in hits.tolist()
    root = Path(built.data.data_dir)
    top = int(after.index.ids().max())
    (first, _), *_ = add_images(built, [_photo(root / "green" / "a.png")]).added
    remove_images(built, [first])
    (second, _), *_ = add_images(built, [_photo(root / "green" / "b.png")]).added
    assert (first, second) == (top + 1, top + 2)  # a removed id is never given to another image
    assert all(
        (Path(built.data.data_dir) / p).is_file() for p in before.store.images(gone) or []
    )  # files stay


@pytest.mark.parametrize("crash_at", ["before the store", "after the store"])
def test_an_interrupted_update_is_undone_or_finished(built: Config, monkeypatch, crash_at: str) -> None:
    root = Path(built.data.data_dir)
    state = _state(built)
    new = _photo(root / "green" / "late.png", (40, 200, 60))

    def crash(*_a, **_k):
        raise KeyboardInterrupt("killed")

    if crash_at == "before the store":
        monkeypatch.setattr(Store, "change_images", crash)
    else:
        monkeypatch.setattr(update, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        add_images(built, [new])
    monkeypatch.undo()
    journal = built.work_dir / "index" / update.JOURNAL_FILE
    assert journal.is_file()
    if crash_at == "before the store":
        assert recover(built) == "undid the interrupted update"
        assert _state(built) == state
    else:
        with pytest.raises(ValueError, match="holds 44 images, manifest expects 43"):
            open_searcher(built)  # the half-done set is refused, never served
        assert recover(built) == "finished the interrupted update"
        assert open_searcher(built).index.ntotal == len(state[1]) + 1
    assert not journal.exists() and recover(built) is None
    faiss_files = [p.name for p in (built.work_dir / "index").glob("*.faiss")]
    assert faiss_files == [read_manifest(built.work_dir / "index" / MANIFEST_FILE).index_file]


def test_a_running_server_serves_the_changed_collection(built: Config) -> None:
    root = Path(built.data.data_dir)
    app = create_app(override(built, server={"reload_seconds": 0.001}))  # look at the manifest each request
    client, live = app.test_client(), app.extensions["hashveil"]["searcher"]

    def items() -> int:
        """The set's size once the server has looked at the manifest and finished any switch."""
        client.get("/api/health")
        live.wait_idle()
        return client.get("/api/health").get_json()["items"]

    count = items()
    path = _photo(root / "jaune citron" / "new.png", (230, 210, 40), seed=7)
    (added_id, _), *_ = add_images(built, [path]).added
    assert items() == count + 1  # no restart
    with open(path, "rb") as f:
        answer = client.post("/api/search", data={"image": (f, "q.png"), "radius": "0"}).get_json()
    assert answer["code"] == to_hex(_reference_code(built, path))  # the builder's resize agrees here
    assert added_id in [r["id"] for r in answer["results"]]
    remove_images(built, [added_id])
    assert items() == count
    assert client.get(f"/api/images/{added_id}").status_code == 404
    (built.work_dir / "index" / MANIFEST_FILE).write_text("{ not json")  # a broken manifest ...
    assert items() == count  # ... keeps the last good set
    assert live.reloads == 2


def test_milvus_sets_are_refused_with_a_clear_message(built: Config) -> None:
    path = built.work_dir / "index" / MANIFEST_FILE
    raw = path.read_text().replace('"index_backend": "faiss"', '"index_backend": "milvus"')
    raw = raw.replace('"milvus_uri": ""', '"milvus_uri": "http://milvus:19530"')
    raw = raw.replace('"milvus_collection": ""', '"milvus_collection": "c"')
    path.write_text(raw.replace('"index_file": "codes.faiss"', '"index_file": ""'))
    with pytest.raises(ValueError, match="change FAISS indexes only; this index is a milvus collection"):
        remove_images(built, [1])


def test_cli_add_and_remove(built: Config, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", built)
    root = Path(built.data.data_dir)
    path = _photo(root / "green" / "cli photo.png", (40, 200, 60))
    runner = CliRunner()
    out = runner.invoke(main, ["--config", str(config), "add", str(path)])
    assert out.exit_code == 0, out.output
    image_id = int(out.output.split("added id ")[1].split()[0])
    assert "added 1 images (0 already indexed); the index holds 44" in out.output
    out = runner.invoke(main, ["--config", str(config), "remove", str(image_id)])
    assert out.exit_code == 0 and "removed 1 images; the index holds 43" in out.output
    out = runner.invoke(main, ["--config", str(config), "remove", "123456"])
    assert out.exit_code == 1 and "Error: no indexed image has id [123456]" in out.output


def test_an_unlabelled_folder_is_indexed_searched_and_audited(tmp_path: Path) -> None:
    """A flat photo folder: build-index with a model trained elsewhere, search, add, audit."""
    from audit.logs import read_log_store
    from audit.replay import audit_log
    from audit.report import format_summary

    flat = tmp_path / "camera roll"
    paths = [_photo(flat / f"IMG {i:03d}.jpg", (20 * i, 90, 160), seed=i) for i in range(12)]
    cfg = override(
        tiny_config(tmp_path / "work", flat), data={"num_query": 0, "num_train": 0, "num_database": 0}
    )
    save_untrained_model(cfg)
    built = build_index(cfg)
    assert built.images == 12  # every image: no query split without labels
    app = create_app(override(cfg, server={"admin_token": "t0ken"}))
    mount_service_pages(app)
    client = app.test_client()
    assert client.get("/api/labels").get_json() == {"labels": []}
    buf = io.BytesIO(paths[3].read_bytes())
    answer = client.post("/api/search", data={"image": (buf, "q.jpg"), "radius": "0"}).get_json()
    assert answer["results"] and all(r["labels"] == [] for r in answer["results"])
    admin = client.get("/admin", headers={"Authorization": "Bearer t0ken"})  # the attacker's view
    assert admin.status_code == 200 and admin.data.count(b'id="query-') == 1
    new = _photo(flat / "IMG 999.jpg", seed=99)
    assert add_images(cfg, [new]).added == [(12, "IMG 999.jpg")]
    report = audit_log(open_searcher(cfg), read_log_store(cfg.db_url), radius=0)
    summary = format_summary(report)
    assert report.entries and all(e.view.inferred_label is None for e in report.entries)
    assert summary.startswith("1 logged queries (1 with an image, 0 with known labels, 0 whose upload")
    assert f"inferred None from {len(answer['results'])} items" in summary  # retrieval, no label to leak
    runner = CliRunner()
    config = write_config(tmp_path / "c.toml", cfg)
    out = runner.invoke(main, ["--config", str(config), "train"])
    assert out.exit_code == 1 and "training needs labels" in out.output
    codes = open_searcher(cfg).store.images([3])[3].code
    assert hamming(np.frombuffer(codes, np.uint8)[None], _reference_code(cfg, paths[3])[None])[0, 0] == 0
