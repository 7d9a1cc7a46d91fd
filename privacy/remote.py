"""A search server as the user's client sees it: its model, labels and anchor codes over HTTP.

The client never imports the server's code; everything it learns comes through the JSON API.
The model is downloaded once per sha256 into a cache folder and checked before it is loaded;
a pinned sha256 (``privacy.model_sha256``, published by the operator out of band) refuses any
other model, so a server cannot hand one client weights of its own to tag its uploads. The
anchor pool is fetched once per server and model, every label at once (``privacy.pool``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from privacy.pool import AnchorPool, cached_pool
from retrieval.core.api_client import ApiClient
from retrieval.core.model import CARD_FILE, WEIGHTS_FILE, HashNet, ModelCard, load_checkpoint


class RemoteService(ApiClient):
    """The user's side of a search server's API."""

    def model(self, cache_dir: Path, device: str = "cpu", pinned: str = "") -> tuple[HashNet, ModelCard]:
        """Download (once per sha256) and load the server's model onto ``device``, refusing
        unverified weights and, when ``pinned`` is set, any model whose sha256 is not that one."""
        card = self.get_json("/api/model")
        sha = card.get("sha256", "")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ValueError(f"the server published no valid sha256 for its model: {sha!r}")
        if pinned and sha != pinned:
            raise ValueError(
                f"the server's model has sha256 {sha}, not the pinned {pinned} "
                "(privacy.model_sha256 / --model-sha256): refusing to use it"
            )
        folder = Path(cache_dir) / sha
        if not (folder / WEIGHTS_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            card_fields = {k: v for k, v in card.items() if k in ModelCard.__dataclass_fields__}
            (folder / CARD_FILE).write_text(ModelCard.from_dict(card_fields).to_json())
            self.download("/api/model/weights", folder / WEIGHTS_FILE)
        try:
            return load_checkpoint(folder, expected_sha256=sha, device=device)
        except ValueError:
            (folder / WEIGHTS_FILE).unlink(missing_ok=True)  # do not keep a bad download
            raise

    def labels(self) -> dict[str, int]:
        return {item["name"]: item["count"] for item in self.get_json("/api/labels")["labels"]}

    def anchor_pool(self, per_label: int, cache_dir: Path, model_sha256: str) -> AnchorPool:
        """Codes of up to ``per_label`` items of every label, from the cache beside the model or
        fetched once (the request names no label, so it does not reveal any target)."""
        server = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        path = Path(cache_dir) / model_sha256 / f"anchor-pool-{server}-{per_label}.json"
        return cached_pool(path, lambda: self.get_json("/api/anchors/pool", per_label=per_label))

    def image(self, image_id: int, size: int | None = None) -> bytes:
        """A database image (or thumbnail) by id: PNG bytes."""
        params = {"size": size} if size is not None else {}
        return self.get(f"/api/images/{int(image_id)}", **params).content
