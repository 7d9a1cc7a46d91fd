"""The decoy rung: an attacker who sees the K uploads of one query with decoys and must name the
label of the real one.

It knows the client (Kerckhoffs): K carriers come in one burst, one pushed to the code of the
user's image, K - 1 to codes of database items of other labels. It is told which uploads form
one query (a real server would have to guess that from addresses and times). It picks one upload
and names the label the server's retrieval gives it. Each strategy scores the uploads of a query
and picks the top one (ties broken at random) on one feature, in either direction: arrival order,
file size, the gap before it, how many database items share its code or lie within the radius,
its distance to the nearest database code, how unanimous its retrieved labels are, its distance
to its label's centre code (the sign of the sum of that label's codes, the P2S anchor of all of
them), how close its relaxed outputs are to 0, and how many bits a JPEG re-encode flips. The
``learned`` strategy is a conditional logit over all of them, fitted on half of the queries and
scored on the other half (both ways round).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.attackers.base import CodeReader
from audit.attackers.inversion import KnowsTheClient
from audit.attackers.naive import NaiveServer
from audit.attackers.reencoding import ReencodingServer
from privacy.targets import anchor_code
from retrieval.core.codes import hamming
from retrieval.service.search import Searcher

FEATURES = (
    "position",
    "file_bytes",
    "gap_s",
    "exact_matches",
    "matches_in_radius",
    "nearest_distance",
    "vote_share",
    "centre_distance",
    "min_margin",
    "jpeg_flips",
)
# (name, feature, sign): the upload with the highest sign * feature is named the real one
STRATEGIES = [("first", "position", -1.0), ("last", "position", 1.0)] + [
    (f"{'most' if sign > 0 else 'least'} {feature}", feature, sign)
    for feature in FEATURES[1:]
    for sign in (1.0, -1.0)
]


@dataclass(frozen=True)
class DecoyGroup:
    """The uploads of one query with decoys, in arrival order; ``real`` is only read to score."""

    uploads: tuple[bytes, ...]
    times: tuple[float, ...]  # arrival times in seconds
    truth: tuple[str, ...]  # the real query's true labels
    real: int


@dataclass(frozen=True)
class StrategyResult:
    name: str
    named: float  # share of queries whose real label it named
    picked: float  # share of queries where it picked the real upload


class DecoyFeatures:
    """Per-upload features from what the server holds: its model, its database codes and labels."""

    def __init__(self, searcher: Searcher, radius: int) -> None:
        self.radius = radius
        self.reader = CodeReader(searcher, radius)
        self.sent = NaiveServer(searcher, radius, self.reader)
        self.jpeg = ReencodingServer(searcher, radius, "jpeg75", self.reader)
        self.knowing = KnowsTheClient(searcher, radius, {}, 0.0, self.reader)
        codes: dict[int, bytes] = {}
        labels: dict[int, set[str]] = {}
        for name in searcher.store.label_names():
            ids, found = searcher.store.codes_with_label(name, 10**9, 0)
            for i, c in zip(ids.tolist(), found):
                codes[i] = c.tobytes()
                labels.setdefault(i, set()).add(name)
        keys = sorted(set(codes.values()))
        self.distinct = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        index = {k: j for j, k in enumerate(keys)}
        self.counts = np.zeros(len(keys))
        self.names = sorted({n for s in labels.values() for n in s})
        self.votes = np.zeros((len(keys), len(self.names)))
        for i, c in codes.items():
            self.counts[index[c]] += 1
            for n in labels[i]:
                self.votes[index[c], self.names.index(n)] += 1
        self.centres = {
            n: anchor_code(np.repeat(self.distinct, self.votes[:, j].astype(int), axis=0))[0]
            for j, n in enumerate(self.names)
            if self.votes[:, j].sum()
        }

    def of(self, group: DecoyGroup) -> tuple[np.ndarray, list[str | None]]:
        """Features (K, len(FEATURES)) of a group's uploads and the label the server names for each."""
        codes = self.sent.codes(group.uploads)
        flips = self.jpeg.detect_many(group.uploads)
        margins = self.knowing.margins(group.uploads)
        labels = [self.reader.label(c) for c in codes]
        dist = hamming(codes, self.distinct)
        rows = []
        for i, code in enumerate(codes):
            exact = self.counts[dist[i] == 0].sum()
            near = dist[i] <= self.radius
            votes = (
                self.votes[near].sum(axis=0)
                if near.any()
                else self.votes[np.argsort(dist[i])[:1]].sum(axis=0)
            )
            centre = self.centres.get(labels[i])
            rows.append(
                [
                    i,
                    len(group.uploads[i]),
                    group.times[i] - group.times[i - 1] if i else 0.0,
                    np.log1p(exact),
                    np.log1p(self.counts[near].sum()),
                    dist[i].min(),
                    votes.max() / max(votes.sum(), 1),
                    hamming(code[None], centre[None])[0, 0] if centre is not None else 0,
                    margins[i],
                    flips[i],
                ]
            )
        return np.array(rows, dtype=float), labels


