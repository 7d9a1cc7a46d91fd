"""The user's side run against a local service (the operator's own machine, or tests): the
model and the anchor codes come from work_dir and the store instead of over HTTP.

This is the one place where the privacy client meets the service's code; ``privacy`` itself
only ever speaks HTTP.
"""

from __future__ import annotations

from pathlib import Path

from privacy.client import Protector
from retrieval.core.config import PrivacyConfig
from retrieval.core.model import load_checkpoint
from retrieval.service.store import Store


def local_protector(model_dir: Path, db_url: str, cfg: PrivacyConfig, device: str = "cpu") -> Protector:
    """A Protector on a local model and store."""
    model, _ = load_checkpoint(model_dir, device=device)
    store = Store(db_url)
    return Protector(
        model, cfg, lambda l: store.codes_with_label(l, cfg.n_anchor, cfg.seed)[1], store.label_counts()
    )
