"""The user's side run against a local service (the operator's own machine, or tests): the
model and the anchor pool come from work_dir and the store instead of over HTTP.

This is the one place where the privacy client meets the service's code; ``privacy`` itself
only ever speaks HTTP. The pool is built by the same function that answers
``GET /api/anchors/pool``, so a local protection draws from what a remote one would.
"""

from __future__ import annotations

from pathlib import Path

from privacy.client import Protector
from privacy.pool import AnchorPool
from retrieval.core.config import PrivacyConfig
from retrieval.core.model import load_checkpoint
from retrieval.service.anchors import anchor_pool_body
from retrieval.service.store import Store


def local_protector(
    model_dir: Path, db_url: str, cfg: PrivacyConfig, device: str = "cpu", radius: int = 2
) -> Protector:
    """A Protector on a local model (refused unless it matches a pinned ``cfg.model_sha256``) and store."""
    model, _ = load_checkpoint(model_dir, expected_sha256=cfg.model_sha256 or None, device=device)
    store = Store(db_url)
    try:
        pool = AnchorPool.from_json(anchor_pool_body(store, cfg.anchor_pool, radius))
    finally:
        store.close()
    return Protector(model, cfg, pool)
