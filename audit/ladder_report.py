"""The attacker ladder's outputs: a terminal table, per-query lines, CSV rows, markdown, JSON.

The markdown includes the plain-words table "What each mode protects you from": for each
protection, the attackers it defeats (true label inferred for at most chance + ``DEFEAT_MARGIN``
of its uploads), those it does not, and what to use instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from audit.ladder import BASELINE, AttackerInfo, LadderEntry, LadderSummary

DEFEAT_MARGIN = 0.10  # "defeated": at most chance + 10 points of true labels inferred
ADVICE = {
    "semantic": "Against a server that re-encodes, runs its own model or looks at the image, do not "
    "send the image: use carrier mode, whose results still reveal the label you search for.",
    "untargeted": "As for semantic mode; also, its target is the complement of the image's own code, "
    "which an attacker who knows the client reads straight back.",
    "carrier": "Nothing sent shows the private image, but the results reveal its label to every "
    "attacker: if the label itself is the secret, do not search for it.",
    "semantic-robust": "Holds against the re-encodings it checks (JPEG 60, WebP 80, 0.5x resize) and "
    "milder ones, not against harsher ones (JPEG 50, WebP 70), a model of the attacker's own or someone "
    "looking at the image: against those, use carrier mode, whose results still reveal the label you "
    "search for.",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _auc(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(s: LadderSummary) -> str:
    """One table: a row per attacker, the share of true labels inferred per group, then AUCs."""
    protected = [g for g in s.groups if g != BASELINE]
    head = ["attacker", *(f"{g} (n={s.labelled[g]})" for g in s.groups), *(f"AUC {g}" for g in protected)]
    rows = [head]
    for a in s.attackers:
        auc = s.auc.get(a.name, {})
        rows.append(
            [a.name, *(_pct(s.shares[a.name][g]) for g in s.groups), *(_auc(auc.get(g)) for g in protected)]
        )
    rows.append(["chance", *(_pct(s.chance[g]) for g in s.groups), *("0.50" for _ in protected)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def per_query(entries: Sequence[LadderEntry]) -> str:
    """One line per upload: its group, its true labels and every attacker's guess."""
    lines = []
    for e in entries:
        truth = "?" if e.truth is None else "|".join(e.truth) or "-"
        guesses = " ".join(f"{n}={g or '-'}" for n, g in e.guesses.items())
        scores = " ".join(f"{n}:{v:.3g}" for n, v in e.scores.items())
        lines.append(
            f"#{e.id} {e.group} true {truth}: {guesses}" + (f"  [detect {scores}]" if scores else "")
        )
    return "\n".join(lines)


def csv_rows(s: LadderSummary) -> list[dict]:
    """Long format: one row per (attacker, group) with the share and the detector's AUC."""
    rows = []
    for a in s.attackers:
        for g in s.groups:
            rows.append(
                {
                    "attacker": a.name,
                    "rung": a.rung,
                    "group": g,
                    "uploads": s.labelled[g],
                    "true_label_inferred": s.shares[a.name][g],
                    "detector_auc": s.auc.get(a.name, {}).get(g),
                    "chance": s.chance[g],
                }
            )
    return rows


def markdown(s: LadderSummary) -> str:
    """The ladder table in markdown: rung, attacker, share per group, detector AUC per group."""
    protected = [g for g in s.groups if g != BASELINE]
    head = [
        "rung",
        "attacker",
        *(f"{g} ({s.labelled[g]})" for g in s.groups),
        *(f"detector AUC, {g}" for g in protected),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in s.attackers:
        auc = s.auc.get(a.name, {})
        cells = [a.rung, a.description, *(_pct(s.shares[a.name][g]) for g in s.groups)]
        cells += [_auc(auc.get(g)) if a.detects else "" for g in protected]
        lines.append("| " + " | ".join(cells) + " |")
    chance = " | ".join(_pct(s.chance[g]) for g in s.groups)
    lines.append(f"| | chance (always the group's most common label) | {chance} |" + " |" * len(protected))
    return "\n".join(lines)


def protects_from(s: LadderSummary) -> str:
    """The plain-words table: per protection, which attackers it defeats and which it does not."""
    lines = [
        "| mode | defeats (true label inferred) | does not defeat (true label inferred; plain uploads) | what to use instead |",
        "|---|---|---|---|",
    ]
    for g in (g for g in s.groups if g != BASELINE):
        won, lost = [], []
        for a in s.attackers:
            share = s.shares[a.name][g]
            if share is None:
                continue
            base = s.shares[a.name].get(BASELINE)
            if share <= (s.chance[g] or 0.0) + DEFEAT_MARGIN:
                won.append(f"{a.name} ({_pct(share)})")
            else:
                lost.append(f"{a.name} ({_pct(share)}; {_pct(base)})")
        advice = ADVICE.get(g, ADVICE.get(g.split("-")[0], ""))
        lines.append(f"| {g} | {', '.join(won) or 'none'} | {', '.join(lost) or 'none'} | {advice} |")
    return "\n".join(lines)


def to_json(s: LadderSummary, **extra) -> dict:
    """What the privacy client shows beside its own estimate (``webui/static/attackers.json``)."""
    rows = [
        {"attacker": a.name, "rung": a.rung, "description": a.description, "shares": s.shares[a.name]}
        for a in s.attackers
    ]
    return {
        **extra,
        "chance": s.chance,
        "groups": list(s.groups),
        "labelled": s.labelled,
        "rows": rows,
        "auc": s.auc,
        "attackers": [asdict(a) for a in s.attackers],
    }


def summary_from_json(saved: dict) -> LadderSummary:
    """The summary back from :func:`to_json`'s output (to re-render a finished run's reports)."""
    return LadderSummary(
        tuple(saved["groups"]),
        tuple(AttackerInfo(**a) for a in saved["attackers"]),
        saved["labelled"],
        {row["attacker"]: row["shares"] for row in saved["rows"]},
        saved["auc"],
        saved["chance"],
    )
