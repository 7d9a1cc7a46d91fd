"""The attacker's view: what a service that keeps its query log learns from each query.

The service stores every upload as received (retrieval.store). An attacker with the log and the
index re-runs retrieval on each logged image (or on the logged code when no image was sent) and
reads the labels of what comes back: the majority label is its guess of the query's content.
Where the user's true labels are known, the share of retrieved items that carry one of them
measures the leak. Run on one's own queries, this is the check that a protection worked.

Reading the log: from a Store (SQLAlchemy URL), or from a server over HTTP at
``GET {server}/api/admin/queries?limit=N&offset=M`` and ``GET {server}/api/admin/queries/<id>/upload``
with ``Authorization: Bearer <token>``. Outputs: a terminal summary, JSON and self-contained HTML.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import types
import typing
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import requests
import torch
from tqdm import tqdm

from privacy.client import raise_for_status
from privacy.metrics import linf, psnr
from retrieval.codes import hamming, to_hex
from retrieval.imaging import decode_image, to_tensor
from retrieval.model import HashNet
from retrieval.search import Hit, Searcher
from retrieval.store import QueryLogRow, Store

log = logging.getLogger(__name__)
DEFAULT_TOP_K = 10
LOG_FIELDS = ("id", "created_at", "code", "radius", "k", "result_ids", "upload_type", "has_upload")


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


def majority_label(label_sets: Iterable[Iterable[str]]) -> tuple[str | None, dict[str, int]]:
    """The most frequent label (each item votes once for each of its labels), ties broken
    alphabetically; None when there is no label. Returns (label, votes sorted by name)."""
    votes = Counter(label for labels in label_sets for label in set(labels))
    if not votes:
        return None, {}
    best = max(votes.values())
    return min(name for name, n in votes.items() if n == best), dict(sorted(votes.items()))


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


def audit_log(searcher: Searcher, rows: Sequence[QueryLogRow], radius: int | None = None,
              k: int | None = None, true_labels: Mapping[int, Iterable[str]] | None = None) -> AuditReport:
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
        view = attacker_view(searcher, code, row.radius if radius is None else radius,
                             k or row.k or DEFAULT_TOP_K)
        truth = None if true_labels is None or row.id not in true_labels else tuple(sorted(true_labels[row.id]))
        entries.append(AuditEntry(
            row.id, row.created_at.isoformat(), row.upload_type, to_hex(logged), matches, view, truth,
            None if truth is None else leakage(view, truth),
            None if truth is None else view.inferred_label in truth, note))
    return AuditReport(tuple(entries), summarise(entries))


def summarise(entries: Sequence[AuditEntry]) -> AuditSummary:
    labelled = [e for e in entries if e.true_labels is not None]
    return AuditSummary(
        queries=len(entries), with_upload=sum(e.upload_type == "image" for e in entries),
        labelled=len(labelled),
        mean_leakage=float(np.mean([e.leakage for e in labelled])) if labelled else None,
        inferred_true_share=float(np.mean([e.inferred_is_true for e in labelled])) if labelled else None,
        code_mismatches=sum(e.code_matches_log is False for e in entries))


def audit_pair(model: HashNet | None, searcher: Searcher, original: torch.Tensor, sent: torch.Tensor,
               radius: int, k: int = DEFAULT_TOP_K) -> PairAudit:
    """Compare what ``original`` would reveal with what ``sent`` revealed. Both (3, H, W) in [0, 1].

    ``model`` encodes both (e.g. the client's copy); None uses the searcher's model.
    """
    if original.shape != sent.shape or original.ndim != 3:
        raise ValueError(f"original and sent must be (3, H, W) of one shape; got {tuple(original.shape)} "
                         f"and {tuple(sent.shape)}")
    x = torch.stack([original, sent]).float()
    if model is None:
        codes = searcher.encode(x)
    else:
        codes = model.eval().encode(x.to(next(model.parameters()).device))
    views = [attacker_view(searcher, c, radius, k) for c in codes]
    return PairAudit(views[0], views[1], int(hamming(codes[:1], codes[1:])[0, 0]),
                     float(psnr(x[1:], x[:1])[0]), float(linf(x[1:], x[:1])[0]) * 255,
                     len({i.id for i in views[0].within_radius} & {i.id for i in views[1].within_radius}))


# ---------------------------------------------------------------- reading the log


def read_log_store(db_url: str, limit: int = 100, offset: int = 0) -> list[QueryLogRow]:
    """Logged queries, newest first, straight from the service's database."""
    store = Store(db_url)
    try:
        return store.query_log(limit, offset)
    finally:
        store.close()


def read_log_http(server: str, token: str, limit: int = 100, offset: int = 0, *, uploads: bool = True,
                  timeout: float = 30.0, session: requests.Session | None = None) -> list[QueryLogRow]:
    """Logged queries from a server's admin API (bearer token), with their uploads when asked."""
    if not token:
        raise ValueError("an admin token is required to read the query log over HTTP")
    http = session or requests.Session()
    base, auth = server.rstrip("/"), {"Authorization": f"Bearer {token}"}
    r = http.get(f"{base}/api/admin/queries", params={"limit": limit, "offset": offset}, headers=auth,
                 timeout=timeout)
    raise_for_status(r)
    body = r.json()
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list):
        raise ValueError(f"{r.url} must answer {{\"queries\": [...]}}; got {str(body)[:200]}")
    rows = []
    for item in body["queries"]:
        missing = [f for f in LOG_FIELDS if not isinstance(item, dict) or f not in item]
        if missing:
            raise ValueError(f"{r.url}: a query lacks {missing}: {str(item)[:200]}")
        upload = None
        if uploads and item["has_upload"]:
            u = http.get(f"{base}/api/admin/queries/{int(item['id'])}/upload", headers=auth, timeout=timeout)
            raise_for_status(u)
            upload = u.content
        rows.append(QueryLogRow(int(item["id"]), datetime.fromisoformat(item["created_at"]),
                                bytes.fromhex(item["code"]), int(item["radius"]),
                                None if item["k"] is None else int(item["k"]),
                                tuple(int(i) for i in item["result_ids"]), upload, item["upload_type"], None))
    return rows


