"""Sharded building: shards hashed apart and merged give the one-shot build's index and store."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hashveil.cli import main
from index_builder import shards
from index_builder.build import build_index
from retrieval.core.config import Config, override
from retrieval.core.model import file_sha256
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import read_manifest
from retrieval.service.store import Store
from testkit.data import save_untrained_model, write_config


def _twin(cfg: Config, tmp_path: Path, name: str) -> Config:
    """The same model and data in another work_dir and SQLite file."""
    twin = override(cfg, paths={"work_dir": tmp_path / name})
    shutil.copytree(cfg.work_dir / "model", twin.work_dir / "model")
    return twin


def _service(cfg: Config) -> dict:
    """Everything the server reads, minus the build's time stamp and its own paths."""
    index_dir = cfg.work_dir / "index"
    manifest = read_manifest(index_dir / "manifest.json")
    index = BinaryIndex.load(index_dir / manifest.index_file)
    store = Store(cfg.db_url)
    ids = index.ids()
    rows = store.images(ids.tolist())
    return {
        "manifest": {**dataclasses.asdict(manifest), "created": None, "db_url": None},
        "index_sha256": file_sha256(index_dir / manifest.index_file),
        "index_ids": ids.tolist(),
        "codes": [rows[i].code for i in ids.tolist()],
        "rows": rows,
        "labels": store.label_names(),
        "fingerprint": store.fingerprint(),
    }


def test_shards_cut_contiguous_ranges() -> None:
    ids = np.array([9, 3, 7, 1, 5, 11, 2], dtype=np.int64)
    parts = [shards.shard_ids(ids, i, 3).tolist() for i in (1, 2, 3)]
    assert parts == [[1, 2], [3, 5], [7, 9, 11]]
    assert shards.parse_shard(" 2/4 ") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard must be I/N"):
            shards.parse_shard(bad)


def test_merged_shards_equal_the_one_shot_build(untrained_cfg, tmp_path) -> None:
    one_shot = build_index(untrained_cfg)
    sharded = _twin(untrained_cfg, tmp_path, "sharded")
    database = np.array(json.loads((untrained_cfg.work_dir / "splits.json").read_text())["database"])
    results = [shards.build_shard(sharded, i, 3) for i in (3, 1, 2)]  # any order, any machine
    assert sum(r.images for r in results) == len(database) == 200
    for i in (1, 2, 3):
        part = shards.read_shard(shards.shard_path(sharded, i, 3)).ids
        assert part.tolist() == shards.shard_ids(database, i, 3).tolist()  # one contiguous id range
    assert not list((sharded.work_dir / "index" / "shards").glob(".*"))  # no temporary files left
    merged = shards.merge_shards(sharded)
    assert merged.images == one_shot.images == 200
    want, got = _service(untrained_cfg), _service(sharded)
    assert got["index_sha256"] == want["index_sha256"]  # byte-identical FAISS file
    assert got["index_ids"] == want["index_ids"] and got["codes"] == want["codes"]
    assert got["rows"] == want["rows"] and got["labels"] == want["labels"]
    assert got["fingerprint"] == want["fingerprint"] and got["manifest"] == want["manifest"]


def test_rerun_skips_finished_shards(untrained_cfg, monkeypatch) -> None:
    first = shards.build_shard(untrained_cfg, 1, 2)
    stamp = first.path.stat().st_mtime_ns
    monkeypatch.setattr(shards, "hash_database", _must_not_hash)
    again = shards.build_shard(untrained_cfg, 1, 2)
    assert again.skipped and not first.skipped and again.images == first.images == 100
    assert first.path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="hashed again"):  # shard 2 is not done: it is hashed
        shards.build_shard(untrained_cfg, 2, 2)
    monkeypatch.undo()
    first.path.write_bytes(b"half a file")  # e.g. copied back incompletely: hashed again
    redone = shards.build_shard(untrained_cfg, 1, 2)
    assert not redone.skipped and len(shards.read_shard(first.path).ids) == 100


