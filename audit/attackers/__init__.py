"""The attacker ladder: every attacker a server holding the query log can be, one file each.

``build_ladder(searcher, settings, cache_dir)`` builds the attackers named in ``settings`` (see
``ATTACKERS``), training what needs training (the second model, the knowing attacker's table)
and caching it under ``cache_dir``. Each attacker follows ``audit.attackers.base.Attacker``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audit.attackers.base import RUNGS, Attacker, CodeReader
from audit.attackers.inversion import KnowsTheClient, load_table, save_table
from audit.attackers.naive import NaiveServer
from audit.attackers.own_protections import own_uploads
from audit.attackers.pixel_knn import PixelKNN
from audit.attackers.reencoding import SERVER_TRANSFORMS, ReencodingServer
from audit.attackers.second_model import SecondModel
from audit.attackers.training import SecondModelSettings, database, second_model
from privacy.presets import MODES
from privacy.targets import rng_from
from retrieval.core.config import PrivacyConfig
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)
ATTACKERS = ("naive", *SERVER_TRANSFORMS, "pixel-knn", "second-model", "inversion")
KNOWING_VERSION = 2  # bump when the knowing attacker's features change: its cached tables go stale


@dataclass(frozen=True)
class LadderSettings:
    """Which attackers to build and how much each may learn."""

    names: tuple[str, ...] = ATTACKERS
    radius: int = 2
    pixel_size: int = 28  # the pixel k-NN's and the second model's image side
    knn_k: int = 10
    second_model: SecondModelSettings = field(default_factory=SecondModelSettings)
    inversion_per_label: int = 10  # database items per label the knowing attacker protects itself
    inversion_modes: tuple[str, ...] = MODES
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # the client it runs
    seed: int | None = None  # its own randomness (None: fresh OS entropy)

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(ATTACKERS)
        if unknown:
            raise ValueError(f"unknown attackers {sorted(unknown)}; choose from {ATTACKERS} or 'all'")


def parse_names(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of attacker names, in ladder order."""
    wanted = {n.strip() for n in text.split(",") if n.strip()}
    if wanted == {"all"}:
        return ATTACKERS
    unknown = wanted - set(ATTACKERS)
    if unknown or not wanted:
        raise ValueError(f"attackers must be 'all' or names from {ATTACKERS}; got {text!r}")
    return tuple(n for n in ATTACKERS if n in wanted)


def build_ladder(searcher: Searcher, settings: LadderSettings, cache_dir: Path) -> list[Attacker]:
    """The attackers of ``settings.names``, in ladder order."""
    reader = CodeReader(searcher, settings.radius)
    naive = NaiveServer(searcher, settings.radius, reader)
    out: list[Attacker] = []
    db = None
    for name in settings.names:
        if name == "naive":
            out.append(naive)
        elif name in SERVER_TRANSFORMS:
            out.append(ReencodingServer(searcher, settings.radius, name, reader))
        elif name in ("pixel-knn", "second-model"):
            db = db or database(searcher, settings.pixel_size, cache_dir)
            if name == "pixel-knn":
                out.append(PixelKNN(db, settings.knn_k))
            else:
                model = second_model(db, searcher.hash_bits, settings.second_model, cache_dir)
                out.append(SecondModel(model, db, settings.radius, naive))
        else:
            out.append(_knowing(searcher, settings, cache_dir, reader))
    return out


def _knowing(searcher: Searcher, s: LadderSettings, cache_dir: Path, reader: CodeReader) -> KnowsTheClient:
    """The knowing attacker, its table learned on its own uploads (or read from the cache)."""
    key = json.dumps(
        {
            "model": searcher.card.sha256,
            "store": searcher.store.fingerprint(),
            "privacy": asdict(s.privacy),
            "radius": s.radius,
            "per_label": s.inversion_per_label,
            "modes": s.inversion_modes,
            "seed": s.seed,
            "version": KNOWING_VERSION,
        },
        sort_keys=True,
    )
    path = Path(cache_dir) / f"inversion-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        table, threshold = load_table(path)
        return KnowsTheClient(searcher, s.radius, table, threshold, reader)
    uploads = own_uploads(
        searcher, s.privacy, s.radius, s.inversion_per_label, s.inversion_modes, rng_from(s.seed)
    )
    attacker = KnowsTheClient.learn(searcher, s.radius, uploads, reader)
    save_table(path, attacker.table, attacker.threshold)
    log.info("knowing attacker: %d own uploads, margin threshold %.4f", len(uploads), attacker.threshold)
    return attacker


__all__ = ["ATTACKERS", "RUNGS", "Attacker", "LadderSettings", "build_ladder", "parse_names"]
