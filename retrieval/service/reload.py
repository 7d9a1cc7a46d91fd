"""A running server switches to a new build when its manifest appears: never to a half-written one.

``build-index`` writes the manifest last, after the index (a new file, or a new Milvus
collection that no server reads) and the store are complete, and removes it first. So the
server watches one file: at most every ``server.reload_seconds`` a request looks at the
manifest's (mtime, size, inode); when it changed, a background thread opens the new set with
``open_searcher``, which checks every part against the manifest (model sha256, index checksum or
the collection's fingerprint, store fingerprint), and only then swaps it in. Requests in flight
finish on the set they started with; a set that fails its checks is not served (the old one
stays, with a warning in the log), and neither is a missing manifest (a build in progress).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from retrieval.core.config import Config
from retrieval.service.manifest import MANIFEST_FILE
from retrieval.service.search import Searcher, open_searcher

log = logging.getLogger(__name__)

RETIRE_AFTER = 60.0  # seconds an old set's connections stay open for requests still using it
Signature = tuple[int, int, int] | None


class LiveSearcher:
    """The searcher a server answers with, swapped for a new one when a new build is complete.

    Args:
        cfg: the server's config (work_dir names the manifest; reload_seconds the check period).
        searcher: the set the server started with.
        opener: opens and verifies a set (tests pass their own).
    """

    def __init__(
        self, cfg: Config, searcher: Searcher, opener: Callable[[Config], Searcher] = open_searcher
    ) -> None:
        self.cfg = cfg
        self.path = cfg.work_dir / "index" / MANIFEST_FILE
        self.every = cfg.server.reload_seconds
        self._opener = opener
        self._searcher = searcher
        self._first_store = searcher.store  # the query log's: never closed
        self._seen = _signature(self.path)
        self._next = time.monotonic() + self.every
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self.reloads = 0

    def current(self) -> Searcher:
        """The set to answer this request with; starts a reload when the manifest changed."""
        if self.every > 0 and time.monotonic() >= self._next and self._lock.acquire(blocking=False):
            try:
                self._next = time.monotonic() + self.every
                sig = _signature(self.path)
                busy = self._loading is not None and self._loading.is_alive()
                if sig != self._seen and not busy:
                    self._seen = sig
                    if sig is not None:  # no manifest: a build is under way; keep the old set
                        self._loading = threading.Thread(target=self._reload, daemon=True)
                        self._loading.start()
            finally:
                self._lock.release()
        return self._searcher

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until a reload in progress has finished (for tests and orderly shutdown)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)

    def _reload(self) -> None:
        try:
            new = self._opener(self.cfg)
        except Exception as e:  # any failure leaves the verified old set in service
            log.warning("not switching to the new build in %s: %s", self.path, e)
            return
        if new.store.url != self._searcher.store.url:
            log.warning("the new build uses store %r; restart the server to switch stores", new.store)
            _retire(new, 0.0)
            return
        old, self._searcher = self._searcher, new
        self.reloads += 1
        log.info("switched to the new build in %s (%d codes)", self.path, new.index.ntotal)
        _retire(old, RETIRE_AFTER, store=old.store is not self._first_store)


def _signature(path) -> Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _retire(searcher: Searcher, delay: float, *, store: bool = True) -> None:
    """Close a set's connections once requests still holding it are done: the Milvus client and,
    with ``store``, the store's pooled connections."""
    parts = (searcher.index, searcher.store) if store else (searcher.index,)
    closers = [getattr(part, "close", None) for part in parts]
    closers = [c for c in closers if c is not None]
    if closers:
        timer = threading.Timer(delay, lambda: [c() for c in closers])
        timer.daemon = True
        timer.start()