def read_true_labels(path: str | Path) -> dict[int, set[str]]:
    """A JSON object {"<log id>": ["label", ...]} or a CSV with header id,labels (labels '|'-separated)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object of id -> labels; got {type(raw).__name__}")
        return {int(key): set(value) for key, value in raw.items()}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [n.strip() for n in reader.fieldnames] != ["id", "labels"]:
            raise ValueError(f"{path}: header must be 'id,labels'; got {reader.fieldnames!r}")
        return {int(row["id"]): {s.strip() for s in row["labels"].split("|") if s.strip()} for row in reader}


# ---------------------------------------------------------------- outputs


def to_json(result: AuditReport | PairAudit) -> str:
    return json.dumps(dataclasses.asdict(result), indent=2)


def from_json(text: str, cls: type[AuditReport] | type[PairAudit] = AuditReport) -> AuditReport | PairAudit:
    """Rebuild a report from :func:`to_json` output (equal to the original)."""
    return _build(cls, json.loads(text))


def _build(tp, value):
    """Rebuild a value of type ``tp`` (dataclasses, tuples, optionals, dicts) from JSON data."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp)
                     if f.name in value})
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _build(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        return tuple(_build(args[0], v) for v in value)
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    return value


def format_summary(result: AuditReport | PairAudit) -> str:
    """A few readable lines for the terminal."""
    if isinstance(result, PairAudit):
        o, s = result.original, result.sent
        return "\n".join([
            f"original: the service would infer {o.inferred_label!r} from {len(o.basis)} items ({o.inferred_from})",
            f"sent:     the service infers {s.inferred_label!r} from {len(s.basis)} items ({s.inferred_from})",
            f"codes differ in {result.hamming} bits; PSNR {result.psnr_db:.2f} dB; L_inf {result.linf_255:.1f}/255; "
            f"{result.shared_within_radius} results shared within radius {s.radius}",
            "verdict: " + ("the sent image hides the original's label" if result.hides_label
                           else "the sent image reveals the same label as the original")])
    s = result.summary
    lines = [f"{s.queries} logged queries ({s.with_upload} with an image, {s.labelled} with known labels, "
             f"{s.code_mismatches} whose upload re-encodes to another code)"]
    if s.labelled:
        lines.append(f"mean leakage {s.mean_leakage:.0%}; the inferred label is a true label for "
                     f"{s.inferred_true_share:.0%} of them")
    for e in result.entries:
        v = e.view
        truth = "?" if e.true_labels is None else "|".join(e.true_labels) or "-"
        leak = "" if e.leakage is None else f" leakage {e.leakage:.0%}"
        lines.append(f"#{e.log_id} {e.upload_type:<5} inferred {v.inferred_label!r} from {len(v.basis)} "
                     f"items ({v.inferred_from}, r={v.radius}); true {truth};{leak} -> {e.verdict}")
    return "\n".join(lines)


__all__ = ["AttackerView", "AuditEntry", "AuditReport", "AuditSummary", "PairAudit", "Retrieved",
           "attacker_view", "audit_log", "audit_pair", "format_summary", "from_json",
           "leakage", "majority_label", "read_log_http", "read_log_store",
           "read_true_labels", "summarise", "to_json"]
