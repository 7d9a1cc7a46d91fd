"""Rung 4, the attacker who knows the client (Kerckhoffs): it runs our open-source client itself.

It protects images it holds (database items, true labels known) in every mode the client offers,
and sends plain ones too, then learns what each reading of an upload means: a lookup table from
(the label the server's model infers from the upload as sent, the label after JPEG quality 75,
whether the upload looks protected) to the true label. Anything predictable in the client, such
as a fixed seed, a fixed target for each label, or an untargeted code that is the complement of
the true one, becomes a key to this table.

"Looks protected" is its detector: a protection stops as soon as the code reaches the target, so
the relaxed outputs of a protected upload sit a hair past zero; ``detect`` is minus the smallest
|C_j(x)| of the server's model, and the threshold is the one that best separates the attacker's
own protected and plain uploads.
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
        margins = attacker.margins(data)
        plain = np.array([u.group == "plain" for u in uploads])
        if plain.any() and (~plain).any():
            attacker.threshold = best_threshold(margins[plain], margins[~plain])
        for u, key in zip(uploads, attacker.features(data, margins)):
            attacker.table.setdefault(key, Counter())[u.true_label] += 1
        return attacker

    def margins(self, uploads: Sequence[bytes]) -> np.ndarray:
        """Smallest |C_j(x)| of the server's model per upload: how close the code is to flipping."""
        out = []
        model = self.searcher.model.eval()
        with torch.inference_mode():
            for u in uploads:
                c = model(pixels(u).unsqueeze(0).to(model.device))
                out.append(float(c.abs().min()))
        return np.array(out)

    def features(self, uploads: Sequence[bytes], margins: np.ndarray | None = None) -> list[Key]:
        margins = self.margins(uploads) if margins is None else margins
        sent, jpeg = self.sent.infer_many(uploads), self.jpeg.infer_many(uploads)
        return [(s or "", j or "", int(m < self.threshold)) for s, j, m in zip(sent, jpeg, margins)]

    def infer_many(self, uploads: Sequence[bytes]) -> list[str | None]:
        return [self.lookup(key) for key in self.features(uploads)]

    def infer(self, upload: bytes) -> str | None:
        return self.infer_many([upload])[0]

    def detect_many(self, uploads: Sequence[bytes]) -> list[float]:
        return (-self.margins(uploads)).tolist()

    def detect(self, upload: bytes) -> float:
        return self.detect_many([upload])[0]

    def lookup(self, key: Key) -> str | None:
        """The most frequent true label seen with ``key``; backs off to (sent, looks protected),
        then to the label as sent."""
        if key in self.table:
            return majority_of(self.table[key])
        partial = Counter()
        for (s, _, p), counts in self.table.items():
            if (s, p) == (key[0], key[2]):
                partial.update(counts)
        return majority_of(partial) if partial else (key[0] or None)


def best_threshold(plain: np.ndarray, protected: np.ndarray) -> float:
    """The margin below which an upload is called protected, maximising balanced accuracy."""
    candidates = np.unique(np.concatenate([plain, protected]))
    if not len(candidates):
        return 0.0
    cuts = np.concatenate([candidates, [candidates[-1] + 1.0]])
    score = [((protected < t).mean() + (plain >= t).mean()) / 2 for t in cuts]
    return float(cuts[int(np.argmax(score))])


def save_table(path: Path, table: dict[Key, Counter], threshold: float) -> None:
    rows = [{"key": list(k), "counts": dict(v)} for k, v in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"threshold": threshold, "table": rows}))


def load_table(path: Path) -> tuple[dict[Key, Counter], float]:
    raw = json.loads(Path(path).read_text())
    table = {(r["key"][0], r["key"][1], int(r["key"][2])): Counter(r["counts"]) for r in raw["table"]}
    return table, float(raw["threshold"])
