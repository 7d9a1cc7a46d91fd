"""The server's query log with a retention period: what it writes, and when old rows go.

A service that keeps uploads keeps them for some time; ``server.log_retention_days`` says how
long. Rows older than that are deleted when the server starts and then at most once an hour,
checked cheaply on each write, so no timer thread is needed. With 0 days nothing is written
at all and the start-up prune empties the log.

Writes are group-committed: a request hands its row to one writer thread and waits; the writer
inserts every row waiting at that moment (up to ``GROUP_MAX``) in one transaction and answers
each request with its row id once that transaction has committed. Under load, the rows that
arrive during one commit go together in the next, so 32 clients pay for a few commits instead
of 32, and a request still replies only after its own row is on disk.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

import numpy as np

from retrieval.service.batcher import Batcher
from retrieval.service.records import LogEntry, as_id_array, log_values
from retrieval.service.store import Store

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=1)
GROUP_MAX = 256  # most rows per group commit
MAX_DAYS = 36500  # as server.log_retention_days; also keeps now - retention inside datetime's range
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class QueryLog:
    """Writes query-log rows to a store and deletes those past ``retention_days``.

    Args:
        store: where the rows live.
        retention_days: days a row is kept; 0 turns the log off.
        clock: returns the current time, timezone-aware (tests pass a hand-made one).
    """

    def __init__(self, store: Store, retention_days: int, clock: Clock = utc_now) -> None:
        if (
            isinstance(retention_days, bool)
            or not isinstance(retention_days, int)
            or not 0 <= retention_days <= MAX_DAYS
        ):
            raise ValueError(f"retention_days must be an int in [0, {MAX_DAYS}]; got {retention_days!r}")
        self.store = store
        self.retention_days = retention_days
        self.clock = clock
        self._lock = threading.Lock()
        self._last_prune: datetime | None = None
        self._writer: Batcher[dict, int | Exception] = Batcher(
            self._commit, max_items=GROUP_MAX, wait_s=0.0, name="hashveil-query-log"
        )

    @property
    def enabled(self) -> bool:
        return self.retention_days > 0

    def prune(self) -> int:
        """Delete the rows older than the retention period (all of them with 0 days)."""
        now = self.clock()
        with self._lock:
            self._last_prune = now
        return self.store.prune_query_log(now - timedelta(days=self.retention_days))

    def record(
        self,
        *,
        code: bytes,
        radius: int,
        k: int | None,
        result_ids: Sequence[int] | np.ndarray,
        upload: bytes | None,
        upload_type: str,
        remote_addr: str | None,
    ) -> int | None:
        """Log one query and return the row id once it is committed; None (nothing stored) when off.

        The row is checked here, so a bad one fails only its own request, never its group.
        """
        if not self.enabled:
            return None
        entry = LogEntry(
            code=code,
            radius=radius,
            k=k,
            result_ids=as_id_array(result_ids),
            upload=upload,
            upload_type=upload_type,
            remote_addr=remote_addr,
            created_at=self.clock(),
        )
        row_id = self._writer(log_values(entry))
        self._maybe_prune(entry.created_at)
        return row_id

    def _commit(self, rows: list[dict]) -> list[int | Exception]:
        """One transaction for the group; if it fails, each row alone, so that only a bad row fails."""
        try:
            return list(self.store.log_queries(rows))
        except Exception:
            if len(rows) == 1:
                raise
            log.exception("group commit of %d query-log rows failed; writing them one by one", len(rows))
            return [self._commit_one(row) for row in rows]

    def _commit_one(self, row: dict) -> int | Exception:
        try:
            return self.store.log_queries([row])[0]
        except Exception as e:  # handed to that row's request, which answers with it
            return e

    def _maybe_prune(self, now: datetime) -> None:
        """Prune when the last prune is an hour old; one thread does it, the others go on."""
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
                return
            self._last_prune = now
        finally:
            self._lock.release()
        self.store.prune_query_log(now - timedelta(days=self.retention_days))
