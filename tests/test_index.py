"""What only the FAISS backend has: files (atomic save, load, padded widths, corrupt files) and kinds.

The search contract itself is tested on every backend in test_backends.py."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.service.index import KINDS, BinaryIndex
from testkit.codes import brute, clustered_codes, scattered_ids


def _build(kind: str, bits: int, n: int = 400, seed: int = 0):
    db = clustered_codes(bits, n, seed)
    ids = scattered_ids(n, seed)
    index = BinaryIndex.create(bits, kind)
    index.add(db, ids)
    queries = np.concatenate([db[:6], clustered_codes(bits, 6, seed + 1)])
    return index, db, ids, queries


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
        want_ids, want_d = brute(q, db, ids)
        keep = want_d <= bits // 4
        assert got_ids.tolist() == want_ids[keep].tolist() and got_d.tolist() == want_d[keep].tolist()
    # a file from before the header: a plain FAISS index of unpadded codes still loads and answers
    legacy = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))
    legacy.add_with_ids(db, ids)
    (tmp_path / "legacy.faiss").write_bytes(faiss.serialize_index_binary(legacy).tobytes())
    old = BinaryIndex.load(tmp_path / "legacy.faiss")
    assert old.hash_bits == bits
    assert [a.tolist() for a, _ in old.range_search(queries, 3)] == [
        a.tolist() for a, _ in loaded.range_search(queries, 3)
    ]


def test_load_refuses_corrupt_and_truncated_files(tmp_path) -> None:
    index, *_ = _build("flat", 32, n=50)
    good = tmp_path / "good.faiss"
    index.save(good)
    data = good.read_bytes()
    cases = {
        "garbage.faiss": b"not an index at all",
        "half.faiss": data[: len(data) // 2],
        "empty.faiss": b"",
        "header.faiss": data[:30],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name):
            BinaryIndex.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="build-index"):
        BinaryIndex.load(tmp_path / "missing.faiss")


def test_unknown_kinds_and_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="index kind"):
        BinaryIndex.create(32, "hnsw")
    with pytest.raises(ValueError, match="hash_bits"):
        BinaryIndex.create(20, "flat")


@pytest.mark.parametrize("bits", [16, 32, 48, 64])
def test_flat_scan_is_exact_across_blocks(bits: int) -> None:
    """The filtering kernel (retrieval.service.scan) skips whole blocks: many blocks, a short last one,
    a lone hit at a block's first and last row and at the very end, every radius up to the edge."""
    from retrieval.service.scan import BLOCK

    rng = np.random.default_rng(bits)
    n = 5 * BLOCK + 37
    db = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (1, bits // 8), dtype=np.uint8)
    for row, flips in [(BLOCK, 1), (2 * BLOCK - 1, 2), (n - 1, 0), (3 * BLOCK + 5, 3)]:
        db[row] = q[0]
        for bit in rng.choice(bits, flips, replace=False):
            db[row, bit // 8] ^= np.uint8(1 << (7 - bit % 8))
    ids = scattered_ids(n, bits)
    index = BinaryIndex.create(bits, "flat")
    index.add(db, ids)
    want_ids, want_d = brute(q[0], db, ids)
    for radius in range(0, bits // 4 + 1):
        ((got_ids, got_d),) = index.range_search(q, radius)
        keep = want_d <= radius
        assert (got_ids.tolist(), got_d.tolist()) == (want_ids[keep].tolist(), want_d[keep].tolist()), radius
    assert index.range_search(q, 3)[0][0].size >= 4  # the planted rows, across the blocks
