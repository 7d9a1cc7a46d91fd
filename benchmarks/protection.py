"""Protection on the default model: success, iterations, speed and PSNR per method, and robustness.

Needs a trained model and a built index (`hashveil demo --no-serve`). For each query image a
random target label other than its own is drawn; P2S targets are anchors of n_anchor database
codes, P2P targets one database code. Prints one line per method and target kind, then how
many protected codes survive a server's re-encodings (JPEG, WebP, resizes, a crop): the default,
with a margin (each RNM reading), and robust protection. Before that table, how far past 0 the
model's own outputs lie on natural query images, toward their own label's anchor: a margin beyond
that asks for outputs no real photo of the target label produces.

    python -m benchmarks.protection [--queries 100] [--tanh-steps 500]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from index_builder.datasets import open_dataset
from index_builder.splits import make_splits
from privacy.attacks import from_config
from privacy.metrics import psnr
from privacy.presets import STRENGTHS
from privacy.reencode import transform_tensor
from privacy.targets import anchor_code, p2p_target, pick_target_label
from retrieval.core.codes import hamming, unpack
from retrieval.core.config import load_config
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.store import Store


def targets(store: Store, own: list[tuple[str, ...]], n_anchor: int, seed: int):
    rng = np.random.default_rng(seed)
    counts = store.label_counts()
    p2s, p2p, labels = [], [], []
    for i, own_labels in enumerate(own):
        label = pick_target_label(own_labels, counts, n_anchor, rng)
        codes = store.codes_with_label(label, n_anchor, seed + i)[1]
        p2s.append(anchor_code(codes)[0])
        p2p.append(p2p_target(codes, rng)[0])
        labels.append(label)
    return np.stack(p2s), np.stack(p2p), labels


def own_anchors(store: Store, own: list[tuple[str, ...]], n_anchor: int, seed: int) -> np.ndarray:
    """Each query image's own first label's P2S anchor, drawn as ``targets`` draws a target's."""
    anchors = {
        label: anchor_code(store.codes_with_label(label, n_anchor, seed)[1])[0]
        for label in sorted({labels[0] for labels in own})
    }
    return np.stack([anchors[labels[0]] for labels in own])


