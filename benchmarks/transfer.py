"""Does a perturbation made on the client's surrogate transfer to the attacker's second model?

Ensemble protection (``privacy.ensemble``) misleads the server's model and a surrogate the client
trains on the anchor pool's images (``privacy.surrogate``). ``benchmarks/attackers.py`` measures it
end to end over HTTP; this script asks the underlying question offline, on the default demo, at
several budgets: the share of true labels the audit's held-out second model (small_cnn, CSQ, the
whole database split) still infers after

- the server-only protection and the ensemble protection (the configured RNM, semantic mode);
- an attack on the surrogate alone, toward its hash centre of another label ("centre") or the
  complement of its own code ("complement"), at eps 8, 16 and 32 /255 (1/255 sign steps, 100).

    python -m benchmarks.transfer [--per-label 3] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from audit.attackers.naive import NaiveServer
from audit.attackers.second_model import SecondModel
from audit.attackers.training import SecondModelSettings, database, second_model
from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.attacks import RNM
from privacy.client import Protector
from privacy.pool import AnchorPool
from privacy.surrogate import cached_surrogate
from retrieval.core.config import load_config
from retrieval.core.imaging import load_image, to_png, to_tensor
from retrieval.service.anchors import anchor_pool_body
from retrieval.service.search import open_searcher

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.toml"))
    ap.add_argument("--per-label", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    searcher = open_searcher(cfg)
    pool = AnchorPool.from_json(anchor_pool_body(searcher.store, cfg.privacy.anchor_pool, cfg.server.radius))
    started = time.perf_counter()
    sur = cached_surrogate(
        pool,
        lambda i: searcher.image_path(i).read_bytes(),
        searcher.model.hash_bits,
        cfg.work_dir / "client-cache",
    )
    print(f"surrogate ready in {time.perf_counter() - started:.0f} s (0 when cached)")
    cache = cfg.work_dir / "attackers"
    db = database(searcher, 28, cache)
    held_out = second_model(db, searcher.model.hash_bits, SecondModelSettings(seed=args.seed), cache)
    attacker = SecondModel(held_out, db, cfg.server.radius, NaiveServer(searcher, cfg.server.radius))
    x, truth = _sample(cfg, args)

    def share(images: torch.Tensor) -> str:
        guesses = attacker.infer_many([to_png(im) for im in images])
        return f"{np.mean([g in t for g, t in zip(guesses, truth)]):.0%}"

    print(f"{len(x)} query images; second model's share of true labels inferred:")
    print(f"  plain: {share(x)}")
    rng = np.random.default_rng(args.seed)
    for ensemble in (False, True):
        privacy = replace(cfg.privacy, seed=args.seed, ensemble=ensemble)
        done = Protector(searcher.model, privacy, pool, rng, sur).protect_batch(x)
        print(
            f"  semantic{'-ensemble' if ensemble else ''} (eps {cfg.privacy.eps * 255:.0f}/255): "
            f"{share(torch.stack([p.image for p in done]))}"
        )
    names = list(pool.label_counts)
    labels = [names[(names.index(t[0]) + 1 + int(rng.integers(len(names) - 1))) % len(names)] for t in truth]
    centre = np.concatenate([sur.centre_code(label) for label in labels])
    for eps in (8, 16, 32):
        for name, target in (("centre", centre), ("complement", ~sur.model.encode(x))):
            r = RNM(sur.model, eps=eps / 255, steps=100, step_size=1 / 255, step_rule="sign")(x, target)
            print(
                f"  surrogate alone, {name}, eps {eps}/255: {share(r.images)} "
                f"(surrogate at its target: {r.reached.float().mean():.0%})"
            )


def _sample(cfg, args) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
    images = open_dataset(cfg.data, cfg.work_dir, cfg.model.image_size)
    query = make_splits(images, cfg.data, cfg.work_dir / "splits.json").query
    first = images.labels[query].argmax(axis=1)
    rng = np.random.default_rng(args.seed)
    rows = np.concatenate(
        [rng.choice(query[first == j], args.per_label, replace=False) for j in range(images.labels.shape[1])]
    )
    x = torch.stack([to_tensor(load_image(images.root / images.paths[i])) for i in rows])
    return x, [tuple(images.label_sets([i])[0]) for i in rows]


if __name__ == "__main__":
    main()
