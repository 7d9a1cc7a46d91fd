"""The audit's HTML reports: thumbnails inlined as base64 PNG, no external files.

Original / sent / amplified perturbation, and the attacker's top results read by id.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence

import torch

from audit.replay import AttackerView, AuditReport, PairAudit
from audit.report import format_summary
from retrieval.core.imaging import decode_image, load_image, to_pil, to_png, to_tensor
from retrieval.service.records import QueryLogRow
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)


def _img_tag(image: torch.Tensor | None, title: str, size: int = 128) -> str:
    if image is None:
        return f'<figure><div class="missing">{html.escape(title)}: unavailable</div></figure>'
    pil = to_pil(image)
    pil.thumbnail((size, size))
    data = base64.b64encode(to_png(pil)).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def _result_tags(searcher: Searcher, view: AttackerView, shown: int) -> str:
    tags = []
    for item in view.basis[:shown]:
        try:
            image = to_tensor(load_image(searcher.image_path(item.id)))
        except (KeyError, ValueError) as e:
            log.warning("cannot show image %d: %s", item.id, e)
            image = None
        tags.append(_img_tag(image, f"#{item.id} d={item.distance} {'|'.join(item.labels)}", 72))
    return "".join(tags)


def _view_html(searcher: Searcher, title: str, view: AttackerView, shown: int) -> str:
    votes = ", ".join(f"{html.escape(k)}: {n}" for k, n in view.votes.items()) or "none"
    return (
        f"<h3>{html.escape(title)}: inferred {html.escape(str(view.inferred_label))}</h3>"
        f"<p>{len(view.within_radius)} items within radius {view.radius}; votes ({view.inferred_from}): "
        f"{votes}</p><div class=row>{_result_tags(searcher, view, shown)}</div>"
    )


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:4px;text-align:center}"
        "figcaption{font-size:11px;max-width:130px}.row{display:flex;flex-wrap:wrap}"
        "section{border-top:1px solid #ccc;padding:1em 0}.missing{width:72px;height:72px;background:#eee}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def pair_html(
    pair: PairAudit, searcher: Searcher, original: torch.Tensor, sent: torch.Tensor, shown: int = 8
) -> str:
    """Original / sent / amplified perturbation, and what each retrieves, as one HTML page."""
    diff = (sent.float() - original.float()).abs()
    amplified = diff / diff.max() if float(diff.max()) > 0 else diff
    images = (
        _img_tag(original, "original")
        + _img_tag(sent, "sent")
        + _img_tag(amplified, f"|sent - original| x {1 / max(float(diff.max()), 1e-12):.0f}")
    )
    body = (
        f"<pre>{html.escape(format_summary(pair))}</pre><div class=row>{images}</div>"
        + _view_html(searcher, "What the original would reveal", pair.original, shown)
        + _view_html(searcher, "What the sent image reveals", pair.sent, shown)
    )
    return _page("hashveil audit: original versus sent", body)


def log_html(report: AuditReport, searcher: Searcher, rows: Sequence[QueryLogRow], shown: int = 8) -> str:
    """Every logged query: the upload as the service holds it and what the attacker retrieves."""
    uploads = {r.id: r.upload for r in rows}
    sections = []
    for e in report.entries:
        data, image = uploads.get(e.log_id), None
        if data is not None:
            try:
                image = to_tensor(decode_image(data))
            except ValueError:
                image = None
        leak = "" if e.leakage is None else f", leakage {e.leakage:.0%}"
        sections.append(
            f"<section><h2>#{e.log_id} ({html.escape(e.upload_type)}, {html.escape(e.created_at)}): "
            f"{e.verdict}{leak}</h2><div class=row>{_img_tag(image, 'as logged')}</div>"
            + _view_html(searcher, "Attacker's view", e.view, shown)
            + "</section>"
        )
    body = f"<pre>{html.escape(format_summary(report))}</pre>" + "".join(sections)
    return _page("hashveil audit of the query log", body)
