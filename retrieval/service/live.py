"""A running server follows its index: when ``build-index`` or ``hashveil add`` / ``remove`` writes
a new manifest, the next request opens the new set, verifies it and swaps it in.

Each request costs one ``stat`` of the manifest. A manifest that is missing (a build under way)
or whose set does not verify keeps the previous set in service, with a warning; each new
manifest is tried once.
"""

from __future__ import annotations

import logging
import os
import threading

from retrieval.core.config import Config
from retrieval.service.manifest import MANIFEST_FILE
from retrieval.service.search import Searcher, open_searcher

log = logging.getLogger(__name__)


class ManifestFollower:
    """Opens the set of ``cfg``'s work_dir again whenever its manifest file is replaced."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._path = cfg.work_dir / "index" / MANIFEST_FILE
        self._stamp = self._read_stamp()
        self._lock = threading.Lock()

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload(self) -> Searcher | None:
        """A searcher on the new set when the manifest changed since the last call and verifies, else None."""
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        with self._lock:
            if stamp == self._stamp:  # another request got here first
                return None
            self._stamp = stamp
            try:
                searcher = open_searcher(self._cfg)
            except (FileNotFoundError, ValueError) as e:
                log.warning(
                    "%s changed, but its set does not open (%s); serving the previous set", self._path, e
                )
                return None
        log.info("serving the new set of %s: %d codes", self._path, searcher.index.ntotal)
        return searcher
