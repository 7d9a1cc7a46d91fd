"""Sharded building straight into a Milvus server: three `hashveil build-index --shard I/3` processes
fill one collection at once, reruns add no duplicate, the merge checks the collection against the
database split and writes the store and the manifest, and the result serves brute-force answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from hashveil.cli import main
from index_builder import milvus_shards, shards
from retrieval.core.config import override
from retrieval.core.imaging import load_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.manifest import read_manifest
from retrieval.service.milvus_client import list_collections
from retrieval.service.milvus_index import MilvusIndex
from retrieval.service.search import open_searcher
from testkit.codes import brute
from testkit.data import write_config

pytestmark = pytest.mark.slow


def _hashveil(toml, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hashveil", "--config", str(toml), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_three_shard_processes_fill_one_collection_then_merge(
    untrained_cfg, milvus_server, tmp_path, monkeypatch
):
    cfg = override(
        untrained_cfg,
        index={"backend": "milvus", "milvus_uri": milvus_server.uri, "milvus_collection": "shards3"},
    )
    toml = write_config(tmp_path / "config.toml", cfg)
    run = CliRunner()
    early = run.invoke(main, ["--config", str(toml), "build-index", "--merge"])
    assert early.exit_code != 0 and "run `hashveil build-index --shard I/N`" in early.output

    procs = [_hashveil(toml, "build-index", "--shard", f"{i}/3") for i in (1, 2, 3)]  # all at once
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs[0][-2000:]
    for i, out in zip((1, 2, 3), outputs):
        assert f"shard {i}/3: " in out and "images hashed" in out and "Milvus collection shards3_s" in out
    (name,) = [c for c in list_collections(milvus_server.uri) if c.startswith("shards3_")]

    # every database id once, with the code the model gives its image (an independent encode)
    model, card = load_checkpoint(cfg.work_dir / "model")
    images, database, _ = shards._database(cfg, card)
    index = MilvusIndex.open(milvus_server.uri, name)
    ids, codes = index.items()
    assert index.ntotal == len(ids) == len(database) == 200 and ids.tolist() == sorted(database.tolist())
    for i in (0, 99, 199):
        image = to_tensor(load_image(images.root / images.paths[int(ids[i])]))[None]
        assert codes[i].tobytes() == model.encode(image)[0].tobytes()

    # a shard killed half-way: its missing ids, and only those, are hashed again on rerun
    lost = shards.shard_ids(database, 3, 3)[[0, 5, 30]].tolist()
    index._client.delete(name, ids=lost)
    index.close()
    refused = run.invoke(main, ["--config", str(toml), "build-index", "--merge"])
    assert refused.exit_code != 0 and "3 of 200 database ids are not in Milvus collection" in refused.output
    hashed: list[list[int]] = []
    real = milvus_shards.hash_database
    monkeypatch.setattr(
        milvus_shards,
        "hash_database",
        lambda c, m, im, ids, **kw: hashed.append(ids.tolist()) or real(c, m, im, ids, **kw),
    )
    again = shards.build_shard(cfg, 3, 3)
    assert not again.skipped and again.images == 67 and hashed == [lost]
    done = shards.build_shard(cfg, 1, 3)  # finished: nothing hashed, nothing written
    assert done.skipped and hashed == [lost]
    check = MilvusIndex.open(milvus_server.uri, name)
    assert check.ntotal == 200 and check.items()[0].tolist() == ids.tolist()  # no duplicate id
    assert np.array_equal(check.items()[1], codes)  # the rerun wrote the same codes back
    check.close()

    plain = run.invoke(main, ["--config", str(toml), "build-index"])  # a complete set merges by itself
    assert plain.exit_code == 0, plain.output
    assert f"merged the shards in {name}" in plain.output and "indexed 200 images" in plain.output
    m = read_manifest(cfg.work_dir / "index" / "manifest.json")
    assert (m.milvus_collection, m.milvus_uri, m.count) == (name, milvus_server.uri, 200)
    searcher = open_searcher(cfg)  # checks the collection against the store it wrote
    for code in codes[::40]:
        want_ids, want_d = brute(code, codes, ids)
        keep = want_d <= 3
        hits = searcher.search_code(code, 3)
        assert [(h.id, h.distance) for h in hits] == list(zip(want_ids[keep].tolist(), want_d[keep].tolist()))
    searcher.index.close()
