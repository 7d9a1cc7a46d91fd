"""audit.replay: the attacker's view of logged queries, on the tiny trained model and index.

A plain query and a protected one are logged with the fields the server writes; the audit must
find that the plain one leaks its label and the protected one does not. The HTTP reader is
checked against a real HTTP server that speaks the admin API's documented contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flask import Flask, abort, jsonify, request

from audit.logs import read_log_http, read_log_store, read_true_labels
from audit.replay import AttackerView, AuditReport, PairAudit, Retrieved, audit_log, audit_pair, leakage
from audit.report import format_summary, from_json, to_json
from audit.report_html import log_html, pair_html
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.attacks import make_attack
from privacy.targets import anchor_code
from retrieval.core.codes import hamming, to_hex
from retrieval.core.imaging import decode_image, load_image, to_png, to_tensor
from retrieval.core.votes import majority_label
from retrieval.service.search import open_searcher
from testkit.servers import live_server

RADIUS = 2


@pytest.fixture(scope="module")
def logged(tiny_trained):
    """Log one plain and one protected upload of the same image, as the server would."""
    cfg, _ = tiny_trained
    searcher = open_searcher(cfg)
    store = searcher.store
    names = store.label_names()
    anchors = {n: anchor_code(store.codes_with_label(n, 9, 0)[1]) for n in names}
    # the label the model tells apart best: its anchor is farthest from every other label's
    gap = {n: min(int(hamming(anchors[n], anchors[m])[0, 0]) for m in names if m != n) for n in names}
    label = max(sorted(gap), key=gap.get)
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    index = next(int(i) for i in splits.query if images.label_sets([i])[0] == (label,))
    path = images.root / images.paths[index]
    original = to_tensor(load_image(path))
    own = searcher.encode(original[None])
    target = max(sorted(n for n in names if n != label), key=lambda n: int(hamming(anchors[n], own)[0, 0]))
    # a generous budget: the tiny colour model only gives way to visible changes
    result = make_attack("rnm", searcher.model, eps=0.5, steps=100, step_size=8 / 255, step_rule="sign")(
        original[None], anchors[target]
    )
    assert bool(result.reached[0]), "precondition: the protection reaches the target on the tiny model"
    sent_png = to_png(result.images[0])
    ids = {}
    for kind, data in (("plain", path.read_bytes()), ("protected", sent_png)):
        code = searcher.encode(to_tensor(decode_image(data))[None])[0]
        hits = searcher.search_code(code, RADIUS)
        ids[kind] = store.log_query(
            code=code.tobytes(),
            radius=RADIUS,
            k=None,
            result_ids=[h.id for h in hits],
            upload=data,
            upload_type="image",
            remote_addr="127.0.0.1",
        )
    rows = [r for r in store.query_log(limit=1000) if r.id in ids.values()]
    sent = to_tensor(decode_image(sent_png))
    return dict(
        cfg=cfg,
        searcher=searcher,
        label=label,
        target=target,
        ids=ids,
        rows=rows,
        original=original,
        sent=sent,
    )


def test_audit_tells_a_leaking_query_from_a_protected_one(logged) -> None:
    ids, label = logged["ids"], logged["label"]
    truth = {ids["plain"]: {label}, ids["protected"]: {label}}
    report = audit_log(logged["searcher"], logged["rows"], true_labels=truth)
    entry = {e.log_id: e for e in report.entries}
    plain, protected = entry[ids["plain"]], entry[ids["protected"]]
    assert plain.view.inferred_label == label and plain.leakage >= 0.9 and plain.verdict == "leaks"
    assert protected.view.inferred_label != label and protected.leakage <= 0.1
    assert protected.verdict == "protected"
    assert plain.code_matches_log and protected.code_matches_log  # re-encoding reproduces the log
    assert plain.view.radius == RADIUS and len(plain.view.top_k) == 10
    # the retrieval is the searcher's: same ids as a direct search of the logged code
    direct = logged["searcher"].search_code(np.frombuffer(plain_row(logged).code, np.uint8), RADIUS)
    assert [i.id for i in plain.view.within_radius] == [h.id for h in direct]
    s = report.summary
    assert (s.queries, s.with_upload, s.labelled, s.code_mismatches) == (2, 2, 2, 0)
    assert s.inferred_true_share == 0.5
    assert s.mean_leakage == pytest.approx((plain.leakage + protected.leakage) / 2)
    text = format_summary(report)
    assert "-> leaks" in text and "-> protected" in text


def plain_row(logged):
    return next(r for r in logged["rows"] if r.id == logged["ids"]["plain"])


def test_code_queries_use_the_logged_code(logged) -> None:
    row = plain_row(logged)
    code_only = type(row)(row.id, row.created_at, row.code, row.radius, 3, row.result_ids, None, "code", None)
    entry = audit_log(logged["searcher"], [code_only]).entries[0]
    assert entry.code_matches_log is None and entry.true_labels is None and entry.verdict == "unknown"
    assert entry.view.code == to_hex(np.frombuffer(row.code, np.uint8)) and len(entry.view.top_k) == 3


def test_majority_vote_by_hand() -> None:
    # votes: a 2, b 2, c 1 -> tie between a and b, broken alphabetically; an item votes once a label
    label, votes = majority_label([("b", "a"), ("a", "a"), ("b",), ("c",)])
    assert (label, votes) == ("a", {"a": 2, "b": 2, "c": 1})
    assert majority_label([("z",), ("y", "z")]) == ("z", {"y": 1, "z": 2})
    assert majority_label([]) == (None, {})
    view = AttackerView(
        "00",
        1,
        3,
        (),
        (
            Retrieved(1, 0, ("a",)),
            Retrieved(2, 1, ("b", "c")),
            Retrieved(3, 1, ("c",)),
            Retrieved(4, 1, ("d",)),
        ),
        {},
        "c",
        "radius",
    )
    assert leakage(view, {"c"}) == 0.5 and leakage(view, {"a", "b"}) == 0.5 and leakage(view, {"x"}) == 0


def test_pair_audit_and_reports(logged, tmp_path: Path) -> None:
    searcher, original, sent = logged["searcher"], logged["original"], logged["sent"]
    pair = audit_pair(None, searcher, original, sent, RADIUS)
    assert pair.original.inferred_label == logged["label"] and pair.hides_label
    assert pair.hamming > 0 and 0 < pair.psnr_db < 100 and 0 < pair.linf_255 <= 0.5 * 255 + 1e-3
    assert pair.shared_within_radius == 0
    assert audit_pair(searcher.model, searcher, original, original, RADIUS).hamming == 0
    with pytest.raises(ValueError, match="one shape"):
        audit_pair(None, searcher, original, sent[:, :16], RADIUS)
    assert "hides" in format_summary(pair)
    page = pair_html(pair, searcher, original, sent)
    # original, sent, perturbation and the results of both sides, all inlined
    assert page.count("data:image/png;base64,") == 3 + len(pair.original.basis[:8]) + len(pair.sent.basis[:8])
    assert 'src="http' not in page and "src='http" not in page
    assert from_json(to_json(pair), PairAudit) == pair
    report = audit_log(
        searcher, logged["rows"], true_labels={r.id: {logged["label"]} for r in logged["rows"]}
    )
    page = log_html(report, searcher, logged["rows"])
    assert page.count("data:image/png;base64,") >= 2 + 2
    text = to_json(report)
    assert from_json(text, AuditReport) == report
    assert json.loads(text)["summary"]["labelled"] == 2


def test_read_log_from_store_and_http(logged) -> None:
    cfg, rows = logged["cfg"], logged["rows"]
    from_store = [r for r in read_log_store(cfg.db_url, limit=1000) if r.id in logged["ids"].values()]
    assert from_store == rows
    with live_server(admin_app(rows, token="s3cret")) as url:
        got = read_log_http(url, "s3cret", limit=10)
        assert [(r.id, r.code, r.radius, r.k, r.result_ids, r.upload, r.upload_type) for r in got] == [
            (r.id, r.code, r.radius, r.k, r.result_ids, r.upload, r.upload_type) for r in rows
        ]
        assert [r.created_at for r in got] == [r.created_at for r in rows]
        assert all(r.upload is None for r in read_log_http(url, "s3cret", uploads=False))
        with pytest.raises(ValueError, match="401"):
            read_log_http(url, "wrong")


def test_read_true_labels(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(json.dumps({"3": ["red"], "7": ["blue", "green"]}))
    assert read_true_labels(tmp_path / "t.json") == {3: {"red"}, 7: {"blue", "green"}}
    (tmp_path / "t.csv").write_text("id,labels\n3,red\n7,blue|green\n")
    assert read_true_labels(tmp_path / "t.csv") == {3: {"red"}, 7: {"blue", "green"}}
    (tmp_path / "bad.csv").write_text("query,labels\n3,red\n")
    with pytest.raises(ValueError, match="header"):
        read_true_labels(tmp_path / "bad.csv")


def admin_app(rows, token: str) -> Flask:
    """A WSGI app with the admin routes' documented contract (served by live_server)."""
    app = Flask(__name__)
    by_id = {r.id: r for r in rows}

    def check() -> None:
        if request.headers.get("Authorization") != f"Bearer {token}":
            abort(401)

    @app.get("/api/admin/queries")
    def queries():
        check()
        lo = int(request.args.get("offset", 0))
        hi = lo + int(request.args.get("limit", 100))
        return jsonify(
            queries=[
                {
                    "id": r.id,
                    "created_at": r.created_at.isoformat(),
                    "code": r.code.hex(),
                    "radius": r.radius,
                    "k": r.k,
                    "result_ids": list(r.result_ids),
                    "upload_type": r.upload_type,
                    "has_upload": r.upload is not None,
                }
                for r in rows[lo:hi]
            ]
        )

    @app.get("/api/admin/queries/<int:qid>/upload")
    def upload(qid: int):
        check()
        return by_id[qid].upload, 200, {"Content-Type": "application/octet-stream"}

    return app
