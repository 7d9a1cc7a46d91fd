"""``hashveil query``: protect here, encode in the chosen format, check the file, send only it.

The one path from an image to a server's answer (CLI, tests, benchmarks): the bytes that leave this
machine are the file of :mod:`privacy.encode`'s format, and the code the server answers with can be
compared with the code computed here from the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from privacy.client import Protected, connect
from privacy.decoys import protect_decoys, send_in_order
from privacy.encode import Encoded, Encoding, encode_verified
from privacy.remote import RemoteService
from retrieval.core.config import PrivacyConfig


@dataclass(frozen=True)
class Sent:
    answer: dict  # the server's search JSON
    data: bytes  # exactly what was uploaded
    protected: Protected | None = None  # None: the image was sent unprotected
    encoded: Encoded | None = None  # the protected file as the server hashes it
    decoys: tuple[str | None, ...] = ()  # decoy queries sent with it: the label each points at

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


def query_decoys(
    private: torch.Tensor,
    server_url: str,
    privacy: PrivacyConfig,
    encoding: Encoding,
    cache_dir: Path,
    opts: QueryOptions,
    k: int,
    photos: Sequence[Path],
) -> Sent:
    """Search with the results of ``private`` (3, H, W), which is never sent, among ``k - 1`` decoy
    queries (:mod:`privacy.decoys`): K carriers cut from ``photos``, protected in one batch, sent
    in random order with random gaps (``privacy.decoy_delay_s``); only the real answer is returned."""
    protector, server = connect(server_url, privacy, cache_dir, opts.device, verify=opts.verify)
    q = protect_decoys(protector, private, k, photos, encoding)
    answers = send_in_order(
        [f.data for f in q.files],
        lambda data: _search(server, data, encoding, opts),
        privacy.decoy_delay_s,
        protector.rng,
    )
    r = q.real
    return Sent(answers[r], q.files[r].data, q.protected[r], q.files[r], tuple(q.plan.decoy_labels))
