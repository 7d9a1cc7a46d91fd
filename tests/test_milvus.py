"""What only the Milvus backend has: full result pages split by id range, reopening and validation,
URIs, and the tiny set built and served with ``[index] backend = "milvus"`` on Milvus Lite (in
process) and on a Milvus standalone server (the session's ``milvus_server``).

The search contract itself is tested on every backend in test_backends.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from retrieval.core.codes import hamming
from retrieval.core.config import override
from retrieval.service import milvus_index
from retrieval.service.index import BinaryIndex
from retrieval.service.milvus_client import resolve_uri
from retrieval.service.milvus_index import MilvusIndex
from testkit.codes import clustered_codes, scattered_ids


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "test.db")


def _both(lite_uri: str, name: str, bits: int, n: int, seed: int):
    db = clustered_codes(bits, n, seed)
    ids = scattered_ids(n, seed, start=7, step=5)
    milvus = MilvusIndex.create(lite_uri, name, bits, replace=True)
    milvus.add(db, ids)
    faiss_flat = BinaryIndex.create(bits, "flat")
    faiss_flat.add(db, ids)
    queries = np.concatenate([db[:5], clustered_codes(bits, 5, seed + 1)])
    return milvus, faiss_flat, db, ids, queries


def _as_lists(results) -> list[tuple[list[int], list[int]]]:
    return [(i.tolist(), d.tolist()) for i, d in results]


def test_full_pages_are_split_not_cut(lite_uri: str, monkeypatch) -> None:
    """A range search larger than Milvus's per-query limit (16384, here 23) is still complete."""
    milvus, faiss_flat, db, ids, queries = _both(lite_uri, "pages", 24, n=400, seed=11)
    monkeypatch.setattr(milvus_index, "TOPK_CAP", 23)
    for radius in (3, 12, 24):
        assert _as_lists(milvus.range_search(queries, radius)) == _as_lists(
            faiss_flat.range_search(queries, radius)
        )
    assert [len(i) for i, _ in milvus.range_search(queries, 24)] == [400] * len(queries)
    for k in (22, 23, 150):  # k above the cap takes the widening path
        assert _as_lists(milvus.knn(queries, k)) == _as_lists(faiss_flat.knn(queries, k))
    milvus.close()


def test_open_round_trip_and_validation(lite_uri: str) -> None:
    index = MilvusIndex.create(lite_uri, "reopen", 32, replace=True)
    codes = np.zeros((2, 4), dtype=np.uint8)
    index.add(codes, np.array([1, 2]))
    with pytest.raises(ValueError, match="already exists"):
        MilvusIndex.create(lite_uri, "reopen", 32)
    again = MilvusIndex.open(lite_uri, "reopen")
    assert (again.hash_bits, again.ntotal, again.ids().tolist()) == (32, 2, [1, 2])
    with pytest.raises(ValueError, match=r"4 bytes per row.*\(1, 2\)"):
        again.range_search(np.zeros((1, 2), dtype=np.uint8), 1)
    for bad in (-1, 33, 2.0, True):
        with pytest.raises(ValueError, match=r"radius must be an int in \[0, 32\]"):
            again.range_search(codes, bad)
    with pytest.raises(ValueError, match="k must be"):
        again.knn(codes, 0)
    with pytest.raises(ValueError, match="already in the index"):
        again.add(codes[:1], np.array([2]))
    with pytest.raises(ValueError, match="unique"):
        again.add(codes, np.array([5, 5]))
    with pytest.raises(FileNotFoundError, match="build-index"):
        MilvusIndex.open(lite_uri, "never_built")
    with pytest.raises(ValueError, match="collection name"):
        MilvusIndex.open(lite_uri, "bad-name")
    with pytest.raises(ValueError, match="hash_bits"):
        MilvusIndex.create(lite_uri, "odd", 20)
    again.close()
    index.close()


def test_uri_and_config_validation(tmp_path) -> None:
    assert resolve_uri("", tmp_path) == str((tmp_path / "index" / "codes.milvus.db").resolve())
    assert resolve_uri("m/x.db", tmp_path) == str((tmp_path / "m" / "x.db").resolve())
    assert resolve_uri("http://milvus:19530", tmp_path) == "http://milvus:19530"
    with pytest.raises(ValueError, match=r"end in \.db"):
        resolve_uri("codes.faiss", tmp_path)
    with pytest.raises(ValueError, match="http"):
        resolve_uri("grpc://milvus:19530", tmp_path)
    from retrieval.core.config import Config

    with pytest.raises(ValueError, match="index.kind must be 'flat' with backend 'milvus'"):
        override(Config(), index={"backend": "milvus", "kind": "hash"})
    with pytest.raises(ValueError, match="index.backend must be one of"):
        override(Config(), index={"backend": "qdrant"})
    with pytest.raises(ValueError, match="milvus_collection"):
        override(Config(), index={"milvus_collection": "9lives"})


