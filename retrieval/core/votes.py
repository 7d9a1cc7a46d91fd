"""The label a retrieval reveals: a majority vote over the labels of the items it returned.

This is how the server (or anyone holding its query log) reads a query's content from its
results; the audit, the service's pages and the user's client all judge a query by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


def label_votes(label_sets: Iterable[Iterable[str]]) -> dict[str, int]:
    """Votes per label, each item voting once for each of its labels; sorted by name."""
    return dict(sorted(Counter(label for labels in label_sets for label in set(labels)).items()))


def majority_of(votes: Mapping[str, int]) -> str | None:
    """The label with the most votes, ties broken alphabetically; None with no votes."""
    if not votes:
        return None
    best = max(votes.values())
    return min(name for name, n in votes.items() if n == best)


def majority_label(label_sets: Iterable[Iterable[str]]) -> tuple[str | None, dict[str, int]]:
    """The most frequent label and the votes (:func:`label_votes`, :func:`majority_of`)."""
    votes = label_votes(label_sets)
    return majority_of(votes), votes