def run(attack, x: torch.Tensor, t: np.ndarray, batch: int):
    parts, start = [], time.perf_counter()
    for i in range(0, len(x), batch):
        parts.append(attack(x[i : i + batch], t[i : i + batch]))
    seconds = time.perf_counter() - start
    images = torch.cat([p.images for p in parts])
    its = torch.cat([p.iterations for p in parts]).numpy()
    codes = np.concatenate([p.codes for p in parts])
    return images, codes, its, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.toml")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tanh-steps", type=int, default=500)
    ap.add_argument("--single", type=int, default=10, help="images timed one at a time")
    ap.add_argument("--robust-margin", type=float, default=2.0, help="the margin row's margin")
    ap.add_argument(
        "--methods",
        nargs="+",
        help="only these rows (rnm-proximal rnm-margin rnm-margin-sign rnm-literal tanh); default: all",
    )
    ap.add_argument("--no-robustness", action="store_true", help="skip the re-encoding check")
    ap.add_argument("--seed", type=int, default=0, help="target draws (the benchmark seeds itself)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.config)
    p = replace(cfg.privacy, seed=args.seed)  # robust protection's random views too
    model, card = load_checkpoint(cfg.work_dir / "model")
    images = open_dataset(cfg.data, cfg.work_dir, card.image_size)
    splits = make_splits(images, cfg.data, cfg.work_dir / "splits.json")
    store = Store(cfg.db_url)
    idx = splits.query[: args.queries]
    x = torch.stack([to_tensor(decode_image((images.root / images.paths[i]).read_bytes())) for i in idx])
    p2s, p2p, _ = targets(store, images.label_sets(idx), cfg.privacy.n_anchor, args.seed)
    own = own_anchors(store, images.label_sets(idx), cfg.privacy.n_anchor, args.seed)
    with torch.no_grad():
        c = model(x)
    print(
        f"model {card.backbone} {card.hash_bits} bits, {len(x)} queries, eps {cfg.privacy.eps * 255:.1f}/255, "
        f"mean |C(x)| {c.abs().mean():.3f}"
    )
    print(
        f"step rule {p.step_rule}, largest step {p.step_size * 255:.0f}/255 (rnm-margin-sign: sign steps of 1/255)"
    )
    print(
        f"{'method':<16} {'target':<6} {'reached':>8} {'median it':>9} {'p95 it':>7} "
        f"{'s/img batch':>11} {'s/img single':>12} {'PSNR dB':>8}"
    )
    sign = {"step_rule": "sign", "step_size": 1 / 255}
    methods = [
        ("rnm-proximal", {"method": "rnm", "rnm_variant": "proximal", "steps": args.steps}),
        ("rnm-margin", {"method": "rnm", "rnm_variant": "margin", "steps": args.steps}),
        ("rnm-margin-sign", {"method": "rnm", "rnm_variant": "margin", "steps": args.steps, **sign}),
        ("rnm-literal", {"method": "rnm", "rnm_variant": "literal", "steps": args.steps}),
        ("tanh", {"method": "tanh", "steps": args.tanh_steps}),
    ]
    methods = [m for m in methods if not args.methods or m[0] in args.methods]
    for name, changes in methods:
        attack = from_config(replace(p, **changes), model)
        for kind, t in (("P2S", p2s), ("P2P", p2p)):
            adv, codes, its, seconds = run(attack, x, t, args.batch)
            reached = hamming(codes, t).diagonal() == 0
            _, _, _, single = run(attack, x[: args.single], t[: args.single], 1)
            it_ok = its[reached] if reached.any() else np.array([np.nan])
            print(
                f"{name:<16} {kind:<6} {reached.mean():>8.1%} {np.median(it_ok):>9.0f} "
                f"{np.percentile(it_ok, 95):>7.0f} {seconds / len(x):>11.3f} {single / args.single:>12.3f} "
                f"{psnr(adv, x).mean():>8.2f}"
            )
    if not args.no_robustness:
        robustness(p, model, x, p2s, own, args)


CHECKED = ("sent", "jpeg60", "webp80", "resize0.5")  # what robust protection's stopping rule checks
# what it never sees: milder settings of the same kinds, then harsher ones
HELD_OUT = ("jpeg90", "jpeg85", "jpeg75", "webp90", "resize0.75", "crop2", "jpeg50", "webp70")
FORMER = ("jpeg90", "jpeg75", "resize0.5")  # the checks before JPEG 60 and WebP 80 (README)


def robustness(p, model, x: torch.Tensor, targets: np.ndarray, own: np.ndarray, args) -> None:
    """P2S protections as sent and after a server's re-encodings (Pillow): the default, a margin
    with each RNM reading, and robust protection (the 'robust' strength). ``own``: each image's own
    label's anchor, for how far past 0 natural images lie (the margin they hold unprotected)."""
    m = args.robust_margin
    with torch.no_grad():
        natural = (unpack(own) * model(x)).amin(dim=1)
    print(
        f"\nnatural query images, smallest t_j c_j toward their own label's anchor: median {natural.median():.2f}; "
        f"share holding margin {m:g}: {(natural >= m).float().mean():.0%}, margin 1: {(natural >= 1).float().mean():.0%}"
    )
    print(
        "\nshare of P2S protections still at the target after the server transforms the upload "
        f"(checked: {', '.join(CHECKED[1:])}; held out: {', '.join(HELD_OUT)})"
    )
    rows = [
        ("default", {}),
        (f"margin {m:g}", {"margin": m}),
        (f"margin {m:g} hinge", {"margin": m, "rnm_variant": "margin"}),
        (f"margin {m:g} literal", {"margin": m, "rnm_variant": "literal"}),
        ("robust", STRENGTHS["robust"]),
        ("robust-bpda", STRENGTHS["robust"]),  # the same with the identity's gradient through JPEG
        ("robust-former", {**STRENGTHS["robust"], "robust_checks": FORMER, "step_size": 8 / 255}),
    ]
    print(
        f"{'protection':<16} {'margin held':>11} "
        + " ".join(f"{n:>10}" for n in CHECKED + HELD_OUT)
        + f" {'PSNR dB':>8} {'s/img':>6}"
    )
    for name, changes in rows:
        attack = from_config(replace(p, method="rnm", **changes), model)
        if name == "robust-bpda":
            attack.views = replace(attack.views, jpeg_grad="identity")
        adv, _, _, seconds = run(attack, x, targets, args.batch)
        with torch.no_grad():
            held = (
                (unpack(targets) * model(adv) >= attack.margin).all(dim=1).float().mean()
                if attack.margin
                else float("nan")
            )
        shares = []
        for how in CHECKED + HELD_OUT:
            codes = model.encode(torch.stack([transform_tensor(how, a) for a in adv]))
            shares.append((hamming(codes, targets).diagonal() == 0).mean())
        print(
            f"{name:<16} {held:>11.0%} "
            + " ".join(f"{s:>10.0%}" for s in shares)
            + f" {float(psnr(adv, x).median()):>8.1f} {seconds / len(x):>6.2f}"
        )


if __name__ == "__main__":
    main()
