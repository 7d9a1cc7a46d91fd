"""The attacker's view: what a service that keeps its query log learns from each query.

The service stores every upload as received (retrieval.service.store). An attacker with the log and the
index re-runs retrieval on each logged image (or on the logged code when no image was sent) and
reads the labels of what comes back: the majority label is its guess of the query's content.
Where the user's true labels are known, the share of retrieved items that carry one of them
measures the leak. Run on one's own queries, this is the check that a protection worked.

The log is read by ``audit.logs``; ``audit.report`` and ``audit.report_html`` write what this
module finds as a terminal summary, JSON and self-contained HTML.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from privacy.metrics import linf, psnr
from retrieval.core.codes import hamming, to_hex
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import HashNet
from retrieval.core.votes import majority_label
from retrieval.service.records import QueryLogRow
from retrieval.service.search import Hit, Searcher

log = logging.getLogger(__name__)
DEFAULT_TOP_K = 10


@dataclass(frozen=True)
class Retrieved:
    id: int
    distance: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class AttackerView:
    """What one code reveals: the k nearest items, everything within the radius, the guess.

    The guess is a majority vote over the labels of the items within the radius (over the k
    nearest when the radius holds none): ``inferred_from`` says which ("none": nothing retrieved).
    """

    code: str  # hex
    radius: int
    k: int
    top_k: tuple[Retrieved, ...]
    within_radius: tuple[Retrieved, ...]
    votes: dict[str, int]
    inferred_label: str | None
    inferred_from: str

    @property
    def basis(self) -> tuple[Retrieved, ...]:
        """The items the guess was made from."""
        return self.within_radius if self.inferred_from == "radius" else self.top_k


@dataclass(frozen=True)
class AuditEntry:
    log_id: int
    created_at: str
    upload_type: str
    logged_code: str
    code_matches_log: bool | None  # re-encoded upload == logged code; None without an upload
    view: AttackerView
    true_labels: tuple[str, ...] | None
    leakage: float | None  # share of the basis items that carry a true label
    inferred_is_true: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.inferred_is_true is None:
            return "unknown"
        return "leaks" if self.inferred_is_true else "protected"


@dataclass(frozen=True)
class AuditSummary:
    queries: int
    with_upload: int
    labelled: int
    mean_leakage: float | None
    inferred_true_share: float | None  # share of labelled queries whose guess is a true label
    code_mismatches: int


@dataclass(frozen=True)
class AuditReport:
    entries: tuple[AuditEntry, ...]
    summary: AuditSummary


@dataclass(frozen=True)
class PairAudit:
    """What the original would have revealed against what the sent image revealed."""

    original: AttackerView
    sent: AttackerView
    hamming: int
    psnr_db: float
    linf_255: float
    shared_within_radius: int  # items both retrieve within the radius

    @property
    def hides_label(self) -> bool:
        return self.sent.inferred_label != self.original.inferred_label


def attacker_view(searcher: Searcher, code: np.ndarray, radius: int, k: int = DEFAULT_TOP_K) -> AttackerView:
    """Retrieval as the attacker runs it for one packed code (K/8,)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    code = np.asarray(code, dtype=np.uint8).reshape(-1)
    ids, dist = searcher.index.knn(code.reshape(1, -1), k)[0]
    rows = searcher.store.images(ids.tolist())
    top = tuple(Retrieved(int(i), int(d), tuple(rows[int(i)].labels)) for i, d in zip(ids, dist))
    within = _retrieved(searcher.search_code(code, radius, None))
    basis, source = (within, "radius") if within else (top, "nearest" if top else "none")
    label, votes = majority_label(item.labels for item in basis)
    return AttackerView(to_hex(code), radius, k, top, within, votes, label, source)


def _retrieved(hits: list[Hit]) -> tuple[Retrieved, ...]:
    return tuple(Retrieved(h.id, h.distance, tuple(h.labels)) for h in hits)


def leakage(view: AttackerView, true_labels: Iterable[str]) -> float:
    """Precision of the guess's basis against the user's true labels (0 when nothing came back)."""
    truth = set(true_labels)
    basis = view.basis
    return sum(bool(truth & set(item.labels)) for item in basis) / len(basis) if basis else 0.0


def audit_log(
    searcher: Searcher,
    rows: Sequence[QueryLogRow],
    radius: int | None = None,
    k: int | None = None,
    true_labels: Mapping[int, Iterable[str]] | None = None,
) -> AuditReport:
    """Re-run the attacker's retrieval for each logged query.

    Uploaded images are decoded and encoded with the searcher's model; queries sent as codes use
    the logged code. ``radius`` / ``k`` None: each query's logged radius and k (k: 10 if unset).
    ``true_labels`` maps query-log ids to the labels the user knows the image carries.
    """
    entries = []
    for row in tqdm(rows, desc="audit", unit="query"):
        logged = np.frombuffer(row.code, dtype=np.uint8)
        code, matches, note = logged, None, ""
        if row.upload is not None:
            try:
                image = to_tensor(decode_image(row.upload))[None]
                code = searcher.encode(image)[0]
                matches = bool(np.array_equal(code, logged))
            except ValueError as e:
                note = f"upload unreadable ({e}); used the logged code"
        view = attacker_view(
            searcher, code, row.radius if radius is None else radius, k or row.k or DEFAULT_TOP_K
        )
        truth = (
            None if true_labels is None or row.id not in true_labels else tuple(sorted(true_labels[row.id]))
        )
        entries.append(
            AuditEntry(
                row.id,
                row.created_at.isoformat(),
                row.upload_type,
                to_hex(logged),
                matches,
                view,
                truth,
                None if truth is None else leakage(view, truth),
                None if truth is None else view.inferred_label in truth,
                note,
            )
        )
    return AuditReport(tuple(entries), summarise(entries))


def summarise(entries: Sequence[AuditEntry]) -> AuditSummary:
    labelled = [e for e in entries if e.true_labels is not None]
    return AuditSummary(
        queries=len(entries),
        with_upload=sum(e.upload_type == "image" for e in entries),
        labelled=len(labelled),
        mean_leakage=float(np.mean([e.leakage for e in labelled])) if labelled else None,
        inferred_true_share=float(np.mean([e.inferred_is_true for e in labelled])) if labelled else None,
        code_mismatches=sum(e.code_matches_log is False for e in entries),
    )


def audit_pair(
    model: HashNet | None,
    searcher: Searcher,
    original: torch.Tensor,
    sent: torch.Tensor,
    radius: int,
    k: int = DEFAULT_TOP_K,
) -> PairAudit:
    """Compare what ``original`` would reveal with what ``sent`` revealed. Both (3, H, W) in [0, 1].

    ``model`` encodes both (e.g. the client's copy); None uses the searcher's model.
    """
    if original.shape != sent.shape or original.ndim != 3:
        raise ValueError(
            f"original and sent must be (3, H, W) of one shape; got {tuple(original.shape)} "
            f"and {tuple(sent.shape)}"
        )
    x = torch.stack([original, sent]).float()
    if model is None:
        codes = searcher.encode(x)
    else:
        codes = model.eval().encode(x.to(next(model.parameters()).device))
    views = [attacker_view(searcher, c, radius, k) for c in codes]
    return PairAudit(
        views[0],
        views[1],
        int(hamming(codes[:1], codes[1:])[0, 0]),
        float(psnr(x[1:], x[:1])[0]),
        float(linf(x[1:], x[:1])[0]) * 255,
        len({i.id for i in views[0].within_radius} & {i.id for i in views[1].within_radius}),
    )