def _must_not_hash(*args, **kw):
    raise AssertionError("a complete shard was hashed again")


def test_merge_refuses_missing_duplicated_and_foreign_shards(untrained_cfg, tmp_path) -> None:
    folder = shards.shard_dir(untrained_cfg)
    with pytest.raises(FileNotFoundError, match="no shard files"):
        shards.merge_shards(untrained_cfg)
    for i in (1, 3):
        shards.build_shard(untrained_cfg, i, 3)
    with pytest.raises(ValueError, match=r"missing shard\(s\) 2/3 .*--shard 2/3"):
        shards.merge_shards(untrained_cfg)
    shards.build_shard(untrained_cfg, 2, 3)
    copy = folder / "copied-back.npz"
    shutil.copy(shards.shard_path(untrained_cfg, 2, 3), copy)
    with pytest.raises(ValueError, match="shard 2/3 appears twice"):
        shards.merge_shards(untrained_cfg)
    copy.unlink()
    shards.build_shard(untrained_cfg, 1, 2)  # a stale set with another N beside the first
    with pytest.raises(ValueError, match=r"different numbers of shards \[2, 3\]"):
        shards.merge_shards(untrained_cfg)
    shards.shard_path(untrained_cfg, 1, 2).unlink()
    other = _twin(untrained_cfg, tmp_path, "other")
    save_untrained_model(other, seed=1)  # another model hashes shard 3 elsewhere, copied back
    shards.build_shard(other, 3, 3)
    shutil.copy(shards.shard_path(other, 3, 3), shards.shard_path(untrained_cfg, 3, 3))
    with pytest.raises(ValueError, match=r"shard 3/3 .* was hashed by model sha256 .*--shard 3/3"):
        shards.merge_shards(untrained_cfg)
    assert not (untrained_cfg.work_dir / "index" / "manifest.json").exists()  # nothing was written


def test_merge_refuses_ids_covered_twice(untrained_cfg) -> None:
    for i in (1, 2):
        shards.build_shard(untrained_cfg, i, 2)
    path = shards.shard_path(untrained_cfg, 2, 2)
    s = shards.read_shard(path)
    ids = s.ids.copy()
    ids[0] = shards.read_shard(shards.shard_path(untrained_cfg, 1, 2)).ids[-1]  # an id of shard 1
    meta = {
        "index": 2,
        "count": 2,
        "model_sha256": s.model_sha256,
        "database_sha256": s.database_sha256,
        "hash_seconds": 0.0,
    }
    shards._write_atomic(path, ids, s.codes, meta)
    with pytest.raises(ValueError, match="1 image ids are in more than one shard"):
        shards.merge_shards(untrained_cfg)


def test_cli_shards_then_plain_run_merges(untrained_cfg, tmp_path) -> None:
    cfg = untrained_cfg
    toml = tmp_path / "config.toml"
    write_config(toml, cfg)
    run = CliRunner()
    out = run.invoke(main, ["--config", str(toml), "build-index", "--shard", "1/2"])
    assert out.exit_code == 0, out.output
    assert "shard 1/2: 100 images hashed" in out.output
    again = run.invoke(main, ["--config", str(toml), "build-index", "--shard", "1/2"])
    assert "shard 1/2: 100 images already complete, skipped" in again.output
    bad = run.invoke(main, ["--config", str(toml), "build-index", "--merge"])
    assert bad.exit_code != 0 and "missing shard(s) 2/2" in bad.output
    assert run.invoke(main, ["--config", str(toml), "build-index", "--shard", "2/2"]).exit_code == 0
    plain = run.invoke(main, ["--config", str(toml), "build-index"])
    assert plain.exit_code == 0, plain.output
    assert "merged the shards" in plain.output and "indexed 200 images" in plain.output
    assert read_manifest(cfg.work_dir / "index" / "manifest.json").count == 200
    wrong = run.invoke(main, ["--config", str(toml), "build-index", "--shard", "3/2"])
    assert wrong.exit_code != 0 and "shard must be I/N" in wrong.output
