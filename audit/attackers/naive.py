"""Rung 1, the naive server: its own model on the upload exactly as it was sent.

This is what every protection is computed against, so it is the attacker a protection beats
most easily: the code of the bytes as sent is the code the client pushed to its target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audit.attackers.base import Attacker, CodeReader, pixels, server_codes
from privacy.reencode import transform_tensor
from retrieval.service.search import Searcher


class NaiveServer(Attacker):
    """The server's model and index on ``transform(upload)`` ("sent": the upload as is)."""

    name = "naive"
    rung = "naive"
    description = "the server's model on the upload as sent"

    def __init__(self, searcher: Searcher, radius: int, reader: CodeReader | None = None) -> None:
        self.searcher = searcher
        self.reader = reader or CodeReader(searcher, radius)
        self.transform = "sent"

    def codes(self, uploads: Sequence[bytes]) -> np.ndarray:
        """The codes the server's model gives the (transformed) uploads. Shape: (n, K/8)."""
        return server_codes(self.searcher, [transform_tensor(self.transform, pixels(u)) for u in uploads])

    def infer(self, upload: bytes) -> str | None:
        return self.infer_many([upload])[0]

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        return [self.reader.label(c) for c in self.codes(uploads)]
