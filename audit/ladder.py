"""Run the attacker ladder over uploads and summarise it per group of uploads.

Each upload carries its group ("plain", a protection mode, or "all" for a log whose groups are
unknown) and, where known, its true labels. For each attacker and group the summary gives the
share of uploads whose true label it inferred, beside chance (the best guess that ignores the
upload: always the label most common among that group's true labels); for each attacker that detects, the ROC AUC of its score over plain uploads
(negatives) against each other group (positives). Per-query guesses are kept for the report.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audit.attackers import LadderSettings, build_ladder
from audit.attackers.base import Attacker, pixels
from retrieval.service.records import QueryLogRow
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)
BASELINE = "plain"


@dataclass(frozen=True)
class Upload:
    id: int
    data: bytes
    group: str
    truth: tuple[str, ...] | None


@dataclass(frozen=True)
class LadderEntry:
    """One upload as every attacker read it."""

    id: int
    group: str
    truth: tuple[str, ...] | None
    guesses: dict[str, str | None]
    scores: dict[str, float]


@dataclass(frozen=True)
class AttackerInfo:
    name: str
    rung: str
    description: str
    detects: bool


@dataclass(frozen=True)
class LadderSummary:
    """shares[attacker][group]: share of labelled uploads whose true label it inferred (None: no
    labelled upload); auc[attacker][group]: ROC AUC of its detector, plain against that group;
    chance[group]: the share a constant guess of the group's most common true label gets."""

    groups: tuple[str, ...]
    attackers: tuple[AttackerInfo, ...]
    labelled: dict[str, int]
    shares: dict[str, dict[str, float | None]]
    auc: dict[str, dict[str, float | None]]
    chance: dict[str, float | None]


def run_ladder(attackers: Sequence[Attacker], uploads: Sequence[Upload]) -> list[LadderEntry]:
    """Every attacker's guess (and score, where it detects) for every readable upload."""
    readable = [u for u in uploads if _readable(u.data)]
    if len(readable) < len(uploads):
        log.warning("%d uploads are not readable images; the ladder skips them", len(uploads) - len(readable))
    data = [u.data for u in readable]
    guesses: dict[str, list] = {}
    scores: dict[str, list] = {}
    for a in tqdm(attackers, desc="attacker ladder", unit="attacker"):
        guesses[a.name] = a.infer_many(data)
        if a.detects:
            scores[a.name] = a.detect_many(data)
    return [
        LadderEntry(
            u.id,
            u.group,
            u.truth,
            {name: g[i] for name, g in guesses.items()},
            {name: float(s[i]) for name, s in scores.items()},
        )
        for i, u in enumerate(readable)
    ]


def _readable(data: bytes) -> bool:
    try:
        pixels(data)
    except ValueError:
        return False
    return True


def summarise(entries: Sequence[LadderEntry], attackers: Sequence[Attacker]) -> LadderSummary:
    groups = tuple(dict.fromkeys(e.group for e in entries))
    labelled = {g: [e for e in entries if e.group == g and e.truth is not None] for g in groups}
    chance = {g: chance_share([e.truth for e in rows]) if rows else None for g, rows in labelled.items()}
    shares = {
        a.name: {
            g: float(np.mean([e.guesses[a.name] in e.truth for e in rows])) if rows else None
            for g, rows in labelled.items()
        }
        for a in attackers
    }
    auc: dict[str, dict[str, float | None]] = {}
    for a in (a for a in attackers if a.detects):
        plain = [e.scores[a.name] for e in entries if e.group == BASELINE]
        auc[a.name] = {
            g: roc_auc(plain, [e.scores[a.name] for e in entries if e.group == g]) if plain else None
            for g in groups
            if g != BASELINE
        }
    info = tuple(AttackerInfo(a.name, a.rung, a.description, a.detects) for a in attackers)
    return LadderSummary(groups, info, {g: len(r) for g, r in labelled.items()}, shares, auc, chance)


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float | None:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U / (m n))."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    if not len(neg) or not len(pos):
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def chance_share(truths: Sequence[tuple[str, ...]]) -> float:
    """The share of uploads a constant guess gets at best: the most common true label's share."""
    counts = Counter(label for truth in truths for label in set(truth))
    return max(counts.values(), default=0) / len(truths) if truths else 0.0


def ladder_for_log(
    searcher: Searcher,
    rows: Sequence[QueryLogRow],
    settings: LadderSettings,
    cache_dir: Path,
    true_labels: Mapping[int, Iterable[str]] | None = None,
    groups: Mapping[int, str] | None = None,
) -> tuple[list[LadderEntry], LadderSummary]:
    """The ladder over a real query log: every logged upload (code-only queries have no bytes to
    attack and are left out), in the group ``groups`` gives it ("all" without one)."""
    uploads = [
        Upload(
            r.id,
            r.upload,
            (groups or {}).get(r.id, "all"),
            None if true_labels is None or r.id not in true_labels else tuple(sorted(true_labels[r.id])),
        )
        for r in rows
        if r.upload is not None
    ]
    attackers = build_ladder(searcher, settings, cache_dir)
    entries = run_ladder(attackers, uploads)
    return entries, summarise(entries, attackers)
