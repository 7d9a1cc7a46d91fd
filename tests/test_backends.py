"""The search contract (retrieval.service.backend.HammingSearch) on every backend, against a
brute-force scan with retrieval.core.codes.hamming: FAISS flat, hash and multihash, Milvus Lite
and a Milvus standalone server (testkit/milvus.py, started once per session).

A further backend is one more entry in BACKENDS: a factory ``(bits, request) -> empty index``
(``request`` is pytest's, for fixtures such as tmp_path or milvus_server).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from retrieval.core.codes import SUPPORTED_BITS, hamming
from retrieval.service.backend import HammingSearch
from retrieval.service.index import BinaryIndex
from retrieval.service.milvus_client import drop_collection
from testkit.codes import brute, clustered_codes, scattered_ids

_names = itertools.count()


def _milvus_lite(bits: int, request) -> HammingSearch:
    from retrieval.service.milvus_index import MilvusIndex

    uri = str(request.getfixturevalue("tmp_path") / "lite.db")
    return MilvusIndex.create(uri, f"contract_{next(_names)}", bits, replace=True)


def _milvus_server(bits: int, request) -> HammingSearch:
    from retrieval.service.milvus_index import MilvusIndex

    uri = request.getfixturevalue("milvus_server").uri
    return MilvusIndex.create(uri, f"contract_{next(_names)}", bits, replace=True)


BACKENDS: dict[str, Callable] = {
    "faiss-flat": lambda bits, _: BinaryIndex.create(bits, "flat"),
    "faiss-hash": lambda bits, _: BinaryIndex.create(bits, "hash"),
    "faiss-multihash": lambda bits, _: BinaryIndex.create(bits, "multihash"),
    "milvus-lite": _milvus_lite,
    "milvus-server": _milvus_server,
}


@pytest.fixture(params=sorted(BACKENDS))
def make_index(request) -> Iterator[Callable[[int], HammingSearch]]:
    """A factory of empty indexes of one backend; Milvus collections are dropped afterwards."""
    made: list[HammingSearch] = []

    def make(bits: int) -> HammingSearch:
        made.append(BACKENDS[request.param](bits, request))
        return made[-1]

    yield make
    for index in made:
        if hasattr(index, "close"):
            index.close()
            drop_collection(index.uri, index.collection)


def filled(make, bits: int, n: int = 300, seed: int = 0):
    db = clustered_codes(bits, n, seed)
    ids = scattered_ids(n, seed)
    index = make(bits)
    index.add(db, ids)
    queries = np.concatenate([db[:5], clustered_codes(bits, 5, seed + 1)])
    return index, db, ids, queries


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_range_search_equals_brute_force(make_index, bits: int) -> None:
    index, db, ids, queries = filled(make_index, bits, seed=bits)
    assert (index.ntotal, index.hash_bits) == (len(db), bits)
    assert sorted(index.ids().tolist()) == sorted(ids.tolist())
    all_d = hamming(queries, db)
    edge = int(np.median(all_d[all_d > 0]))  # a distance many items sit at exactly
    assert (all_d == edge).sum() > 0
    for radius in sorted({0, 1, 2, 3, 5, edge, bits // 2, bits}):
        for q, (got_ids, got_d) in zip(queries, index.range_search(queries, radius)):
            want_ids, want_d = brute(q, db, ids)
            keep = want_d <= radius
            assert got_ids.dtype == got_d.dtype == np.int64
            assert (got_ids.tolist(), got_d.tolist()) == (want_ids[keep].tolist(), want_d[keep].tolist()), (
                radius
            )


def test_knn_equals_brute_force_with_ties_by_id(make_index) -> None:
    index, db, ids, queries = filled(make_index, 32, seed=3)
    for k in (1, 5, 37, 300, 1000):
        for q, (got_ids, got_d) in zip(queries, index.knn(queries, k)):
            want_ids, want_d = brute(q, db, ids)
            assert (got_ids.tolist(), got_d.tolist()) == (want_ids[:k].tolist(), want_d[:k].tolist()), k


def test_radius_is_inclusive_at_the_edge(make_index) -> None:
    index = make_index(32)
    index.add(
        np.array([[0, 0, 0, 0], [0b111, 0, 0, 0], [0b1111, 0, 0, 0], [0, 0, 0, 0b1111_1111]], dtype=np.uint8),
        np.array([40, 30, 20, 10]),
    )  # distances 0, 3, 4, 8 from zero
    zero = np.zeros((1, 4), dtype=np.uint8)
    assert index.range_search(zero, 0)[0][0].tolist() == [40]
    assert index.range_search(zero, 3)[0][0].tolist() == [40, 30]
    assert [a.tolist() for a in index.range_search(zero, 4)[0]] == [[40, 30, 20], [0, 3, 4]]
    assert index.range_search(zero, 7)[0][0].tolist() == [40, 30, 20]
    assert index.range_search(zero, 8)[0][0].tolist() == [40, 30, 20, 10]


def test_identical_codes_come_back_in_id_order(make_index) -> None:
    index = make_index(16)
    same = np.tile(np.array([[0xAB, 0xCD]], dtype=np.uint8), (6, 1))
    index.add(same, np.array([50, 7, 31, 2, 99, 13]))
    assert index.knn(same[:1], 3)[0][0].tolist() == [2, 7, 13]
    assert index.search(same[:1], 0, k=4)[0][0].tolist() == [2, 7, 13, 31]


def test_search_caps_range_results_at_k(make_index) -> None:
    index, db, ids, queries = filled(make_index, 32, seed=5)
    for radius, k in [(2, 3), (6, 10), (32, 7), (0, 1)]:
        for q, (got_ids, got_d) in zip(queries, index.search(queries, radius, k)):
            want_ids, want_d = brute(q, db, ids)
            keep = want_d <= radius
            assert (got_ids.tolist(), got_d.tolist()) == (
                want_ids[keep][:k].tolist(),
                want_d[keep][:k].tolist(),
            )
    assert [len(i) for i, _ in index.search(queries, 32)] == [300] * len(queries)


def test_empty_index_answers_empty(make_index) -> None:
    index = make_index(16)
    q = np.zeros((2, 2), dtype=np.uint8)
    assert index.ntotal == 0 and index.ids().tolist() == []
    assert [len(i) for i, _ in index.range_search(q, 16)] == [0, 0]
    assert [len(i) for i, _ in index.knn(q, 3)] == [0, 0]


def test_bad_input_is_refused_naming_the_value(make_index) -> None:
    index = make_index(32)
    codes = np.zeros((2, 4), dtype=np.uint8)
    index.add(codes, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"4 bytes per row.*\(1, 2\)"):
        index.range_search(np.zeros((1, 2), dtype=np.uint8), 1)
    for bad in (-1, 33, 2.0, "2", True):
        with pytest.raises(ValueError, match=r"radius must be an int in \[0, 32\]"):
            index.range_search(codes, bad)
    with pytest.raises(ValueError, match="k must be"):
        index.knn(codes, 0)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(codes[:1], np.array([2]))
    with pytest.raises(ValueError, match="unique"):
        index.add(codes, np.array([5, 5]))
    with pytest.raises(ValueError, match="length 2"):
        index.add(codes, np.array([7]))
