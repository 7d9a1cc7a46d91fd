"""BinaryIndex on every kind against a brute-force scan with retrieval.codes.hamming."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.codes import hamming
from retrieval.index import KINDS, BinaryIndex


def _clustered_codes(bits: int, n: int, seed: int) -> np.ndarray:
    """Codes in a few tight clusters, so that every small radius has hits and ties."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (5, bits), dtype=np.uint8)
    bits_arr = centres[rng.integers(0, 5, n)]
    flips = rng.random((n, bits)) < rng.choice([0.0, 0.03, 0.1, 0.3], size=(n, 1))
    return np.packbits(bits_arr ^ flips, axis=1)


def _brute(query: np.ndarray, db: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every stored item sorted by (distance, id), independently of FAISS."""
    d = hamming(query[None], db)[0]
    order = np.lexsort((ids, d))
    return ids[order], d[order]


def _build(kind: str, bits: int, n: int = 400, seed: int = 0):
    db = _clustered_codes(bits, n, seed)
    ids = np.random.default_rng(seed).permutation(np.arange(10, 10 + 3 * n, 3)).astype(np.int64)
    index = BinaryIndex.create(bits, kind)
    index.add(db, ids)
    queries = np.concatenate([db[:6], _clustered_codes(bits, 6, seed + 1)])
    return index, db, ids, queries


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [16, 24, 32, 48, 64])
def test_range_search_equals_brute_force_for_every_radius(kind: str, bits: int) -> None:
    index, db, ids, queries = _build(kind, bits)
    assert index.ntotal == len(db) and index.hash_bits == bits and index.kind == kind
    radii = range(bits + 1) if bits <= 16 else [0, 1, 2, 3, 5, 8, bits // 2, bits]
    for radius in radii:
        results = index.range_search(queries, radius)
        for q, (got_ids, got_d) in zip(queries, results):
            want_ids, want_d = _brute(q, db, ids)
            keep = want_d <= radius
            assert got_ids.dtype == np.int64
            assert got_ids.tolist() == want_ids[keep].tolist(), (kind, bits, radius)
            assert got_d.tolist() == want_d[keep].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_radius_is_inclusive_at_the_edge(kind: str) -> None:
    bits = 32
    base = np.zeros((1, 4), dtype=np.uint8)
    db = np.array([[0, 0, 0, 0], [0b111, 0, 0, 0], [0b1111, 0, 0, 0], [0, 0, 0, 0b1111_1111]],
                  dtype=np.uint8)  # distances 0, 3, 4, 8
    index = BinaryIndex.create(bits, kind)
    index.add(db, np.array([40, 30, 20, 10]))
    assert index.range_search(base, 3)[0][0].tolist() == [40, 30]
    assert index.range_search(base, 4)[0][0].tolist() == [40, 30, 20]
    assert index.range_search(base, 4)[0][1].tolist() == [0, 3, 4]
    assert index.range_search(base, 7)[0][0].tolist() == [40, 30, 20]
    assert index.range_search(base, 8)[0][0].tolist() == [40, 30, 20, 10]


@pytest.mark.parametrize("kind", KINDS)
def test_knn_order_and_ties_by_id(kind: str) -> None:
    index, db, ids, queries = _build(kind, 32, n=300, seed=3)
    for k in (1, 5, 37, 300, 1000):
        for q, (got_ids, got_d) in zip(queries, index.knn(queries, k)):
            want_ids, want_d = _brute(q, db, ids)
            assert got_ids.tolist() == want_ids[:k].tolist(), (kind, k)
            assert got_d.tolist() == want_d[:k].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_knn_breaks_ties_by_smaller_id(kind: str) -> None:
    index = BinaryIndex.create(16, kind)
    same = np.tile(np.array([[0xAB, 0xCD]], dtype=np.uint8), (6, 1))
    index.add(same, np.array([50, 7, 31, 2, 99, 13]))
    assert index.knn(same[:1], 3)[0][0].tolist() == [2, 7, 13]
    assert index.search(same[:1], 0, k=4)[0][0].tolist() == [2, 7, 13, 31]


@pytest.mark.parametrize("kind", KINDS)
def test_search_caps_range_results_at_k(kind: str) -> None:
    index, db, ids, queries = _build(kind, 32, n=300, seed=5)
    for radius, k in [(2, 3), (6, 10), (32, 7), (0, 1)]:
        for q, (got_ids, got_d) in zip(queries, index.search(queries, radius, k)):
            want_ids, want_d = _brute(q, db, ids)
            keep = want_d <= radius
            assert got_ids.tolist() == want_ids[keep][:k].tolist()
            assert got_d.tolist() == want_d[keep][:k].tolist()
    assert [len(i) for i, _ in index.search(queries, 32)] == [300] * len(queries)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind: str, tmp_path) -> None:
    index, db, ids, queries = _build(kind, 32, n=200, seed=7)
    path = tmp_path / "sub" / "index.faiss"
    index.save(path)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = BinaryIndex.load(path)
    assert (loaded.kind, loaded.hash_bits, loaded.ntotal) == (kind, 32, 200)
    assert loaded.ids().tolist() == ids.tolist()
    for a, b in zip(index.range_search(queries, 5), loaded.range_search(queries, 5)):
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


@pytest.mark.parametrize("bits", [16, 24, 48])
def test_flat_codes_are_stored_padded_and_round_trip_with_their_width(bits: int, tmp_path) -> None:
    import faiss

    index, db, ids, queries = _build("flat", bits, n=200, seed=3)
    assert index._index.d == (64 if bits == 48 else 32)  # FAISS's fast 4- and 8-byte kernels
    index.save(tmp_path / "i.faiss")
    loaded = BinaryIndex.load(tmp_path / "i.faiss")
    assert loaded.hash_bits == bits and loaded.ntotal == 200
    for q, (got_ids, got_d) in zip(queries, loaded.range_search(queries, bits // 4)):
        want_ids, want_d = _brute(q, db, ids)
        keep = want_d <= bits // 4
        assert got_ids.tolist() == want_ids[keep].tolist() and got_d.tolist() == want_d[keep].tolist()
    # a file from before the header: a plain FAISS index of unpadded codes still loads and answers
    legacy = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))
    legacy.add_with_ids(db, ids)
    (tmp_path / "legacy.faiss").write_bytes(faiss.serialize_index_binary(legacy).tobytes())
    old = BinaryIndex.load(tmp_path / "legacy.faiss")
    assert old.hash_bits == bits
    assert [a.tolist() for a, _ in old.range_search(queries, 3)] == \
        [a.tolist() for a, _ in loaded.range_search(queries, 3)]


def test_load_refuses_corrupt_and_truncated_files(tmp_path) -> None:
    index, *_ = _build("flat", 32, n=50)
    good = tmp_path / "good.faiss"
    index.save(good)
    data = good.read_bytes()
    cases = {"garbage.faiss": b"not an index at all", "half.faiss": data[: len(data) // 2],
             "empty.faiss": b"", "header.faiss": data[:30]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name):
            BinaryIndex.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="build-index"):
        BinaryIndex.load(tmp_path / "missing.faiss")


def test_empty_index_answers_empty() -> None:
    index = BinaryIndex.create(16, "flat")
    q = np.zeros((2, 2), dtype=np.uint8)
    assert index.ntotal == 0 and index.ids().tolist() == []
    assert [len(i) for i, _ in index.range_search(q, 16)] == [0, 0]
    assert [len(i) for i, _ in index.knn(q, 3)] == [0, 0]


def test_input_validation_names_the_bad_value() -> None:
    index = BinaryIndex.create(32, "flat")
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
    with pytest.raises(ValueError, match="index kind"):
        BinaryIndex.create(32, "hnsw")
    with pytest.raises(ValueError, match="hash_bits"):
        BinaryIndex.create(20, "flat")
