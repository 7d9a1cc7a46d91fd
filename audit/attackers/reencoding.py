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
from privacy.reencode import describe
from retrieval.core.codes import hamming
from retrieval.service.search import Searcher

# jpeg60, webp80 and resize0.5 are what robust protection checks by default; the milder ones and
# the harsher jpeg50 and webp70 it never sees
SERVER_TRANSFORMS = (
    "jpeg95",
    "jpeg90",
    "jpeg85",
    "jpeg75",
    "jpeg60",
    "jpeg50",
    "webp80",
    "webp70",
    "resize0.75",
    "resize0.5",
    "crop2",
)


class ReencodingServer(NaiveServer):
    """The server's model on the upload after ``transform`` (one of ``SERVER_TRANSFORMS``)."""

    rung = "re-encoding"
    detects = True

    def __init__(
        self, searcher: Searcher, radius: int, transform: str, reader: CodeReader | None = None
    ) -> None:
        if transform == "sent":
            raise ValueError("the upload as sent is the naive server's; name a transformation")
        description = describe(transform)  # ValueError for an unknown name
        super().__init__(searcher, radius, reader)
        self.transform = transform
        self.name = transform
        self.description = f"the server's model on the upload {description}"
        self._sent = NaiveServer(searcher, radius, self.reader)

    def detect(self, upload: bytes) -> float:
        return self.detect_many([upload])[0]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        """Bits that flip under the re-encode: protected codes sit close to the boundaries."""
        return hamming(self._sent.codes(uploads), self.codes(uploads)).diagonal().astype(float).tolist()
