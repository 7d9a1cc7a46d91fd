"""The server's query log with a retention period: what it writes, and when old rows go.

A service that keeps uploads keeps them for some time; ``server.log_retention_days`` says how
long. Rows older than that are deleted when the server starts and then at most once an hour,
checked cheaply on each write, so no timer thread is needed. With 0 days nothing is written
at all and the start-up prune empties the log.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from retrieval.service.store import Store

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=1)
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
        result_ids: Sequence[int],
        upload: bytes | None,
        upload_type: str,
        remote_addr: str | None,
    ) -> int | None:
        """Log one query and return the row id; None (and nothing stored) when the log is off."""
        if not self.enabled:
            return None
        now = self.clock()
        row_id = self.store.log_query(
            code=code,
            radius=radius,
            k=k,
            result_ids=result_ids,
            upload=upload,
            upload_type=upload_type,
            remote_addr=remote_addr,
            created_at=now,
        )
        self._maybe_prune(now)
        return row_id

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
