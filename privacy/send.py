"""``hashveil query``: protect here, encode in the chosen format, check the file, send only it.

The one path from an image to a server's answer (CLI, tests, benchmarks): the bytes that leave this
machine are the file of :mod:`privacy.encode`'s format, and the code the server answers with can be
compared with the code computed here from the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from privacy.client import Protected, connect
from privacy.encode import Encoded, Encoding, encode_verified
from privacy.remote import RemoteService
from retrieval.core.config import PrivacyConfig


@dataclass(frozen=True)
class Sent:
    answer: dict  # the server's search JSON
    data: bytes  # exactly what was uploaded
    protected: Protected | None = None  # None: the image was sent unprotected
    encoded: Encoded | None = None  # the protected file as the server hashes it

    @property
    def server_agrees(self) -> bool | None:
        """Whether the server's code equals the code computed here from the sent bytes."""
        return (
            None if self.encoded is None else self.answer.get("code") == self.encoded.summary()["file_code"]
        )


@dataclass(frozen=True)
class QueryOptions:
    mode: str = "semantic"
    target_label: str | None = None
    radius: int | None = None
    k: int | None = None
    device: str = "cpu"
    verify: bool | str = True


def query_encoded(
    image: torch.Tensor,
    server_url: str,
    privacy: PrivacyConfig | None,
    encoding: Encoding,
    cache_dir: Path,
    opts: QueryOptions = QueryOptions(),
    private: torch.Tensor | None = None,
) -> Sent:
    """Search ``server_url`` with ``image`` (3, H, W) in [0, 1], protected here unless ``privacy`` is None."""
    if privacy is None:
        data = encoding.encode(image)
        server = RemoteService(server_url, verify=opts.verify)
        return Sent(_search(server, data, encoding, opts), data)
    protector, server = connect(server_url, privacy, cache_dir, opts.device, verify=opts.verify)
    p = protector.protect(image, opts.mode, target_label=opts.target_label, private=private)
    encoded = encode_verified(protector.model, p.image, p.target_code, p.distance, encoding)
    return Sent(_search(server, encoded.data, encoding, opts), encoded.data, p, encoded)


def _search(server: RemoteService, data: bytes, encoding: Encoding, opts: QueryOptions) -> dict:
    name = f"query{encoding.suffix}"
    return server.search(data, filename=name, mimetype=encoding.mimetype, radius=opts.radius, k=opts.k)
