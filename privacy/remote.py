"""A search server as the user's client sees it: its model, labels and anchor codes over HTTP.

The client never imports the server's code; everything it learns comes through the JSON API.
The model is downloaded once per sha256 into a cache folder and checked before it is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.core.api_client import ApiClient
from retrieval.core.model import CARD_FILE, WEIGHTS_FILE, HashNet, ModelCard, load_checkpoint


class RemoteService(ApiClient):
    """The user's side of a search server's API."""

    def model(self, cache_dir: Path, device: str = "cpu") -> tuple[HashNet, ModelCard]:
        """Download (once per sha256) and load the server's model onto ``device``, refusing unverified weights."""
        card = self.get_json("/api/model")
        sha = card.get("sha256", "")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ValueError(f"the server published no valid sha256 for its model: {sha!r}")
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

    def anchors(self, label: str, n: int, seed: int = 0) -> np.ndarray:
        data = self.get_json("/api/anchors", label=label, n=n, seed=seed)
        return np.array([list(bytes.fromhex(c)) for c in data["codes"]], dtype=np.uint8)

    def image(self, image_id: int, size: int | None = None) -> bytes:
        """A database image (or thumbnail) by id: PNG bytes."""
        params = {"size": size} if size is not None else {}
        return self.get(f"/api/images/{int(image_id)}", **params).content
