"""Why the default head trains at lr 1e-4: MAP and attackability of the same head at three rates.

For each learning rate the DPSH head is trained with the configured recipe (the configured rate
is the trained model in work_dir/model; the others train into work_dir/eval/models/lr-<rate>,
reusing the cached backbone features), then the evaluation's query sample (seed 0) is protected
with the configured RNM toward P2S targets, at most ``--steps`` iterations. Prints, per rate:
MAP@all of that sample and of the whole query split (the model card), and the share of queries
at their target.

    OMP_NUM_THREADS=1 python -m benchmarks.head_lr [--queries 24] [--steps 40]
"""

from __future__ import annotations

import argparse
import logging

from evaluation.bench import Workbench
from evaluation.models import ModelVariant, variant_dir
from evaluation.options import EvalOptions
from retrieval.core.config import load_config
from retrieval.core.model import read_card

RATES = (1e-3, 3e-4, 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.toml")
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config)
    wb = Workbench(cfg, EvalOptions(queries=args.queries, rnm_steps=args.steps))
    print(
        f"{cfg.data.dataset}, {cfg.model.backbone} frozen + DPSH head, {cfg.model.hash_bits} bits, "
        f"{cfg.train.epochs} epochs, eta {cfg.train.eta}; {args.queries} queries, RNM "
        f"('{cfg.privacy.rnm_variant}') to P2S targets, eps {cfg.privacy.eps * 255:.0f}/255, "
        f"at most {args.steps} steps"
    )
    print(
        "| lr | MAP@all, query split (model card) | MAP@all, the queries | at target within "
        f"{args.steps} steps |"
    )
    print("|---|---|---|---|")
    for lr in RATES:
        if lr == cfg.train.lr:
            key, card = cfg.model.hash_bits, read_card(cfg.work_dir / "model")
        else:
            variant = ModelVariant(f"lr-{lr:g}", f"head trained at lr {lr:g}", {"train": {"lr": lr}})
            key = wb.add_variant(variant)
            wb.bench(key)  # trains it on first use
            card = read_card(variant_dir(cfg, variant))
        outcome = wb.protect(key, "rnm", "p2s", wb.eps)
        split_map = next(v for k, v in card.metrics.items() if not k.endswith("untrained"))
        sample_map = wb.map_own(key, wb.bench(key).codes).map
        print(f"| {lr:g} | {split_map:.3f} | {sample_map:.3f} | {outcome.reached.mean():.0%} |", flush=True)


if __name__ == "__main__":
    main()
