"""Rung 2, the re-encoding server: JPEG, WebP or a resize before its model, as many services do.

A protection sits a hair past the model's decision boundaries, so a re-encode that moves pixels
by more than the perturbation can undo it (Dziugaite et al. 2016; Das et al. 2018). The same
instability is a detector: a protected upload's code moves more under the re-encode than a
plain upload's does (``detect`` = Hamming distance between the two codes).
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.attackers.base import CodeReader
from audit.attackers.naive import NaiveServer
from privacy.reencode import DESCRIPTIONS, TRANSFORMS
from retrieval.core.codes import hamming
from retrieval.service.search import Searcher

SERVER_TRANSFORMS = ("jpeg95", "jpeg90", "jpeg75", "webp80", "resize0.5")


class ReencodingServer(NaiveServer):
    """The server's model on the upload after ``transform`` (one of ``SERVER_TRANSFORMS``)."""

    rung = "re-encoding"
    detects = True

    def __init__(
        self, searcher: Searcher, radius: int, transform: str, reader: CodeReader | None = None
    ) -> None:
        if transform not in TRANSFORMS or transform == "sent":
            raise ValueError(f"transform must be one of {SERVER_TRANSFORMS}; got {transform!r}")
        super().__init__(searcher, radius, reader)
        self.transform = transform
        self.name = transform
        self.description = f"the server's model on the upload {DESCRIPTIONS[transform]}"
        self._sent = NaiveServer(searcher, radius, self.reader)

    def detect(self, upload: bytes) -> float:
        return self.detect_many([upload])[0]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        """Bits that flip under the re-encode: protected codes sit close to the boundaries."""
        return hamming(self._sent.codes(uploads), self.codes(uploads)).diagonal().astype(float).tolist()
