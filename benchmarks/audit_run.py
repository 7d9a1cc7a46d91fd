"""A logged run of mixed plain and protected queries, then the attacker's audit of the log.

Serves the built default index on a local port, sends N query-split images as they are and N
others protected (semantic mode, random other label) through the privacy client over HTTP,
then audits the server's query log with the true labels known. Prints the attacker's precision
on the true labels and how often the inferred label is a true one, for each group.

    python benchmarks/audit_run.py [--queries 50]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from waitress.server import create_server

from audit.replay import audit_log
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.client import connect, query
from retrieval.core.config import load_config
from retrieval.core.imaging import load_image, to_tensor
from retrieval.service.search import open_searcher
from retrieval.service.server import create_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.toml")
    ap.add_argument("--queries", type=int, default=50, help="per group")
    ap.add_argument("--seed", type=int, default=0, help="the protections' target draws (printed)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = replace(cfg, privacy=replace(cfg.privacy, seed=args.seed))
    searcher = open_searcher(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server(create_app(cfg, searcher), host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"

    images = open_dataset(cfg.data, cfg.work_dir, searcher.card.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    idx = splits.query[: 2 * args.queries]
    truth, group = {}, {}
    first_log = max((r.id for r in searcher.store.query_log(limit=1)), default=0)
    with tempfile.TemporaryDirectory() as cache:
        protector, _ = connect(url, cfg.privacy, Path(cache))
        reached = 0
        for n, i in enumerate(idx):
            x = to_tensor(load_image(images.root / images.paths[i]))
            protect = n % 2 == 1
            _, p = query(
                x, url, cfg.privacy if protect else None, cache_dir=Path(cache), radius=cfg.server.radius
            )
            reached += int(p is not None and p.distance == 0)
            log_id = searcher.store.query_log(limit=1)[0].id
            truth[log_id] = set(images.label_sets([i])[0])
            group[log_id] = "protected" if protect else "plain"
    server.close()
    rows = [r for r in searcher.store.query_log(limit=4 * len(idx)) if r.id > first_log]
    report = audit_log(searcher, rows, true_labels=truth)
    print(
        f"{len(idx)} logged queries on {cfg.data.dataset}, {searcher.card.hash_bits} bits, radius "
        f"{cfg.server.radius}; protected ones reached their target: {reached}/{len(idx) // 2} (seed {args.seed})"
    )
    print(
        f"{'group':<10} {'queries':>7} {'attacker precision':>19} {'label inferred':>15} {'no results':>10}"
    )
    for name in ("plain", "protected"):
        entries = [e for e in report.entries if group.get(e.log_id) == name]
        prec = [e.leakage for e in entries if e.leakage is not None]
        hit = [e.inferred_is_true for e in entries if e.inferred_is_true is not None]
        empty = sum(1 for e in entries if not e.view.basis)
        print(
            f"{name:<10} {len(entries):>7} {np.mean(prec) if prec else float('nan'):>19.3f} "
            f"{np.mean(hit) if hit else float('nan'):>15.1%} {empty:>10}"
        )
    print(f"model MAP@all (card): {searcher.card.metrics}")


if __name__ == "__main__":
    main()
