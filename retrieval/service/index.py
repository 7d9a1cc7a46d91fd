"""BinaryIndex: exact Hamming retrieval over FAISS binary indexes, with an inclusive radius.

FAISS's ``range_search`` keeps distances strictly below its radius; this module is the only
place that knows it and passes ``radius + 1``. Every result list is sorted by (distance, id),
so ties at a cut-off are broken by id, the same way on every index kind.

Kinds, all wrapped in ``IndexBinaryIDMap2`` so that ids are ours and ``ids()`` works:

* ``flat``: ``IndexBinaryFlat``, a brute-force scan; exact for every radius and k. FAISS has
  fast Hamming kernels for 4- and 8-byte codes but a byte loop for 2, 3 and 6 bytes, so 16- and
  24-bit codes are stored zero-padded to 32 bits and 48-bit codes to 64 (zeros on both sides
  change no distance); the scan is then about 6x faster (33 ms -> 5 ms at 10M codes). Range
  search on these words runs retrieval.service.scan's filtering kernel over FAISS's arrays in
  place, ~3x faster again than FAISS's range search (benchmarks/search.py).
* ``hash``: ``IndexBinaryHash`` keyed on ``b`` bits of the code. A query visits the buckets whose
  keys differ in at most ``nflip`` bits; an item at distance <= r has a key at distance <= r,
  so setting ``nflip = min(r, b)`` per query makes range search exact. The cost grows as
  sum_{i<=r} C(b, i) bucket look-ups, so it pays for small radii only.
* ``multihash``: ``IndexBinaryMultiHash`` with ``nhash`` disjoint ``b``-bit keys (multi-index
  hashing). By pigeonhole an item at distance <= r has some key at distance <= r // nhash, so
  ``nflip = r // nhash`` per query is exact (FAISS's own rule "exact while nflip >= r" is
  sufficient but looser).

k-NN is exact on every kind: flat asks FAISS for the k-th distance; the hash kinds widen an
exact range search until it holds k items. The per-query ``nflip`` is set under a lock.
With faiss-gpu, :meth:`use_gpu` moves the flat k-th-distance scan to a GPU copy of the codes;
range search stays on the CPU because FAISS has no GPU binary range search.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path

import faiss
import numpy as np

from retrieval.core.codes import check_bits
from retrieval.service.backend import HammingSearch, Results, check_int
from retrieval.service.scan import WORD_DTYPES, range_rows

log = logging.getLogger(__name__)

KINDS = ("flat", "hash", "multihash")
_PAD = 8  # FAISS hash indexes read keys as 8-byte words, possibly past a short code's end
_FLAT_STORED_BITS = {16: 32, 24: 32, 48: 64}  # code bits -> bits a flat index stores (see above)
_MAGIC = b"hashveil-binary-index 1\n"  # file header: then the code bits (uint16 LE), then FAISS's bytes


class BinaryIndex(HammingSearch):
    """Packed (n, K/8) uint8 codes with int64 ids; exact range and k-NN search."""

    def __init__(self, index: faiss.IndexBinaryIDMap2, hash_bits: int | None = None) -> None:
        """Wrap a loaded or created ``IndexBinaryIDMap2`` of ``hash_bits``-bit codes (default:
        its own width); use :meth:`create` or :meth:`load`."""
        if not isinstance(index, faiss.IndexBinaryIDMap2):
            raise TypeError(f"expected faiss.IndexBinaryIDMap2; got {type(index).__name__}")
        self._index = index
        self._sub = faiss.downcast_IndexBinary(index.index)
        self.kind = _kind_of(self._sub)
        self.hash_bits = check_bits(int(index.d) if hash_bits is None else hash_bits)
        if int(index.d) not in (self.hash_bits, _stored_bits(self.hash_bits, self.kind)):
            raise ValueError(
                f"a {self.kind} index of {self.hash_bits}-bit codes stores "
                f"{_stored_bits(self.hash_bits, self.kind)} bits; this one stores {index.d}"
            )
        self._stored_bytes = int(index.d) // 8
        self._lock = threading.Lock()
        self._gpu: faiss.IndexBinary | None = None  # a GpuIndexBinaryFlat copy, see use_gpu()

    @classmethod
    def create(
        cls, hash_bits: int, kind: str = "flat", *, b: int | None = None, nhash: int | None = None
    ) -> "BinaryIndex":
        """An empty index. ``b`` (key bits) and ``nhash`` (keys) tune the hash kinds only.

        Defaults: hash keys on min(K, 16) bits (65,536 buckets); multihash uses 16-bit keys
        for K >= 32 and 8-bit keys below, as many disjoint keys as fit in K (2 to 4).
        """
        check_bits(hash_bits)
        if kind == "flat":
            sub = faiss.IndexBinaryFlat(_stored_bits(hash_bits, kind))
        elif kind == "hash":
            b = min(hash_bits, 16) if b is None else b
            check_int("b", b, 1, min(hash_bits, 32))
            sub = faiss.IndexBinaryHash(hash_bits, b)
        elif kind == "multihash":
            b = (16 if hash_bits >= 32 else 8) if b is None else b
            check_int("b", b, 1, min(hash_bits, 32))
            nhash = hash_bits // b if nhash is None else nhash
            check_int("nhash", nhash, 1, hash_bits // b)
            sub = faiss.IndexBinaryMultiHash(hash_bits, nhash, b)
        else:
            raise ValueError(f"index kind must be one of {KINDS}; got {kind!r}")
        out = cls(faiss.IndexBinaryIDMap2(sub), hash_bits)
        out._sub = sub  # keep the Python owner of the sub-index alive as long as the wrapper
        return out

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All stored ids, in insertion order. Shape: (ntotal,) int64."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add codes under the given ids; ids must be new and unique."""
        codes, ids = self._check_new(codes, ids)
        with self._lock:
            self._index.add_with_ids(self._stored(codes), ids)

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, then os.replace."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with self._lock:
            data = faiss.serialize_index_binary(self._index)
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC + struct.pack("<H", self.hash_bits))
                f.write(data.tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("saved %s index of %d codes to %s", self.kind, self.ntotal, path)

    @classmethod
    def load(cls, path: str | Path) -> "BinaryIndex":
        """Read an index written by :meth:`save`; ValueError names the file if it is unusable.

        Files without the header (hashveil before padded flat storage) are plain FAISS indexes
        of unpadded codes and still load.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no index file at {path}; run `hashveil build-index` first") from None
        except OSError as e:
            raise ValueError(f"cannot read index file {path}: {e}") from None
        hash_bits = None
        if raw.startswith(_MAGIC):
            header = len(_MAGIC) + 2
            if len(raw) < header:
                raise ValueError(f"index file {path} is truncated in its header")
            (hash_bits,) = struct.unpack("<H", raw[len(_MAGIC) : header])
            raw = raw[header:]
        data = np.frombuffer(raw, dtype=np.uint8)
        try:
            index = faiss.deserialize_index_binary(data)
        except RuntimeError as e:
            raise ValueError(
                f"index file {path} is corrupt or not a FAISS binary index: {str(e).splitlines()[-1]}"
            ) from None
        if not isinstance(index, faiss.IndexBinaryIDMap2):
            raise ValueError(f"index file {path} holds a {type(index).__name__}, not an IndexBinaryIDMap2")
        try:
            return cls(index, hash_bits)
        except (TypeError, ValueError) as e:
            raise ValueError(f"index file {path} is not a hashveil index: {e}") from None

    def use_gpu(self, device: int = 0) -> bool:
        """Answer the k-NN scan of a flat index on GPU ``device``; False where FAISS has no GPU.

        Only distances come from the GPU copy (it has no ids); the exact range search that
        picks the items, ties by id, stays on the CPU. Codes added later are not copied.
        """
        if self.kind != "flat" or not hasattr(faiss, "GpuIndexBinaryFlat") or faiss.get_num_gpus() <= device:
            return False
        config = faiss.GpuIndexBinaryFlatConfig()
        config.device = device
        self._gpu_resources = faiss.StandardGpuResources()
        gpu = faiss.GpuIndexBinaryFlat(self._gpu_resources, 8 * self._stored_bytes, config)
        gpu.add(faiss.vector_to_array(self._sub.xb).reshape(-1, self._stored_bytes))
        self._gpu = gpu
        log.info("k-NN scan of %d codes on GPU %d", self.ntotal, device)
        return True

    # FAISS mechanics below

    def _range(self, codes: np.ndarray, radius: int) -> Results:
        """Exact inclusive range search on validated input; sorted by (distance, id)."""
        with self._lock:
            if self.kind == "flat" and self._stored_bytes in WORD_DTYPES:
                return self._scan(codes, radius)
            self._set_nflip(radius)
            lims, dist, ids = self._index.range_search(self._stored(codes), radius + 1)
        out: Results = []
        for i in range(codes.shape[0]):
            d = dist[lims[i] : lims[i + 1]].astype(np.int64)
            j = ids[lims[i] : lims[i + 1]].astype(np.int64)
            order = np.lexsort((j, d))
            out.append((j[order], d[order]))
        return out

    def _scan(self, codes: np.ndarray, radius: int) -> Results:
        """The flat kind's range search: retrieval.service.scan's kernel over FAISS's own code and
        id arrays, read in place (the caller holds the lock that add() takes)."""
        n, dtype = self.ntotal, WORD_DTYPES[self._stored_bytes]
        if n == 0:
            return [(np.empty(0, np.int64), np.empty(0, np.int64)) for _ in range(codes.shape[0])]
        words = faiss.rev_swig_ptr(self._sub.xb.data(), n * self._stored_bytes).view(dtype)
        id_map = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        out: Results = []
        for query in self._stored(codes):
            rows, dist = range_rows(words, query.view(dtype), radius)
            ids = id_map[rows].astype(np.int64)
            order = np.lexsort((ids, dist))
            out.append((ids[order], dist[order]))
        return out

    def _set_nflip(self, radius: int) -> None:
        """Make the hash kinds exact for ``radius`` (see the module docstring)."""
        if self.kind == "hash":
            self._sub.nflip = min(radius, int(self._sub.b))
        elif self.kind == "multihash":
            self._sub.nflip = min(radius // int(self._sub.nhash), int(self._sub.b))

    def _kth_distances(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Distance of each query's k-th nearest item (k <= ntotal). Shape: (n,) int64."""
        if self.kind == "flat":
            with self._lock:
                dist, _ = (self._gpu or self._index).search(self._stored(codes), k)
            return dist[:, k - 1].astype(np.int64)
        return self._kth_by_widening(codes, k)

    def _stored(self, codes: np.ndarray) -> np.ndarray:
        """Validated codes as the FAISS index stores them: zero-padded to its width (flat), with
        spare bytes after the buffer's end (hash kinds read keys as 8-byte words)."""
        n, width = codes.shape
        buf = np.zeros((n * self._stored_bytes + _PAD,), dtype=np.uint8)
        rows = buf[: n * self._stored_bytes].reshape(n, self._stored_bytes)
        rows[:, :width] = codes
        return rows


def _stored_bits(hash_bits: int, kind: str) -> int:
    return _FLAT_STORED_BITS.get(hash_bits, hash_bits) if kind == "flat" else hash_bits


def _kind_of(sub: faiss.IndexBinary) -> str:
    if isinstance(sub, faiss.IndexBinaryFlat):
        return "flat"
    if isinstance(sub, faiss.IndexBinaryHash):
        return "hash"
    if isinstance(sub, faiss.IndexBinaryMultiHash):
        return "multihash"
    raise ValueError(f"unsupported FAISS sub-index {type(sub).__name__}; expected one of {KINDS}")
