"""What the privacy client shows before anything is sent: who could still read the image.

Two sources, kept apart on the page. What this machine can compute for the very image: the
label the server's model would infer (estimated through the anchor pool) from the original and
from the protected image as sent and after the re-encodings a server may apply. And what it
cannot: attackers with models of their own (a pixel k-NN, a second hash model, one who knows
this client), whose figures come from ``benchmarks/attackers.py`` on the default demo, shipped
as ``static/attackers.json``. The client holds no copy of an attacker's model.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import resources

import torch

from privacy.pool import AnchorPool
from privacy.reencode import CLIENT_PREVIEW, DESCRIPTIONS, inferred_after
from retrieval.core.model import HashNet

log = logging.getLogger(__name__)
LADDER_FILE = "attackers.json"


def server_views(
    model: HashNet, pool: AnchorPool, original: torch.Tensor, protected: torch.Tensor
) -> list[dict[str, str | None]]:
    """Per server transformation, the label inferred from the original and from the protected image."""
    before = inferred_after(model, pool, original)
    after = inferred_after(model, pool, protected)
    return [
        {"view": name, "description": DESCRIPTIONS[name], "original": before[name], "protected": after[name]}
        for name in CLIENT_PREVIEW
    ]


@cache
def measured_ladder() -> dict | None:
    """The attacker-ladder table the benchmark wrote (None when it has not been run)."""
    try:
        text = resources.files("webui").joinpath("static", LADDER_FILE).read_text(encoding="utf-8")
        return json.loads(text)
    except (FileNotFoundError, ValueError) as e:
        log.warning("no measured attacker table (%s): the page will say so", e)
        return None
