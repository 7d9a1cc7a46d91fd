"""The anchor pool: codes (never images) of database items of every label, what the privacy
client draws its targets from. One answer for every client, so asking for it reveals nothing."""

from __future__ import annotations

from typing import Any

from retrieval.service.store import Store


def anchor_pool_body(store: Store, per_label: int, radius: int) -> dict[str, Any]:
    """The JSON of ``/api/anchors/pool``: per label, ``per_label`` items drawn with a fixed seed
    (every client gets the same pool), each with its code and all of its labels."""
    counts = store.label_counts()
    ids = sorted({int(i) for name in counts for i in store.codes_with_label(name, per_label, 0)[0]})
    rows = store.images(ids)
    return {
        "per_label": per_label,
        "radius": radius,
        "labels": [{"name": name, "count": n} for name, n in counts.items()],
        "items": [{"id": i, "code": rows[i].code.hex(), "labels": list(rows[i].labels)} for i in ids],
    }