def _milvus_twin(faiss_cfg, tmp_path, uri: str, base: str):
    """The tiny trained set's model and split in a new work_dir, indexed into Milvus at ``uri``."""
    work = tmp_path / "work"
    shutil.copytree(faiss_cfg.work_dir / "model", work / "model")
    shutil.copy(faiss_cfg.work_dir / "splits.json", work / "splits.json")
    return override(
        faiss_cfg,
        paths={"work_dir": work},
        index={"backend": "milvus", "milvus_uri": uri, "milvus_collection": base},
    )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["lite", "server"])
def test_build_and_serve_the_tiny_set_with_milvus(tiny_trained, tmp_path, request, where) -> None:
    """Same model and database through both backends: identical hits, over the real HTTP API,
    with Milvus Lite and with a Milvus standalone server."""
    from index_builder.backends import is_generation
    from index_builder.build import build_index
    from retrieval.service.manifest import read_manifest
    from retrieval.service.search import open_searcher
    from retrieval.service.server import create_app

    faiss_cfg, _ = tiny_trained
    uri = request.getfixturevalue("milvus_server").uri if where == "server" else ""
    cfg = _milvus_twin(faiss_cfg, tmp_path, uri, f"e2e_{where}")
    work = cfg.work_dir
    result = build_index(cfg)
    m = read_manifest(work / "index" / "manifest.json")
    assert (m.index_backend, m.index_kind, m.index_file) == ("milvus", "flat", "")
    assert is_generation(f"e2e_{where}", m.milvus_collection) and m.milvus_collection != f"e2e_{where}"
    assert m.milvus_uri == (uri or str(work / "index" / "codes.milvus.db")) and m.count == result.images > 0

    faiss_searcher = open_searcher(faiss_cfg)
    searcher = open_searcher(cfg)
    assert isinstance(searcher.index, MilvusIndex) and searcher.index.ntotal == m.count
    assert searcher.index.fingerprint() == searcher.store.fingerprint()
    rows = searcher.store.images(searcher.index.ids().tolist())
    codes = np.stack([np.frombuffer(rows[i].code, np.uint8) for i in sorted(rows)])
    for radius in (0, 2, 5, 16):
        for code in codes[::17]:
            assert searcher.search_code(code, radius) == faiss_searcher.search_code(code, radius)

    client = create_app(cfg, searcher).test_client()
    answer = client.post("/api/search", json={"code": codes[3].tobytes().hex(), "radius": 3}).get_json()
    want = sorted((int(d), int(i)) for d, i in zip(hamming(codes[3:4], codes)[0], sorted(rows)) if d <= 3)
    assert [(r["distance"], r["id"]) for r in answer["results"]] == want and len(want) > 0
    searcher.index.close()

    # a collection changed behind the manifest's back is refused
    tampered = MilvusIndex.open(m.milvus_uri, m.milvus_collection)
    tampered._client.delete(m.milvus_collection, ids=[int(sorted(rows)[0])])
    tampered.close()
    with pytest.raises(ValueError, match="does not hold the store's ids and codes"):
        open_searcher(cfg)


@pytest.mark.slow
def test_each_build_writes_a_new_collection_and_drops_the_one_before_last(tiny_trained, tmp_path) -> None:
    """A build never writes the collection a server reads; the previous one outlives the next build."""
    from index_builder.build import build_index, index_is_current
    from retrieval.service.manifest import read_manifest
    from retrieval.service.milvus_client import list_collections

    cfg = _milvus_twin(tiny_trained[0], tmp_path, "", "gen")
    uri = resolve_uri("", cfg.work_dir)
    other = MilvusIndex.create(uri, "gen_other_data", 16)  # not a generation of "gen": never dropped
    other.close()
    names = []
    for _ in range(3):
        build_index(cfg)
        names.append(read_manifest(cfg.work_dir / "index" / "manifest.json").milvus_collection)
        assert open_searcher_ids(cfg) == 200
    assert len(set(names)) == 3
    assert list_collections(uri) == sorted(["gen_other_data", names[1], names[2]])
    assert index_is_current(cfg)  # `hashveil demo` reuses it, unless the config names another collection
    assert not index_is_current(override(cfg, index={"milvus_collection": "gen_other"}))
    assert not index_is_current(override(cfg, index={"milvus_uri": "http://127.0.0.1:19530"}))


def open_searcher_ids(cfg) -> int:
    from retrieval.service.search import open_searcher

    searcher = open_searcher(cfg)
    try:
        return searcher.index.ntotal
    finally:
        searcher.index.close()


def test_an_unreachable_milvus_is_one_clear_line(untrained_cfg, tmp_path, monkeypatch) -> None:
    import pymilvus
    from click.testing import CliRunner

    from hashveil.cli import main
    from testkit.data import write_config

    def refuse(**kw):
        raise pymilvus.MilvusException(code=2, message="Fail connecting to server on 127.0.0.1:9")

    monkeypatch.setattr(pymilvus, "MilvusClient", refuse)
    cfg = override(untrained_cfg, index={"backend": "milvus", "milvus_uri": "http://127.0.0.1:9"})
    out = CliRunner().invoke(main, ["--config", str(write_config(tmp_path / "c.toml", cfg)), "build-index"])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert out.output.strip().splitlines()[-1] == (
        "Error: cannot connect to Milvus at http://127.0.0.1:9: Fail connecting to server on 127.0.0.1:9"
    )
