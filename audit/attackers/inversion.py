"""Rung 4, the attacker who knows the client (Kerckhoffs): it runs our open-source client itself.

It protects images it holds (database items, true labels known) in every mode the client offers,
and sends plain ones too, then learns what each reading of an upload means: a lookup table from
(the label the server's model infers from the upload as sent, the label after JPEG quality 75,
whether the upload looks protected) to the true label. Anything predictable in the client, such
as a fixed seed, a fixed target for each label, or an untargeted code that is the complement of
the true one, becomes a key to this table. Cells seen fewer than ``MIN_CELL`` times back off to
(label after JPEG, looks protected), then to (label as sent, looks protected); with no level that
well supported, the first level seen at all answers, and with none, the label after JPEG.

"Looks protected" is its detector, from what it knows of the client: a protection stops as soon
as the code reaches the target, so a protected upload sits a hair past the model's boundaries.
``detect`` counts the bits that flip when the upload is re-encoded as JPEG quality 75, plus
1 - the smallest relaxed output |C_j(x)| (capped at 1) to break ties; the threshold is the one
that best separates the attacker's own protected and plain uploads.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from audit.attackers.base import Attacker, CodeReader, pixels
from audit.attackers.naive import NaiveServer
from audit.attackers.own_protections import OwnUpload
from audit.attackers.reencoding import ReencodingServer
from retrieval.core.votes import majority_of
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)
Key = tuple[str, str, int]
MIN_CELL = 3  # a table cell answers only when it has seen at least this many uploads


class KnowsTheClient(Attacker):
    """Inverts the client's mapping with a table learned on its own protections (see module)."""

    name = "inversion"
    rung = "knows the client"
    description = "an attacker running this client itself, who learned what each reading of an upload means"
    detects = True

    def __init__(
        self,
        searcher: Searcher,
        radius: int,
        table: dict[Key, Counter],
        threshold: float,
        reader: CodeReader | None = None,
    ) -> None:
        reader = reader or CodeReader(searcher, radius)
        self.searcher = searcher
        self.sent = NaiveServer(searcher, radius, reader)
        self.jpeg = ReencodingServer(searcher, radius, "jpeg75", reader)
        self.table, self.threshold = table, threshold

    @classmethod
    def learn(
        cls, searcher: Searcher, radius: int, uploads: Sequence[OwnUpload], reader: CodeReader | None = None
    ) -> KnowsTheClient:
        """Learn the threshold (own plain against own protected uploads) and the table (reading ->
        true-label counts) from uploads the attacker made itself."""
        attacker = cls(searcher, radius, {}, 0.0, reader)
        data = [u.upload for u in uploads]
        scores = np.array(attacker.detect_many(data))
        plain = np.array([u.group == "plain" for u in uploads])
        if plain.any() and (~plain).any():
            attacker.threshold = best_threshold(scores[~plain], scores[plain])
        for u, key in zip(uploads, attacker.features(data, scores)):
            attacker.table.setdefault(key, Counter())[u.true_label] += 1
        return attacker

    def margins(self, uploads: Sequence[bytes]) -> np.ndarray:
        """Smallest |C_j(x)| of the server's model per upload: how close the code is to flipping."""
        images = [pixels(u) for u in uploads]
        out = np.zeros(len(images))
        by_shape: dict[tuple, list[int]] = {}
        for i, x in enumerate(images):
            by_shape.setdefault(tuple(x.shape), []).append(i)
        model = self.searcher.model.eval()
        with torch.inference_mode():
            for rows in by_shape.values():
                for start in range(0, len(rows), 64):
                    chunk = rows[start : start + 64]
                    c = model(torch.stack([images[i] for i in chunk]).to(model.device))
                    out[chunk] = c.abs().amin(dim=1).cpu().numpy()
        return out

    def features(self, uploads: Sequence[bytes], scores: np.ndarray | None = None) -> list[Key]:
        scores = np.array(self.detect_many(uploads)) if scores is None else scores
        sent, jpeg = self.sent.infer_many(uploads), self.jpeg.infer_many(uploads)
        return [(s or "", j or "", int(x >= self.threshold)) for s, j, x in zip(sent, jpeg, scores)]

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        return [self.lookup(key) for key in self.features(uploads)]

    def infer(self, upload: bytes) -> str | None:
        return self.infer_many([upload])[0]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        flips = np.array(self.jpeg.detect_many(uploads))
        return (flips + 1 - np.minimum(self.margins(uploads), 1.0)).tolist()

    def detect(self, upload: bytes) -> float:
        return self.detect_many([upload])[0]

    def lookup(self, key: Key) -> str | None:
        """The most frequent true label seen with ``key``, backing off as the module says (a
        level with any evidence beats none when no level has ``MIN_CELL`` uploads)."""
        sent, jpeg, protected = key
        levels = [Counter(), Counter(), Counter()]
        for k, counts in self.table.items():
            for level, match in zip(
                levels, (k == key, (k[1], k[2]) == (jpeg, protected), (k[0], k[2]) == (sent, protected))
            ):
                if match:
                    level.update(counts)
        for least in (MIN_CELL, 1):
            for level in levels:
                if sum(level.values()) >= least:
                    return majority_of(level)
        return jpeg or sent or None


def best_threshold(protected: np.ndarray, plain: np.ndarray) -> float:
    """The score from which an upload is called protected (score >= threshold), maximising
    balanced accuracy on the attacker's own uploads."""
    candidates = np.unique(np.concatenate([plain, protected]))
    if not len(candidates):
        return 0.0
    cuts = np.concatenate([candidates, [candidates[-1] + 1.0]])
    score = [((protected >= t).mean() + (plain < t).mean()) / 2 for t in cuts]
    return float(cuts[int(np.argmax(score))])


def save_table(path: Path, table: dict[Key, Counter], threshold: float) -> None:
    rows = [{"key": list(k), "counts": dict(v)} for k, v in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"threshold": threshold, "table": rows}))


def load_table(path: Path) -> tuple[dict[Key, Counter], float]:
    raw = json.loads(Path(path).read_text())
    table = {(r["key"][0], r["key"][1], int(r["key"][2])): Counter(r["counts"]) for r in raw["table"]}
    return table, float(raw["threshold"])
