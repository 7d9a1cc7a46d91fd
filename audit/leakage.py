"""What the service's query log tells an attacker, one row at a time and per hour.

The attacker here reads only the log: the labels of the items the service returned for each
query (``result_ids``), and guesses the query's label by majority vote over them
(``retrieval.core.votes.majority_label``: each item votes once per label, ties alphabetical). A guess
is *confident* when at least ``CONFIDENT_MIN_ITEMS`` items came back and at least
``CONFIDENT_SHARE`` of them carry the guessed label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from retrieval.core.votes import majority_label
from retrieval.service.records import ImageRow, QueryLogRow

CONFIDENT_MIN_ITEMS = 3
CONFIDENT_SHARE = 2 / 3


@dataclass(frozen=True)
class LoggedQuery:
    """One logged query as the attacker's view shows it."""

    id: int
    created_at: datetime
    code_hex: str
    radius: int
    k: int | None
    upload_type: str
    upload_bytes: int | None  # size of the logged upload; None for a code query
    results: tuple[tuple[int, tuple[str, ...]], ...]  # (id, labels), as the service returned them
    votes: dict[str, int]
    inferred_label: str | None
    share: float  # share of the returned items that carry inferred_label (0 with no results)

    @property
    def confident(self) -> bool:
        return len(self.results) >= CONFIDENT_MIN_ITEMS and self.share >= CONFIDENT_SHARE


@dataclass(frozen=True)
class HourSummary:
    hour: datetime  # start of the hour, UTC
    queries: int
    uploads: int  # queries that left an image in the log
    inferred: int  # queries with any inferred label
    confident: int

    @property
    def confident_share(self) -> float:
        return self.confident / self.queries if self.queries else 0.0


def describe(row: QueryLogRow, images: Mapping[int, ImageRow]) -> LoggedQuery:
    """The attacker's reading of one log row; ``images`` maps result ids to store rows.

    Result ids missing from ``images`` (the database was rebuilt since) count as unlabelled.
    """
    results = tuple((i, tuple(images[i].labels) if i in images else ()) for i in row.result_ids)
    label, votes = majority_label(labels for _, labels in results)
    share = votes[label] / len(results) if label is not None else 0.0
    return LoggedQuery(
        id=row.id,
        created_at=row.created_at,
        code_hex=row.code.hex(),
        radius=row.radius,
        k=row.k,
        upload_type=row.upload_type,
        upload_bytes=None if row.upload is None else len(row.upload),
        results=results,
        votes=votes,
        inferred_label=label,
        share=share,
    )


def hourly(queries: Sequence[LoggedQuery]) -> list[HourSummary]:
    """Counts per hour (UTC), newest hour first; hours with no query are left out."""
    buckets: dict[datetime, list[LoggedQuery]] = {}
    for q in queries:
        buckets.setdefault(q.created_at.replace(minute=0, second=0, microsecond=0), []).append(q)
    return [
        HourSummary(
            hour,
            len(qs),
            sum(q.upload_bytes is not None for q in qs),
            sum(q.inferred_label is not None for q in qs),
            sum(q.confident for q in qs),
        )
        for hour, qs in sorted(buckets.items(), reverse=True)
    ]
