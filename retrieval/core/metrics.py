"""Retrieval quality: mean average precision over Hamming ranking (MAP and the paper's t-MAP).

Ranking: database items sorted by Hamming distance to the query, ties broken by item id
(ascending), so results are deterministic. Relevance: sharing at least one label.
AP@k = (1 / R_k) * sum_{i <= k} P@i * rel_i, with R_k the relevant items among the top k.
A query with no relevant item in its top k scores AP = 0 and still counts in the mean (the
convention of the DPSH and DHTA code); :func:`mean_average_precision` reports how many there were.
t-MAP is the same computation with each query's labels replaced by its target label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.core.codes import as_codes, unpack


@dataclass(frozen=True)
class MapResult:
    map: float
    ap: np.ndarray  # (q,) AP of each query
    no_relevant: int  # queries with no relevant item in their top k

    def __float__(self) -> float:
        return self.map


def mean_average_precision(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    db_ids: np.ndarray | None = None,
    topk: int = 0,
    chunk: int = 256,
) -> MapResult:
    """MAP@k (topk = 0: all) of Hamming ranking.

    Shape: query_codes (q, B) uint8, query_labels (q, L) multi-hot, db_codes (n, B),
    db_labels (n, L), db_ids (n,) used to break distance ties (default: row order).
    """
    query_codes, db_codes = as_codes(query_codes), as_codes(db_codes)
    if len(query_codes) != len(query_labels) or len(db_codes) != len(db_labels):
        raise ValueError("codes and labels must have the same number of rows")
    n = len(db_codes)
    k = n if topk <= 0 else min(topk, n)
    order_by_id = np.argsort(db_ids, kind="stable") if db_ids is not None else np.arange(n)
    db_bits = unpack(db_codes[order_by_id]).numpy()
    db_lab = (np.asarray(db_labels)[order_by_id] > 0).astype(np.float32)
    q_lab_all = (np.asarray(query_labels) > 0).astype(np.float32)
    bits = db_bits.shape[1]
    aps = []
    for start in range(0, len(query_codes), chunk):
        q_bits = unpack(query_codes[start : start + chunk]).numpy()
        dist = np.rint((bits - q_bits @ db_bits.T) / 2)  # (c, n) exact small ints
        rank = np.argsort(dist, axis=1, kind="stable")[:, :k]  # stable: ties keep id order
        rel = q_lab_all[start : start + chunk] @ db_lab.T > 0  # (c, n)
        rel_k = np.take_along_axis(rel, rank, axis=1).astype(np.float64)
        hits = np.cumsum(rel_k, axis=1)
        precision = hits / np.arange(1, k + 1)
        n_rel = rel_k.sum(axis=1)
        ap = np.where(n_rel > 0, (precision * rel_k).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
        aps.append(ap)
    ap = np.concatenate(aps) if aps else np.zeros(0)
    return MapResult(float(ap.mean()) if len(ap) else 0.0, ap, int((ap == 0).sum()))