def pick(scores: np.ndarray, rng: np.random.Generator) -> int:
    """The index of the highest score, ties broken at random."""
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return int(rng.choice(best))


def fit_logit(x: np.ndarray, real: np.ndarray, l2: float = 1e-2, steps: int = 300) -> np.ndarray:
    """Conditional logit: weights w maximising sum log softmax(x_g w)[real_g], L2-penalised.

    Shape: x (n, K, F) standardised features, real (n,) -> w (F,). Newton-free gradient ascent.
    """
    w = np.zeros(x.shape[2])
    for _ in range(steps):
        s = x @ w
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (x[np.arange(len(x)), real] - (p[..., None] * x).sum(axis=1)).mean(axis=0) - l2 * w
        w += 0.5 * grad
    return w


def decoy_rung(
    features: Sequence[np.ndarray], labels: Sequence[list], groups: Sequence[DecoyGroup], seed: int = 0
) -> list[StrategyResult]:
    """Every strategy's shares over ``groups`` (features and labels from :meth:`DecoyFeatures.of`),
    the learned one's cross-validated, and two reference rows: a random pick, and an attacker
    who always picks the real upload (the most any strategy can name)."""
    rng = np.random.default_rng(seed)
    x = np.stack(features)  # (n, K, F); every query has the same K
    real = np.array([g.real for g in groups])
    named = np.array([[lab in g.truth for lab in labs] for labs, g in zip(labels, groups)], dtype=float)
    rows = []
    for name, feature, sign in STRATEGIES:
        chosen = [pick(sign * f[:, FEATURES.index(feature)], rng) for f in x]
        rows.append(_result(name, chosen, real, named))
    rows.append(_result("learned (all features, 2-fold)", _learned(x, real, rng), real, named))
    n = np.arange(len(real))
    rows.append(StrategyResult("chance (a random pick)", float(named.mean()), 1 / x.shape[1]))
    rows.append(StrategyResult("always the real upload (ceiling)", float(named[n, real].mean()), 1.0))
    return rows


def _learned(x: np.ndarray, real: np.ndarray, rng: np.random.Generator) -> list[int]:
    halves = [np.arange(len(x)) % 2 == h for h in (0, 1)]
    chosen = np.zeros(len(x), dtype=int)
    for train, test in (halves, halves[::-1]):
        mu, sd = x[train].reshape(-1, x.shape[2]).mean(axis=0), x[train].reshape(-1, x.shape[2]).std(axis=0)
        z = lambda a: (a - mu) / np.where(sd > 0, sd, 1.0)  # noqa: E731
        w = fit_logit(z(x[train]), real[train])
        chosen[test] = [pick(s, rng) for s in z(x[test]) @ w]
    return chosen.tolist()


def _result(name: str, chosen: Sequence[int], real: np.ndarray, named: np.ndarray) -> StrategyResult:
    chosen = np.asarray(chosen)
    n = np.arange(len(real))
    return StrategyResult(name, float(named[n, chosen].mean()), float((chosen == real).mean()))


def best_strategy(rows: Sequence[StrategyResult]) -> StrategyResult:
    """The attacker strategy that named the real label most often (reference rows excluded)."""
    return max((r for r in rows if not r.name.startswith(("chance", "always"))), key=lambda r: r.named)


def chosen_on_half(
    features: Sequence[np.ndarray], labels: Sequence[list], groups: Sequence[DecoyGroup], seed: int = 0
) -> float:
    """The share an attacker names who picks its single-feature strategy on one half of the
    queries and applies it to the other (both ways round): the best row without hindsight."""
    idx = np.arange(len(groups))
    total = 0.0
    for h in (0, 1):
        train, test = idx[idx % 2 == h], idx[idx % 2 != h]
        pick_rows = decoy_rung(
            [features[i] for i in train], [labels[i] for i in train], [groups[i] for i in train], seed
        )
        best = best_strategy([r for r in pick_rows if not r.name.startswith("learned")])
        test_rows = decoy_rung(
            [features[i] for i in test], [labels[i] for i in test], [groups[i] for i in test], seed
        )
        total += next(r.named for r in test_rows if r.name == best.name) * len(test)
    return total / len(groups)
