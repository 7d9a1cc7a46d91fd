"""MilvusIndex: exact Hamming retrieval in a Milvus collection, the same contract as BinaryIndex.

One collection holds ``id`` (INT64 primary key, ours) and ``code`` (BINARY_VECTOR of K bits, the
packed bytes as they are) under a ``BIN_FLAT`` index with the ``HAMMING`` metric: a brute-force
scan, exact for every radius and k. The uri is a local ``*.db`` path for Milvus Lite (an
in-process server over one file) or ``http(s)://host:port`` for a Milvus server or cluster,
which takes a token ("user:password" or an API key).

Milvus range search keeps ``range_filter <= d < radius`` for HAMMING (strict at the top, as in
FAISS); this module is the only place that knows it and asks for ``[0, radius + 1)``. Milvus
returns at most ``TOPK_CAP`` hits per query, so a range search that comes back full is split
by id range until every piece holds fewer: large radii cost more calls but are never cut.
Every result list is sorted by (distance, id), so ties are broken by id exactly as in
BinaryIndex, and results are identical to its flat kind (tests/test_milvus.py).

Consistency: scans and counts read at Strong level (the collection's); searches at Session
level, which sees this process's writes and what the Strong fingerprint check at open saw. A
served collection is never written again (index_builder.backends), so that is exact, without
Strong's wait for the server's next time tick (200 ms apart by default) on every search.

pymilvus is imported on first use (retrieval.service.milvus_client), so FAISS users need not
install it.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from retrieval.core.codes import check_bits
from retrieval.service.backend import HammingSearch, Results
from retrieval.service.milvus_client import connect

log = logging.getLogger(__name__)

TOPK_CAP = 16384  # Milvus's largest limit (topk) per query
_QUERY_BATCH = 64  # queries per search call: at most 64 * TOPK_CAP hits in one reply
_INSERT_BATCH = 20_000
_ID, _CODE = "id", "code"
_SEARCH_CONSISTENCY = "Session"


class MilvusIndex(HammingSearch):
    """Packed (n, K/8) uint8 codes with int64 ids in one Milvus collection; exact search."""

    kind = "flat"  # BIN_FLAT: the only exact Milvus index for binary vectors

    def __init__(self, client, uri: str, collection: str, hash_bits: int) -> None:
        """Wrap an open client; use :meth:`create` or :meth:`open`."""
        self._client = client
        self.uri = uri
        self.collection = collection
        self.hash_bits = check_bits(hash_bits)
        self._bounds: tuple[int, int] | None = None  # (min id, max id), for splitting full pages
        self._count: int | None = None  # ntotal; only this object writes while it is open

    @classmethod
    def create(
        cls, uri: str, collection: str, hash_bits: int, *, token: str = "", replace: bool = False
    ) -> "MilvusIndex":
        """An empty collection; with ``replace`` an existing one of that name is dropped first."""
        check_bits(hash_bits)
        client = connect(uri, token, collection)
        from pymilvus import DataType

        if client.has_collection(collection):
            if not replace:
                raise ValueError(f"Milvus collection {collection!r} already exists at {uri}")
            client.drop_collection(collection)
        schema = client.create_schema(
            auto_id=False, enable_dynamic_field=False, description=f"hashveil {hash_bits}-bit codes"
        )
        schema.add_field(_ID, DataType.INT64, is_primary=True)
        schema.add_field(_CODE, DataType.BINARY_VECTOR, dim=hash_bits)
        params = client.prepare_index_params()
        params.add_index(field_name=_CODE, index_type="BIN_FLAT", metric_type="HAMMING")
        client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        return cls(client, uri, collection, hash_bits)

    @classmethod
    def open(cls, uri: str, collection: str, *, token: str = "") -> "MilvusIndex":
        """An existing collection written by :meth:`create`; ValueError says what is wrong with it."""
        client = connect(uri, token, collection)
        from pymilvus import DataType

        if not client.has_collection(collection):
            raise FileNotFoundError(
                f"no Milvus collection {collection!r} at {uri}; run `hashveil build-index` first"
            )
        fields = {f["name"]: f for f in client.describe_collection(collection)["fields"]}
        code = fields.get(_CODE, {})
        bits = code.get("params", {}).get("dim")
        if set(fields) != {_ID, _CODE} or code.get("type") != DataType.BINARY_VECTOR:
            raise ValueError(
                f"Milvus collection {collection!r} at {uri} is not a hashveil index: fields {sorted(fields)}"
            )
        try:
            out = cls(client, uri, collection, int(bits))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Milvus collection {collection!r} at {uri}: {e}") from None
        client.load_collection(collection)
        return out

    @classmethod
    def open_or_create(cls, uri: str, collection: str, hash_bits: int, *, token: str = "") -> "MilvusIndex":
        """The collection, created if missing; several processes may race to create it."""
        check_bits(hash_bits)
        try:
            return cls.create(uri, collection, hash_bits, token=token)
        except Exception:  # it exists, or another process created it first (a MilvusException)
            index = cls.open(uri, collection, token=token)
        if index.hash_bits != hash_bits:
            index.close()
            raise ValueError(
                f"Milvus collection {collection!r} holds {index.hash_bits}-bit codes, not {hash_bits}"
            )
        return index

    @property
    def ntotal(self) -> int:
        if self._count is None:
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            self._count = int(rows[0]["count(*)"])
        return self._count

    def ids(self, lo: int | None = None, hi: int | None = None) -> np.ndarray:
        """Stored ids (with ``lo <= id <= hi`` when given) in ascending order. Shape: (m,)."""
        return self._scan(with_codes=False, bounds=None if lo is None else (int(lo), int(hi)))[0]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, code) in id order. Shape: (ntotal,) int64 and (ntotal, K/8) uint8."""
        return self._scan(with_codes=True)

    def fingerprint(self) -> str:
        """sha256 over every (id, code) in id order, byte for byte as Store.fingerprint makes it."""
        ids, codes = self.items()
        h = hashlib.sha256()
        width = codes.shape[1].to_bytes(4, "little")
        for image_id, code in zip(ids.tolist(), codes):
            h.update(image_id.to_bytes(8, "little", signed=True))
            h.update(width + code.tobytes())
        return h.hexdigest()

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add codes under the given ids; ids must be new and unique (Milvus would keep both)."""
        codes, ids = self._check_new(codes, ids)
        self._write(self._client.insert, codes, ids)
        log.info("added %d codes to Milvus collection %s", len(ids), self.collection)

    def upsert(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Write codes under unique ids, replacing rows with the same id: safe to repeat.

        For shard builds that may run twice over the same ids; a served collection is never upserted.
        """
        codes = self._check_codes(codes)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (codes.shape[0],) or np.unique(ids).size != ids.size:
            raise ValueError(f"ids must be {codes.shape[0]} unique ints; got shape {ids.shape}")
        self._write(self._client.upsert, codes, ids)

    def flush(self) -> None:
        """Seal what was written into persisted segments: a build's last step (seconds on a server)."""
        self._client.flush(self.collection)

    def close(self) -> None:
        """Release the connection (and, for Milvus Lite, the file)."""
        self._client.close()

    def _write(self, call, codes: np.ndarray, ids: np.ndarray) -> None:
        for start in range(0, len(ids), _INSERT_BATCH):
            stop = start + _INSERT_BATCH
            call(
                self.collection,
                [{_ID: i, _CODE: c.tobytes()} for i, c in zip(ids[start:stop].tolist(), codes[start:stop])],
            )
        self._bounds = self._count = None

    # Milvus mechanics below

    def _search(
        self, codes: np.ndarray, limit: int, radius: int | None = None, bounds: tuple[int, int] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """One search call per batch: (ids, distances) per query, unsorted, at most ``limit`` each."""
        params = {} if radius is None else {"radius": radius + 1, "range_filter": 0}
        where = "" if bounds is None else f"{_ID} >= {bounds[0]} and {_ID} <= {bounds[1]}"
        out = []
        for start in range(0, codes.shape[0], _QUERY_BATCH):
            batch = [c.tobytes() for c in codes[start : start + _QUERY_BATCH]]
            hits = self._client.search(
                self.collection,
                data=batch,
                anns_field=_CODE,
                limit=limit,
                filter=where,
                output_fields=[],
                search_params={"metric_type": "HAMMING", "params": params},
                consistency_level=_SEARCH_CONSISTENCY,
            )
            for found in hits:
                out.append(
                    (
                        np.array([h[_ID] for h in found], dtype=np.int64),
                        np.rint([h["distance"] for h in found]).astype(np.int64),
                    )
                )
        return out

    def _range(self, codes: np.ndarray, radius: int) -> Results:
        """Exact inclusive range search on validated input; sorted by (distance, id)."""
        out: Results = []
        for i, (ids, dist) in enumerate(self._search(codes, TOPK_CAP, radius)):
            if len(ids) >= TOPK_CAP:  # possibly cut: gather it again in id ranges
                ids, dist = self._split_range(codes[i : i + 1], radius, self._id_bounds())
            order = np.lexsort((ids, dist))
            out.append((ids[order], dist[order]))
        return out

    def _split_range(
        self, code: np.ndarray, radius: int, bounds: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every hit of one query with lo <= id <= hi, halving the id range while pages come back full."""
        pending, got_ids, got_dist = [bounds], [], []
        while pending:
            lo, hi = pending.pop()
            ids, dist = self._search(code, TOPK_CAP, radius, (lo, hi))[0]
            if len(ids) < TOPK_CAP or lo == hi:
                got_ids.append(ids)
                got_dist.append(dist)
                continue
            mid = lo + (hi - lo) // 2
            pending += [(lo, mid), (mid + 1, hi)]
        return np.concatenate(got_ids), np.concatenate(got_dist)

    def _kth_distances(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Distance of each query's k-th nearest item (k <= ntotal). Shape: (n,) int64."""
        if k <= TOPK_CAP:  # the k nearest, whatever Milvus's tie order, end at the k-th distance
            return np.array([dist.max() for _, dist in self._search(codes, k)], dtype=np.int64)
        return self._kth_by_widening(codes, k)

    def _id_bounds(self) -> tuple[int, int]:
        if self._bounds is None:
            ids = self.ids()
            self._bounds = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
        return self._bounds

    def _scan(
        self, *, with_codes: bool, bounds: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, code) row (lo <= id <= hi with bounds), sorted by id. Shape: (n,) int64, (n, K/8) uint8."""
        fields = [_ID, _CODE] if with_codes else [_ID]
        where = "" if bounds is None else f"{_ID} >= {bounds[0]} and {_ID} <= {bounds[1]}"
        it = self._client.query_iterator(
            self.collection, batch_size=TOPK_CAP, filter=where, output_fields=fields
        )
        ids, codes = [], []
        try:
            while page := it.next():
                ids.extend(row[_ID] for row in page)
                if with_codes:
                    codes.extend(_row_code(row[_CODE]) for row in page)
        finally:
            it.close()
        ids_arr = np.array(ids, dtype=np.int64)
        width = self.hash_bits // 8
        codes_arr = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(-1, width)
        order = np.argsort(ids_arr, kind="stable")
        return ids_arr[order], (codes_arr[order] if with_codes else codes_arr)


def _row_code(value) -> bytes:
    """pymilvus returns a BINARY_VECTOR as bytes, or as a list holding one bytes object."""
    return bytes(value[0]) if isinstance(value, list) else bytes(value)
